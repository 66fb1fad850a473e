"""The run's settings: training, data, evaluation and task, as typed, validated dataclasses."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from s3cmn.utils.fields import DATA, TASK, ConfigError, setting, settings_fields, unknown_key_error, validate_fields
from s3cmn.utils.fields import EVALUATION as EVAL
from s3cmn.utils.fields import REGULARISATION as REG
from s3cmn.utils.fields import TRAINING as TRAIN


class _Settings:
    """Validation shared by the run dataclasses."""

    def __post_init__(self) -> None:
        validate_fields(self)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in settings_fields(cls)]

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Any:
        """Build from a mapping; an unknown key is an error naming the closest valid key."""
        for key in values:
            if key not in cls.field_names():
                raise unknown_key_error(cls.__name__, key, cls.field_names())
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]


@dataclass
class TrainingConfig(_Settings):
    """How a model is trained: optimisation, precision, limits, checkpoints and logging."""

    learning_rate: float = setting(1e-4, group=TRAIN, help="peak learning rate", gt=0)
    batch_size: int = setting(32, group=TRAIN, help="sequences per optimiser micro-batch", ge=1)
    num_epochs: int = setting(
        15, group=TRAIN, help="passes over the training blocks (0 = no epoch limit: max_time, max_tokens or "
        "max_steps ends the run). A --max-time given without --num-epochs (flag, --modify or config file) sets "
        "0: a preset's epoch count applies only to runs without a time budget", ge=0,
    )
    sequence_length: int = setting(512, group=TRAIN, help="tokens per training block", ge=2)
    gradient_accumulation_steps: int = setting(1, group=TRAIN, help="micro-batches per optimiser step", ge=1)
    warmup_steps: int = setting(100, group=TRAIN, help="linear warmup steps", ge=0)
    scheduler: Literal["cosine", "linear", "constant"] = setting("cosine", group=TRAIN, help="LR schedule")
    min_lr_ratio: float = setting(0.1, group=TRAIN, help="final LR as a fraction of the peak", ge=0, le=1)
    weight_decay: float = setting(0.01, group=REG, help="AdamW weight decay (matrices only)", ge=0)
    gradient_clip: float = setting(1.0, group=REG, help="max gradient norm (0 = off)", ge=0)
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = setting(
        "auto", group=TRAIN,
        help="autocast dtype (auto: bf16 on GPUs that support it, else fp16 + GradScaler; on a CPU bf16 only "
             "where it runs natively, AVX512-BF16/AMX, else fp32; the choice and its reason are logged)",
    )
    device: Literal["auto", "cpu", "cuda"] = setting("auto", group=TRAIN, help="training device")
    seed: int = setting(42, group=TRAIN, help="random seed", ge=0)
    compile: bool = setting(False, group=TRAIN, help="torch.compile the model")
    max_steps: int = setting(
        0, group=TRAIN, help="stop after this many optimiser steps, batches skipped for a NaN loss included "
        "(0 = no limit)", ge=0,
    )
    max_time: float = setting(
        0.0, group=TRAIN, help="stop after this many seconds (0 = no limit); without --num-epochs it alone ends "
        "the run, across epochs, and the LR decays over the time", ge=0,
    )
    max_tokens: int = setting(0, group=TRAIN, help="stop after this many training tokens (0 = no limit)", ge=0)
    eval_interval: int = setting(200, group=TRAIN, help="validate every N optimiser steps", ge=1)
    eval_batches: int = setting(
        50, group=TRAIN, help="validation batches per evaluation, so validation stays a small part of a short "
        "run (0 = the whole validation set; the log says how many tokens were scored)", ge=0,
    )
    early_stopping_patience: int = setting(0, group=TRAIN, help="evaluations without improvement (0 = off)", ge=0)
    save_interval: int = setting(500, group=TRAIN, help="write the 'last' checkpoint every N steps", ge=1)
    log_interval: int = setting(10, group=TRAIN, help="log metrics every N steps", ge=1)
    output_dir: str = setting("runs/s3cmn", group=TRAIN, help="checkpoints, logs and samples go here")
    resume: bool = setting(False, group=TRAIN, help="continue from output_dir/last (a bare --resume means true)")
    overwrite: bool = setting(
        False, group=TRAIN, help="replace the checkpoints and metrics in output_dir (else such a run is refused)"
    )
    force: bool = setting(
        False, group=TRAIN, help="train even when the size estimate (parameters, gradients, AdamW state, activations) "
        "exceeds the free memory (else such a run is refused before anything is allocated)",
    )
    nan_policy: Literal["stop", "skip"] = setting("stop", group=TRAIN, help="on a NaN/inf loss: stop or skip")
    curriculum: Literal["none", "seq-length", "difficulty"] = setting(
        "none", group=TRAIN, help="curriculum: sequence-length warm-up or easiest-first difficulty ordering"
    )
    curriculum_tokens: int = setting(0, group=TRAIN, help="training tokens over which the curriculum ramps", ge=0)
    curriculum_min_length: int = setting(32, group=TRAIN, help="first sequence length of the warm-up", ge=8)
    curriculum_min_fraction: float = setting(
        0.1, group=TRAIN, help="easiest fraction of blocks available at the start (difficulty)", gt=0, le=1
    )
    curriculum_pacing: Literal["sqrt", "linear"] = setting("sqrt", group=TRAIN, help="curriculum pacing function")
    num_samples: int = setting(2, group=TRAIN, help="generated samples at each evaluation", ge=0)
    sample_length: int = setting(32, group=TRAIN, help="tokens per generated sample", ge=1)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.num_epochs and not (self.max_time or self.max_tokens or self.max_steps):
            raise ConfigError("TrainingConfig.num_epochs = 0 (no epoch limit) needs another limit: max_time, "
                              "max_tokens or max_steps > 0")


@dataclass
class DataConfig(_Settings):
    """Where text and the tokenizer come from."""

    dataset_name: str = setting("wikitext", group=DATA, help="Hugging Face dataset name")
    dataset_config: str = setting("wikitext-2-raw-v1", group=DATA, help="Hugging Face dataset config")
    data_dir: str | None = setting(None, group=DATA, help="local folder with wiki.{train,valid,test}.raw")
    train_file: str | None = setting(None, group=DATA, help="training text file (UTF-8)")
    validation_file: str | None = setting(None, group=DATA, help="validation text file (UTF-8)")
    test_file: str | None = setting(None, group=DATA, help="test text file (UTF-8)")
    tokenizer: str = setting(
        "bert-base-uncased", group=DATA, help="tokenizer name, folder, vocab file, or bpe:N / wordpiece:N"
    )
    cache_dir: str | None = setting(None, group=DATA, help="token cache folder (default ~/.cache/s3cmn)")
    corpus: Literal["text", "python-stdlib"] = setting(
        "text", group=DATA, help="text: the files / --data-dir / hub dataset above; python-stdlib: this Python's "
        "standard-library .py files, split by file into train / validation / test",
    )
    validation_source: Literal["auto", "holdout", "file"] = setting(
        "auto", group=DATA, help="what validation (best, early stopping, sweeps) scores: auto = the validation "
        "text unless it is missing, a test split or the training text, then a held-out slice of the training "
        "text; holdout = always that slice; file = the given validation text as is (warned if a test split)",
    )
    validation_holdout: float = setting(
        0.1, group=DATA, help="fraction of the training text's articles / documents / files held out for "
        "validation (the last round(fraction * count) of them)", gt=0, lt=1,
    )
    detokenize: bool = setting(
        False, group=DATA, help="apply lm-evaluation-harness's wikitext_detokenizer (' @-@ ' -> '-', ' , ' -> "
        "', ', ...) article by article to the text read (training, validation; s3cmn-eval's sliding text): "
        "train on the text that lm-eval and s3cmn-eval --protocol lm-eval score",
    )


@dataclass
class EvalConfig(_Settings):
    """How a checkpoint is evaluated."""

    split: Literal["test", "valid"] = setting("test", group=EVAL, help="WikiText-2 split to score")
    context_length: int = setting(0, group=EVAL, help="sliding-window context (0 = sequence_length)", ge=0)
    stride: int = setting(0, group=EVAL, help="sliding-window stride (0 = context_length // 2)", ge=0)
    memory: Literal["on", "off", "both"] = setting("both", group=EVAL, help="score with memory on, off, or both")
    memory_start: Literal["saved", "empty"] = setting(
        "saved", group=EVAL, help="memory at the start of each memory-on run: as saved in the checkpoint, or empty"
    )
    memory_writes: Literal["auto", "on", "off"] = setting(
        "auto", group=EVAL,
        help="whether the learned memory also stores the text it scores (every memory_write_stride-th position of "
             "each forward, after that forward): auto = off when the starting memory holds entries (measured on "
             "held-out text by benchmarks/memory_stride.py: reading the saved training entries alone gave -8.2%% "
             "token ppl, writing every 16th position -5.0%%), on when it is empty",
    )
    quantize: Literal["none", "int8"] = setting("none", group=EVAL, help="also evaluate an 8-bit model")
    backend: Literal["auto", "bnb", "torch", "torchao", "weight_only"] = setting(
        "auto", group=EVAL, help="8-bit backend (auto: torch.ao dynamic int8 on a CPU, bitsandbytes on CUDA)"
    )
    eval_batch_size: int = setting(8, group=EVAL, help="windows per forward", ge=1)
    max_eval_tokens: int = setting(0, group=EVAL, help="score only the first N tokens (0 = all)", ge=0)
    readout_max_overlap: float = setting(
        0.05, group=EVAL, ge=0.0, le=1.0,
        help="refuse a scored text sharing more than this share of its sampled 8-word sequences with a read-out's "
             "fit or datastore text (0.05 suits prose; disjoint source files share idioms: measure the baseline "
             "between disjoint files of the corpus first, and report the limit used)")
    report_dir: str | None = setting(None, group=EVAL, help="write report.json and report.md here")
    plot_dir: str | None = setting(None, group=EVAL, help="write PNG charts here")


# (state_dim, action_dim when actuated) of each simulated system
SYSTEM_DIMS: dict[str, tuple[int, int]] = {"pendulum": (2, 1), "cartpole": (4, 1)}


@dataclass
class TaskConfig(_Settings):
    """What a run learns: the task type and the vision / robotics settings (the others are ignored).

    The network is S3CMNConfig for every task (the same blocks serve all three); these fields add the
    convolutional front end of the vision task and the simulated system of the robotics task (s3cmn.tasks).
    """

    task: Literal["llm", "vision", "robotics"] = setting(
        "llm", group=TASK, help="llm: next-token language model; vision: image classification; robotics: "
        "next-state prediction of a simulated system"
    )
    # --- vision -------------------------------------------------------------------------------------
    vision_dataset: Literal["digits", "mnist", "cifar10"] = setting(
        "digits", group=TASK, help="digits: scikit-learn's bundled 8x8 digits (offline); mnist / cifar10: "
        "torchvision's, already downloaded under vision_data_root"
    )
    vision_data_root: str | None = setting(None, group=TASK, help="folder holding torchvision's MNIST / CIFAR-10")
    conv_channels: list[int] = setting(
        group=TASK, help="output channels of each conv layer", default_factory=lambda: [16, 32]
    )
    conv_kernel_sizes: list[int] = setting(
        group=TASK, help="kernel size of each conv layer", default_factory=lambda: [3, 3]
    )
    conv_strides: list[int] = setting(group=TASK, help="stride of each conv layer", default_factory=lambda: [1, 2])
    conv_padding: list[int] = setting(
        group=TASK, help="zero padding of each conv layer", default_factory=lambda: [1, 1]
    )
    spiking_conv: bool = setting(False, group=TASK, help="LIF neurons (spike rates) after each conv, not ReLU")
    conv_spike_steps: int = setting(4, group=TASK, help="LIF micro-steps per image of the spiking front end",
                                    ge=1, le=64)
    validation_fraction: float = setting(0.15, group=TASK, help="fraction of the images for validation",
                                         gt=0, lt=1)
    test_fraction: float = setting(0.15, group=TASK, help="fraction of the images held out for the test",
                                   gt=0, lt=1)
    noise_levels: list[float] = setting(
        group=TASK, help="std of the Gaussian pixel noise (pixels in [0, 1]) of the robustness curve",
        default_factory=lambda: [0.0, 0.1, 0.2, 0.3, 0.5],
    )
    # --- robotics -----------------------------------------------------------------------------------
    system: Literal["pendulum", "cartpole"] = setting(
        "pendulum", group=TASK, help="simulated system: damped pendulum or cart-pole (RK4, fixed step)"
    )
    state_dim: int = setting(2, group=TASK, help="state size of the system (pendulum 2, cart-pole 4)", ge=1)
    action_dim: int = setting(1, group=TASK, help="action size: 1 = torque / force inputs, 0 = passive", ge=0)
    horizon: int = setting(40, group=TASK, help="open-loop rollout steps scored", ge=1)
    context_steps: int = setting(10, group=TASK, help="observed steps before an open-loop rollout", ge=1)
    error_threshold: float = setting(
        0.1, group=TASK, help="state RMSE at which a rollout counts as diverged (the horizon metric)", gt=0
    )
    dt: float = setting(0.05, group=TASK, help="integration step of the simulator (seconds)", gt=0)
    damping: float = setting(0.1, group=TASK, help="viscous damping of the pendulum / cart (1/s)", ge=0)
    length: float = setting(1.0, group=TASK, help="length of the pendulum (m)", gt=0)
    unseen_length: float = setting(
        0.0, group=TASK, help="length of an unseen pendulum the test also scores, frozen and adapted on each "
        "trajectory's first context_steps (s3cmn.tasks.adapt); 0 = no such test", ge=0
    )
    unseen_damping: float = setting(0.0, group=TASK, help="damping of that unseen pendulum (1/s)", ge=0)
    action_scale: float = setting(1.0, group=TASK, help="amplitude of the random actions", ge=0)
    trajectory_length: int = setting(100, group=TASK, help="steps per simulated trajectory", ge=2)
    train_trajectories: int = setting(48, group=TASK, help="trajectories (seeds) for training", ge=1)
    validation_trajectories: int = setting(8, group=TASK, help="trajectories (seeds) for validation", ge=1)
    test_trajectories: int = setting(16, group=TASK, help="trajectories (seeds) for the test", ge=1)

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_vision()
        self._check_robotics()

    def _check_vision(self) -> None:
        lists = {name: getattr(self, name) for name in
                 ("conv_channels", "conv_kernel_sizes", "conv_strides", "conv_padding")}
        lengths = {name: len(values) for name, values in lists.items()}
        if len(set(lengths.values())) != 1:
            raise ConfigError(f"TaskConfig: the conv lists must have one entry per conv layer, got lengths "
                              f"{lengths}; give each the same number of values")
        if not lists["conv_channels"]:
            raise ConfigError("TaskConfig.conv_channels is empty: the vision front end needs at least one conv layer")
        for name, values in lists.items():
            low = 0 if name == "conv_padding" else 1
            bad = [v for v in values if v < low]
            if bad:
                raise ConfigError(f"TaskConfig.{name} = {values} is not allowed: every value must be >= {low}")
        if self.validation_fraction + self.test_fraction >= 1:
            raise ConfigError(f"TaskConfig: validation_fraction + test_fraction = "
                              f"{self.validation_fraction + self.test_fraction} leaves no training images; "
                              "keep their sum below 1")
        if any(level < 0 for level in self.noise_levels):
            raise ConfigError(f"TaskConfig.noise_levels = {self.noise_levels}: a noise std must be >= 0")

    def _check_robotics(self) -> None:
        states, actions = SYSTEM_DIMS[self.system]
        if self.state_dim != states:
            raise ConfigError(f"TaskConfig.state_dim = {self.state_dim} does not match system = {self.system!r}, "
                              f"whose state has {states} values; set state_dim = {states}")
        if self.action_dim not in (0, actions):
            raise ConfigError(f"TaskConfig.action_dim = {self.action_dim} does not match system = "
                              f"{self.system!r}: use {actions} (actuated) or 0 (passive)")
        if self.unseen_length > 0 and self.system != "pendulum":
            raise ConfigError(f"TaskConfig.unseen_length = {self.unseen_length}: the unseen-system adaptation test "
                              f"is for system = 'pendulum', not {self.system!r}; set unseen_length = 0")
        if self.context_steps + self.horizon > self.trajectory_length:
            raise ConfigError(f"TaskConfig: context_steps + horizon = {self.context_steps + self.horizon} is "
                              f"longer than trajectory_length = {self.trajectory_length}; shorten the rollout "
                              "or lengthen the trajectories")

"""The run's settings: training, data and evaluation, as typed, validated dataclasses."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from s3cmn.utils.fields import DATA, setting, settings_fields, unknown_key_error, validate_fields
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
    num_epochs: int = setting(15, group=TRAIN, help="passes over the training blocks", ge=1)
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
    max_time: float = setting(0.0, group=TRAIN, help="stop after this many seconds (0 = no limit)", ge=0)
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
    quantize: Literal["none", "int8"] = setting("none", group=EVAL, help="also evaluate an 8-bit model")
    backend: Literal["auto", "bnb", "torch", "torchao"] = setting(
        "auto", group=EVAL, help="8-bit backend (auto: torch.ao dynamic int8 on a CPU, bitsandbytes on CUDA)"
    )
    eval_batch_size: int = setting(8, group=EVAL, help="windows per forward", ge=1)
    max_eval_tokens: int = setting(0, group=EVAL, help="score only the first N tokens (0 = all)", ge=0)
    report_dir: str | None = setting(None, group=EVAL, help="write report.json and report.md here")
    plot_dir: str | None = setting(None, group=EVAL, help="write PNG charts here")

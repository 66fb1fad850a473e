"""TaskConfig: which task a run trains (language model, image classification, trajectory prediction) and the
task's own settings, plus the per-task presets.

The network itself is configured by :class:`s3cmn.config.S3CMNConfig` for every task (the same blocks serve
all three); :class:`TaskConfig` adds what only a task needs: the convolutional front end of the vision task
and the simulated system of the robotics task. Every field is checked once, at construction, with an error
that names the field, the value and what is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from s3cmn.run_config import _Settings
from s3cmn.utils.fields import ConfigError, setting, unknown_key_error

__all__ = ["TASK", "TaskConfig", "TASK_PRESETS", "SYSTEM_DIMS", "task_preset"]

TASK = "data"  # the "task" group once s3cmn.utils.fields.GROUPS has it

# (state_dim, action_dim when actuated) of each simulated system
SYSTEM_DIMS: dict[str, tuple[int, int]] = {"pendulum": (2, 1), "cartpole": (4, 1)}


@dataclass
class TaskConfig(_Settings):
    """What a run learns: the task type and the vision / robotics settings (the others are ignored)."""

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
        if self.context_steps + self.horizon > self.trajectory_length:
            raise ConfigError(f"TaskConfig: context_steps + horizon = {self.context_steps + self.horizon} is "
                              f"longer than trajectory_length = {self.trajectory_length}; shorten the rollout "
                              "or lengthen the trajectories")


def task_preset(name: str) -> dict[str, dict[str, Any]]:
    """The sections (model, training, task) a task preset sets, copied."""
    if name not in TASK_PRESETS:
        raise unknown_key_error("task preset", name, TASK_PRESETS)
    return {section: dict(values) for section, values in TASK_PRESETS[name].items()}


# The backbone of the task presets: small enough to train on two CPU cores in minutes, memory off.
_SMALL_MODEL = dict(
    vocab_size=2, embedding_dim=64, hidden_dim=64, num_layers=2, num_attention_heads=4, spiking_units=64,
    liquid_units=64, hyena_filter_dim=16, hyena_filter_length=64, mamba_d_state=8, cross_attention_heads=4,
    use_memory=False, dropout=0.0, embedding_dropout=0.0,
)

_VISION_DIGITS_TRAINING = dict(learning_rate=3e-3, batch_size=64, num_epochs=10, warmup_steps=20, weight_decay=0.01,
                               seed=0)
_ROBOTICS_TRAINING = dict(learning_rate=3e-3, batch_size=16, num_epochs=15, sequence_length=40, warmup_steps=20,
                          seed=0)
_DIGITS_CONV = dict(vision_dataset="digits", conv_channels=[16, 32], conv_kernel_sizes=[3, 3], conv_strides=[1, 2],
                    conv_padding=[1, 1])

TASK_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "vision-digits": {
        "model": dict(_SMALL_MODEL),
        "training": dict(_VISION_DIGITS_TRAINING, output_dir="runs/vision-digits"),
        "task": dict(_DIGITS_CONV, task="vision"),
    },
    "vision-digits-spiking": {
        "model": dict(_SMALL_MODEL, use_population_coding=True),
        "training": dict(_VISION_DIGITS_TRAINING, output_dir="runs/vision-digits-spiking"),
        "task": dict(_DIGITS_CONV, task="vision", spiking_conv=True),
    },
    "vision-mnist": {  # the seeds' conv settings, for torchvision's MNIST (28x28 -> 7x7 positions)
        "model": dict(_SMALL_MODEL),
        "training": dict(learning_rate=2e-3, batch_size=128, num_epochs=3, warmup_steps=100, seed=0,
                         output_dir="runs/vision-mnist"),
        "task": dict(task="vision", vision_dataset="mnist", conv_channels=[32, 64, 128],
                     conv_kernel_sizes=[3, 3, 3], conv_strides=[1, 2, 2], conv_padding=[1, 1, 1]),
    },
    "robotics-pendulum": {
        "model": dict(_SMALL_MODEL),
        "training": dict(_ROBOTICS_TRAINING, output_dir="runs/robotics-pendulum"),
        "task": dict(task="robotics", system="pendulum", state_dim=2, action_dim=1, horizon=40),
    },
    "robotics-cartpole": {
        "model": dict(_SMALL_MODEL),
        "training": dict(_ROBOTICS_TRAINING, output_dir="runs/robotics-cartpole"),
        "task": dict(task="robotics", system="cartpole", state_dim=4, action_dim=1, horizon=40, dt=0.02),
    },
}

"""The task presets: the model, training and task settings of each vision / robotics preset.

The task settings themselves are :class:`s3cmn.run_config.TaskConfig` (re-exported here): which task a run
trains (language model, image classification, trajectory prediction), the convolutional front end of the
vision task and the simulated system of the robotics task.
"""

from __future__ import annotations

from typing import Any

from s3cmn.run_config import SYSTEM_DIMS, TaskConfig
from s3cmn.utils.fields import unknown_key_error

__all__ = ["TaskConfig", "TASK_PRESETS", "SYSTEM_DIMS", "task_preset"]


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
    "robotics-pendulum-unseen": {  # trained on the 1 m pendulum; also scored on a 1.5 m, more damped one
        "model": dict(_SMALL_MODEL),
        "training": dict(_ROBOTICS_TRAINING, output_dir="runs/robotics-pendulum-unseen"),
        "task": dict(task="robotics", system="pendulum", state_dim=2, action_dim=1, horizon=40, unseen_length=1.5,
                     unseen_damping=0.3),
    },
    "robotics-cartpole": {
        "model": dict(_SMALL_MODEL),
        "training": dict(_ROBOTICS_TRAINING, output_dir="runs/robotics-cartpole"),
        "task": dict(task="robotics", system="cartpole", state_dim=4, action_dim=1, horizon=40, dt=0.02),
    },
}

"""TaskConfig: the vision and robotics fields are typed and validated once, with one-line errors."""

from __future__ import annotations

import pytest

from s3cmn.model_config import S3CMNConfig
from s3cmn.run_config import TrainingConfig
from s3cmn.tasks.config import TASK_PRESETS, TaskConfig, task_preset
from s3cmn.utils.fields import ConfigError


def test_defaults_are_the_language_model() -> None:
    assert TaskConfig().task == "llm"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (dict(conv_channels=[8, 16, 32]), "one entry per conv layer"),
        (dict(conv_channels=[8, 0]), "conv_channels = [8, 0] is not allowed: every value must be >= 1"),
        (dict(conv_kernel_sizes=[3, -1]), "conv_kernel_sizes"),
        (dict(conv_strides=[0, 2]), "conv_strides"),
        (dict(conv_padding=[1, -1]), "conv_padding = [1, -1] is not allowed: every value must be >= 0"),
        (dict(conv_channels=[], conv_kernel_sizes=[], conv_strides=[], conv_padding=[]), "at least one conv"),
        (dict(conv_channels=[8, 1.5]), "expected a list of int"),
        (dict(conv_channels="32,64"), "expected a list of int"),
        (dict(task="audio"), "expected one of 'llm', 'vision', 'robotics'"),
        (dict(validation_fraction=0.5, test_fraction=0.5), "leaves no training images"),
        (dict(noise_levels=[0.1, -0.2]), "noise std must be >= 0"),
        (dict(state_dim=3), "does not match system = 'pendulum'"),
        (dict(system="cartpole"), "set state_dim = 4"),
        (dict(action_dim=2), "use 1 (actuated) or 0 (passive)"),
        (dict(horizon=95, context_steps=10), "longer than trajectory_length = 100"),
        (dict(horizon=0), "must be >= 1"),
    ],
)
def test_bad_values_are_refused_with_the_field_named(changes: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")
                       .replace(")", r"\)")) as info:
        TaskConfig(**changes)
    assert "\n" not in str(info.value)


def test_padding_zero_and_tuples_are_accepted() -> None:
    task = TaskConfig(conv_channels=(8,), conv_kernel_sizes=(3,), conv_strides=(1,), conv_padding=(0,))
    assert task.conv_padding == [0] and task.conv_channels == [8]


def test_unknown_key_names_the_closest() -> None:
    with pytest.raises(ConfigError, match="did you mean 'conv_strides'"):
        TaskConfig.from_dict({"conv_stride": [1, 2]})


def test_passive_system_and_cartpole() -> None:
    assert TaskConfig(action_dim=0).action_dim == 0
    assert TaskConfig(system="cartpole", state_dim=4).state_dim == 4


@pytest.mark.parametrize("name", sorted(TASK_PRESETS))
def test_every_task_preset_builds(name: str) -> None:
    preset = task_preset(name)
    task = TaskConfig(**preset["task"])
    assert task.task in ("vision", "robotics") and name.startswith(task.task)
    assert not S3CMNConfig(**preset["model"]).use_memory
    TrainingConfig(**preset["training"])


def test_unknown_preset() -> None:
    with pytest.raises(ConfigError, match="did you mean 'vision-digits'"):
        task_preset("vision-digit")

"""Tiny task settings shared by the task tests (fast on one CPU thread)."""

from __future__ import annotations

import pytest

from s3cmn.model_config import S3CMNConfig
from s3cmn.tasks.config import TaskConfig

TINY_MODEL = dict(
    vocab_size=2, embedding_dim=16, hidden_dim=16, num_layers=2, num_attention_heads=2, spiking_units=16,
    liquid_units=16, hyena_filter_dim=8, hyena_filter_length=32, mamba_d_state=4, cross_attention_heads=2,
    use_memory=False, dropout=0.0, embedding_dropout=0.0,
)


def tiny_config(**changes: object) -> S3CMNConfig:
    return S3CMNConfig(**{**TINY_MODEL, **changes})


@pytest.fixture
def vision_task() -> TaskConfig:
    return TaskConfig(task="vision", conv_channels=[4, 8], conv_kernel_sizes=[3, 3], conv_strides=[1, 2],
                      conv_padding=[1, 1], noise_levels=[0.0, 0.3])


@pytest.fixture
def pendulum_task() -> TaskConfig:
    return TaskConfig(task="robotics", system="pendulum", state_dim=2, action_dim=1, trajectory_length=30,
                      context_steps=5, horizon=20, train_trajectories=6, validation_trajectories=2,
                      test_trajectories=3)

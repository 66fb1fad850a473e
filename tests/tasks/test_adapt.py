"""Test-time adaptation to an unseen pendulum: the adaptation sees only the observed steps, zero steps is the
frozen model, the step is chosen on validation trajectories, the length changes the physics, bad settings."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from s3cmn.run_config import TaskConfig
from s3cmn.tasks.adapt import (
    LOSSES,
    LRS,
    STEPS,
    SUBSETS,
    adapt,
    adapted_rollout,
    observed_rollout_loss,
    unseen_report,
    unseen_splits,
    unseen_task,
)
from s3cmn.tasks.baselines import GRUBaseline
from s3cmn.tasks.metrics import rollout
from s3cmn.tasks.models import DynamicsS3CMN
from s3cmn.tasks.robotics_sim import pendulum_dynamics, rk4_step, trajectory_splits
from s3cmn.utils.fields import ConfigError

from .conftest import tiny_config


@pytest.fixture
def unseen(pendulum_task: TaskConfig) -> TaskConfig:
    return dataclasses.replace(pendulum_task, unseen_length=2.0, unseen_damping=0.4)


def _trained_models(task: TaskConfig) -> list[torch.nn.Module]:
    data = trajectory_splits(task, 0).train
    models = [DynamicsS3CMN(tiny_config(), task), GRUBaseline(task, width=16)]
    for model in models:
        model.fit_normalisation(data.states, data.actions)
    return [m.eval() for m in models]


@pytest.mark.parametrize("which", [0, 1])
@pytest.mark.parametrize("loss", LOSSES)
def test_the_adaptation_sees_only_the_observed_steps(unseen: TaskConfig, which: int, loss: str) -> None:
    model = _trained_models(unseen)[which]
    data = unseen_splits(unseen, 0).test
    states, actions = data.states[:1].clone(), data.actions[:1].clone()
    changed_s, changed_a = states.clone(), actions.clone()
    c = unseen.context_steps
    changed_s[:, c:] += 1.0  # everything the rollout predicts
    changed_a[:, c:] -= 1.0
    a = adapt(model, states, actions, c, 1e-2, 5, loss=loss).state_dict()
    b = adapt(model, changed_s, changed_a, c, 1e-2, 5, loss=loss).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], v) for k, v in model.state_dict().items())  # it did adapt
    before = {k: v.clone() for k, v in model.state_dict().items()}
    adapt(model, states, actions, c, 1e-2, 5)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the model itself is untouched


def test_the_head_subset_adapts_the_output_layer_alone(unseen: TaskConfig) -> None:
    for model in _trained_models(unseen):
        data = unseen_splits(unseen, 0).test
        adapted = adapt(model, data.states[:1], data.actions[:1], unseen.context_steps, 1e-2, 5, "head").state_dict()
        moved = {k for k, v in model.state_dict().items() if not torch.equal(v, adapted[k])}
        assert moved and all(k.startswith("head.") for k in moved), moved
    with pytest.raises(ValueError, match="subset"):
        adapt(model, data.states[:1], data.actions[:1], unseen.context_steps, 1e-2, 5, "gru")


def test_zero_steps_is_the_frozen_rollout(unseen: TaskConfig) -> None:
    model = _trained_models(unseen)[0]
    data = unseen_splits(unseen, 0).test
    c, h = unseen.context_steps, unseen.horizon
    frozen = rollout(model, data.states, data.actions, c, h)
    # one trajectory at a time against the batch of three: equal to rounding
    torch.testing.assert_close(adapted_rollout(model, data, c, h, 1e-3, 0), frozen, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("which", [0, 1])
def test_the_rollout_loss_is_the_scored_rollout_inside_the_observed_steps(unseen: TaskConfig, which: int) -> None:
    model = _trained_models(unseen)[which]
    data = unseen_splits(unseen, 0).test
    c, warm = unseen.context_steps, unseen.context_steps // 2
    predicted = rollout(model, data.states, data.actions, warm, c - warm)  # the metric's rollout, step() by step()
    expected = ((predicted - data.states[:, warm:c]) / model.delta_std).pow(2).mean()
    with torch.enable_grad():
        value = observed_rollout_loss(model, data.states, data.actions, c)
        value.backward()
    torch.testing.assert_close(value.detach(), expected, atol=1e-6, rtol=1e-5)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.head.parameters())
    with torch.no_grad():  # and it adapts: the observed rollout's error falls
        after = observed_rollout_loss(adapt(model, data.states[:1], data.actions[:1], c, 3e-3, 20, loss="rollout"),
                                      data.states[:1], data.actions[:1], c)
        assert float(after) < 0.5 * float(observed_rollout_loss(model, data.states[:1], data.actions[:1], c))
    with pytest.raises(ValueError, match="loss"):
        adapt(model, data.states[:1], data.actions[:1], c, 1e-3, 1, loss="two_step")


def test_adapting_lowers_the_loss_on_the_observed_steps(unseen: TaskConfig) -> None:
    model = _trained_models(unseen)[0]
    data = unseen_splits(unseen, 0).test
    c = unseen.context_steps
    observed = data.states[:1, :c], data.actions[:1, :c]
    with torch.no_grad():
        before = float(model.next_state_loss(*observed))
        after = float(adapt(model, data.states[:1], data.actions[:1], c, 3e-3, 20).next_state_loss(*observed))
    assert after < 0.5 * before


def test_the_report_chooses_on_validation_and_scores_the_test_once(unseen: TaskConfig,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import s3cmn.tasks.adapt as module

    assert len(LRS) >= 5 and len(STEPS) >= 3 and set(LOSSES) == {"one_step", "rollout"}  # the grid in use
    monkeypatch.setattr(module, "LRS", (1e-3, 1e-2))  # a smaller grid of the same shape: the rule is under test
    monkeypatch.setattr(module, "STEPS", (5,))
    model = _trained_models(unseen)[1]
    report = unseen_report(model, unseen, 0)
    assert len(report["grid"]) == len(LOSSES) * len(SUBSETS) * 2 * 1
    best = min(report["grid"], key=lambda g: g["validation_rollout_rmse"])
    assert report["chosen"] == {k: best[k] for k in ("loss", "subset", "lr", "steps")}
    splits = unseen_splits(unseen, 0)
    c, h = unseen.context_steps, unseen.horizon
    expected = adapted_rollout(model, splits.test, c, h, best["lr"], best["steps"], best["subset"], best["loss"])
    truth = splits.test.states[:, c : c + h]
    rmse = float((expected - truth).pow(2).mean(dim=(0, 2)).sqrt().mean())
    assert report["adapted"]["rollout_rmse"] == pytest.approx(rmse, rel=1e-6)
    assert report["system"] == {"length": 2.0, "damping": 0.4}
    train = set(trajectory_splits(unseen, 0).train.seeds)  # the unseen pendulum's seeds are its own
    assert not train & (set(splits.valid.seeds) | set(splits.test.seeds))


def test_the_length_sets_the_period() -> None:
    for length in (1.0, 4.0):
        f, s, dt = pendulum_dynamics(0.0, length), np.array([0.01, 0.0]), 0.005
        period = 2 * math.pi * math.sqrt(length / 9.81)
        for _ in range(round(period / dt)):
            s = rk4_step(f, s, np.zeros(1), dt)
        assert abs(s[0] - 0.01) < 2e-4, length
    task = TaskConfig(unseen_length=3.0, unseen_damping=0.2)
    assert (unseen_task(task).length, unseen_task(task).damping, unseen_task(task).unseen_length) == (3.0, 0.2, 0.0)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ConfigError, match="unseen_length"):
        TaskConfig(system="cartpole", state_dim=4, unseen_length=2.0)
    with pytest.raises(ConfigError, match="length"):
        TaskConfig(length=0.0)
    with pytest.raises(ValueError, match="unseen_length > 0"):
        unseen_task(TaskConfig())

"""The robotics task: RK4 simulation, seeded trajectory splits, next-state models, step == forward, rollouts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from s3cmn.tasks.baselines import GRUBaseline
from s3cmn.tasks.config import TaskConfig
from s3cmn.tasks.metrics import rollout, rollout_report
from s3cmn.tasks.models import DynamicsS3CMN
from s3cmn.tasks.robotics_sim import rk4_step, simulate, trajectory_splits

from .conftest import tiny_config


def test_rk4_matches_the_harmonic_oscillator() -> None:
    def f(s: np.ndarray, u: np.ndarray) -> np.ndarray:  # x'' = -x: x(t) = cos t from (1, 0)
        return np.array([s[1], -s[0]])

    s, dt = np.array([1.0, 0.0]), 0.01
    for _ in range(100):
        s = rk4_step(f, s, np.zeros(1), dt)
    assert abs(s[0] - math.cos(1.0)) < 1e-9 and abs(s[1] + math.sin(1.0)) < 1e-9  # RK4: error O(dt^4)


def test_small_undamped_pendulum_swings_at_its_natural_period() -> None:
    task = TaskConfig(damping=0.0, action_dim=0, dt=0.01, trajectory_length=2, horizon=1, context_steps=1)
    from s3cmn.tasks.robotics_sim import pendulum_dynamics

    f, s = pendulum_dynamics(task.damping), np.array([0.01, 0.0])
    period = 2 * math.pi / math.sqrt(9.81)
    for _ in range(round(period / task.dt)):
        s = rk4_step(f, s, np.zeros(1), task.dt)
    assert abs(s[0] - 0.01) < 2e-4  # back where it started after one period


@pytest.mark.parametrize("system", ["pendulum", "cartpole"])
def test_simulation_is_deterministic_given_the_seed(system: str) -> None:
    task = TaskConfig(system=system, state_dim=2 if system == "pendulum" else 4, trajectory_length=40,
                      horizon=20, context_steps=5)
    (s1, a1), (s2, a2), (s3, _) = simulate(task, 7), simulate(task, 7), simulate(task, 8)
    assert np.array_equal(s1, s2) and np.array_equal(a1, a2) and not np.array_equal(s1, s3)
    assert s1.shape == (40, task.state_dim) and a1.shape == (40, 1) and np.isfinite(s1).all()


def test_damping_and_passive_system(pendulum_task: TaskConfig) -> None:
    passive = TaskConfig(**{**pendulum_task.to_dict(), "action_dim": 0, "damping": 1.0, "trajectory_length": 200})
    states, actions = simulate(passive, 0)
    assert actions.shape == (200, 0)
    energy = 0.5 * states[:, 1] ** 2 + 9.81 * (1 - np.cos(states[:, 0]))
    assert energy[-1] < 0.05 * energy[0]  # damped, no inputs: the swing dies down


def test_splits_use_disjoint_seeds(pendulum_task: TaskConfig) -> None:
    splits = trajectory_splits(pendulum_task, seed=3)
    seeds = [set(getattr(splits, name).seeds) for name in ("train", "valid", "test")]
    assert [len(s) for s in seeds] == [6, 2, 3]
    assert not (seeds[0] & seeds[1] or seeds[0] & seeds[2] or seeds[1] & seeds[2])
    assert torch.equal(trajectory_splits(pendulum_task, seed=3).test.states, splits.test.states)
    assert splits.train.states.shape == (6, 30, 2) and splits.train.actions.shape == (6, 30, 1)


def _models(task: TaskConfig, variants: bool = False) -> list[torch.nn.Module]:
    data = trajectory_splits(task, 0).train
    models = [DynamicsS3CMN(tiny_config(), task), DynamicsS3CMN(tiny_config(use_liquid=True), task),
              GRUBaseline(task, width=16)]
    if variants:  # the ablation switches of benchmarks/tasks.py
        models += [DynamicsS3CMN(tiny_config(use_population_coding=True), task),
                   DynamicsS3CMN(tiny_config(use_liquid=True, use_cross_modal_attention=True), task)]
    for model in models:
        model.fit_normalisation(data.states, data.actions)
    return [m.eval() for m in models]


def test_step_by_step_equals_the_full_forward(pendulum_task: TaskConfig) -> None:
    data = trajectory_splits(pendulum_task, 0).test
    states, actions = data.states[:, :12], data.actions[:, :12]
    for model in _models(pendulum_task, variants=True):
        with torch.no_grad():
            full = model(states, actions).next_states  # (B, T, S)
            cache, stepped = None, []
            for t in range(states.shape[1]):
                out = model.step(states[:, t], actions[:, t], cache)
                cache = out.cache
                stepped.append(out.next_states)
        torch.testing.assert_close(torch.stack(stepped, dim=1), full, rtol=1e-5, atol=1e-5)


def test_rollout_with_step_equals_the_forward_over_its_own_predictions(pendulum_task: TaskConfig) -> None:
    data = trajectory_splits(pendulum_task, 0).test
    context, horizon = pendulum_task.context_steps, pendulum_task.horizon
    for model in _models(pendulum_task):
        predicted = rollout(model, data.states, data.actions, context, horizon)  # (B, H, S)
        assert predicted.shape == (3, horizon, 2)
        # the inputs the rollout fed itself: the observed context, then its own predictions
        inputs = torch.cat([data.states[:, :context], predicted[:, :-1]], dim=1)  # (B, context + H - 1, S)
        with torch.no_grad():
            full = model(inputs, data.actions[:, : context + horizon - 1]).next_states
        torch.testing.assert_close(full[:, context - 1 :], predicted, rtol=1e-5, atol=1e-5)


def test_rollout_report_and_valid_horizon(pendulum_task: TaskConfig) -> None:
    model = _models(pendulum_task)[2]
    data = trajectory_splits(pendulum_task, 0).test
    report = rollout_report(model, data, pendulum_task.context_steps, pendulum_task.horizon, threshold=1e-9)
    assert report["valid_horizon"] == 0  # an untrained model is off at once
    curve = report["rollout_rmse_by_step"]
    assert len(curve) == pendulum_task.horizon and report["rollout_rmse"] == pytest.approx(np.mean(curve))
    loose = rollout_report(model, data, pendulum_task.context_steps, pendulum_task.horizon, threshold=1e9)
    assert loose["valid_horizon"] == pendulum_task.horizon


@pytest.mark.parametrize("which", [0, 2])
def test_one_batch_overfit(pendulum_task: TaskConfig, which: int) -> None:
    torch.manual_seed(0)
    data = trajectory_splits(pendulum_task, 0).train
    model = _models(pendulum_task)[which].train()
    states, actions = data.states[:4, :16], data.actions[:4, :16]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(80):
        pred = model(states[:, :-1], actions[:, :-1]).next_states
        loss = ((pred - states[:, 1:]) / model.delta_std).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.02 * losses[0], (losses[0], losses[-1])

"""Simulated systems for the robotics task, integrated with fixed-step RK4 and deterministic given a seed.

Damped pendulum (length ℓ, unit mass, g = 9.81), state s = (θ, ω), torque u::

    dθ/dt = ω,    dω/dt = −(g / ℓ) sin θ − b ω + u

Cart-pole (the classic-control equations of Barto, Sutton & Anderson 1983, as in gymnasium's ``CartPole``),
state s = (x, ẋ, θ, θ̇), θ = 0 upright, force F = 10 u, plus viscous damping b on the cart.

One trajectory is one seed: the seed draws the initial state and the actions (piecewise constant, a new
uniform value in ±``action_scale`` every ``ACTION_HOLD`` steps; zero when ``action_dim`` is 0). The train /
validation / test trajectories use disjoint seeds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from s3cmn.tasks.config import TaskConfig

__all__ = ["Trajectories", "TrajectorySplits", "rk4_step", "simulate", "trajectory_splits"]

GRAVITY = 9.81
ACTION_HOLD = 10  # steps an action is held
SEED_STRIDE = 1_000_003  # the seeds of one run's trajectories: seed * SEED_STRIDE + index (prime: no overlaps)

Dynamics = Callable[[np.ndarray, np.ndarray], np.ndarray]


def pendulum_dynamics(damping: float, length: float = 1.0) -> Dynamics:
    """ds/dt of the damped pendulum of ``length`` for state (θ, ω) and torque (u,)."""

    def f(s: np.ndarray, u: np.ndarray) -> np.ndarray:
        return np.array([s[1], -GRAVITY / length * math.sin(s[0]) - damping * s[1] + u[0]])

    return f


def cartpole_dynamics(damping: float, cart_mass: float = 1.0, pole_mass: float = 0.1,
                      half_length: float = 0.5, force_scale: float = 10.0) -> Dynamics:
    """ds/dt of the cart-pole for state (x, ẋ, θ, θ̇) and action (u,), force = force_scale · u."""
    total = cart_mass + pole_mass

    def f(s: np.ndarray, u: np.ndarray) -> np.ndarray:
        _, x_dot, theta, theta_dot = s
        cos, sin = math.cos(theta), math.sin(theta)
        temp = (force_scale * u[0] - damping * x_dot + pole_mass * half_length * theta_dot**2 * sin) / total
        theta_acc = (GRAVITY * sin - cos * temp) / (half_length * (4.0 / 3.0 - pole_mass * cos**2 / total))
        x_acc = temp - pole_mass * half_length * theta_acc * cos / total
        return np.array([x_dot, x_acc, theta_dot, theta_acc])

    return f


def rk4_step(f: Dynamics, s: np.ndarray, u: np.ndarray, dt: float) -> np.ndarray:
    """One classical Runge-Kutta step of ds/dt = f(s, u), u held constant over the step."""
    k1 = f(s, u)
    k2 = f(s + 0.5 * dt * k1, u)
    k3 = f(s + 0.5 * dt * k2, u)
    k4 = f(s + dt * k3, u)
    return s + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)


def _initial_state(system: str, rng: np.random.Generator) -> np.ndarray:
    if system == "pendulum":
        return np.array([rng.uniform(-2.0, 2.0), rng.uniform(-1.0, 1.0)])
    return np.array([rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5), rng.uniform(-0.3, 0.3), rng.uniform(-0.5, 0.5)])


def simulate(task: TaskConfig, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One trajectory: states (L, S) and the actions (L, A) applied after each state (A may be 0)."""
    rng = np.random.default_rng(seed)
    f = pendulum_dynamics(task.damping, task.length) if task.system == "pendulum" else cartpole_dynamics(task.damping)
    L, A = task.trajectory_length, task.action_dim
    held = rng.uniform(-task.action_scale, task.action_scale, size=(-(-L // ACTION_HOLD), max(A, 1)))
    actions = np.repeat(held, ACTION_HOLD, axis=0)[:L, :A]  # (L, A)
    u_zero = np.zeros(1)
    states = np.empty((L, task.state_dim))
    states[0] = _initial_state(task.system, rng)
    for t in range(L - 1):
        states[t + 1] = rk4_step(f, states[t], actions[t] if A else u_zero, task.dt)
    return states, actions


@dataclass
class Trajectories:
    """States (n, L, S) and actions (n, L, A), float32; ``seeds`` the seed of each trajectory."""

    states: Tensor
    actions: Tensor
    seeds: list[int]


@dataclass
class TrajectorySplits:
    train: Trajectories
    valid: Trajectories
    test: Trajectories


def _trajectories(task: TaskConfig, seeds: list[int]) -> Trajectories:
    runs = [simulate(task, s) for s in seeds]
    states = torch.tensor(np.stack([r[0] for r in runs]), dtype=torch.float32)
    actions = torch.tensor(np.stack([r[1] for r in runs]), dtype=torch.float32)
    return Trajectories(states, actions, seeds)


def trajectory_splits(task: TaskConfig, seed: int) -> TrajectorySplits:
    """Train / validation / test trajectories of ``task.system`` with disjoint, consecutive seeds."""
    sizes = (task.train_trajectories, task.validation_trajectories, task.test_trajectories)
    start = seed * SEED_STRIDE
    bounds = np.cumsum((0, *sizes))
    seeds = [list(range(start + int(a), start + int(b))) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    return TrajectorySplits(*(_trajectories(task, s) for s in seeds))

"""Test-time adaptation of a next-state model to a system it was not trained on: the robotics side of dynamic
evaluation (:mod:`s3cmn.nexttoken.dynamic`).

A model trained on one pendulum is scored on a pendulum of another length and damping (``TaskConfig``'s
``unseen_length`` / ``unseen_damping``), twice per trajectory:

- **frozen**: the open-loop rollout of :func:`s3cmn.tasks.metrics.rollout` (observe ``context_steps``, then
  feed each prediction back);
- **adapted**: first a copy of the model takes ``steps`` Adam steps at rate ``lr`` on a loss over that
  trajectory's observed ``context_steps`` states, on all its weights or on its output layer (``head``) alone
  (``subset``), then the same rollout. The states from ``context_steps`` on, which the rollout predicts, are
  never seen. The loss (``loss``) is either
  - ``one_step``: the next-state loss of the observed transitions (0 -> 1 ... context-2 -> context-1), or
  - ``rollout``: the open-loop error inside the observed steps: observe the first half of them, feed each
    prediction back up to the last observed step (the rollout the test scores, in miniature), the squared
    error in units of the state change's std. A model whose error grows through its own feedback more than
    through one step learns from this what the one-step loss does not show.

``loss``, ``subset``, ``lr`` and ``steps`` are chosen per model on the unseen pendulum's *validation*
trajectories (their own seeds) from :data:`LOSSES` x :data:`SUBSETS` x :data:`LRS` x :data:`STEPS`, the lowest
mean rollout RMSE; the test trajectories are scored once. The same grid and rule serve every model (S3CMN and
the GRU baseline), so both get the same tuning.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any

import torch
from torch import nn

from s3cmn.tasks.config import TaskConfig
from s3cmn.tasks.metrics import rollout, rollout_errors, rollout_report
from s3cmn.tasks.robotics_sim import Trajectories, trajectory_splits

__all__ = ["LOSSES", "LRS", "STEPS", "SUBSETS", "adapted_rollout", "observed_rollout_loss", "unseen_report",
           "unseen_splits", "unseen_task"]

LOSSES = ("one_step", "rollout")
SUBSETS = ("all", "head")
LRS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
STEPS = (5, 20, 50)
UNSEEN_SEED_OFFSET = 7919  # the unseen pendulum's trajectories use other seeds than the training system's


def unseen_task(task: TaskConfig) -> TaskConfig:
    """The task of the unseen pendulum: its length and damping, everything else as trained."""
    if task.unseen_length <= 0:
        raise ValueError("the task sets no unseen pendulum: give unseen_length > 0 (and unseen_damping)")
    return dataclasses.replace(task, length=task.unseen_length, damping=task.unseen_damping, unseen_length=0.0)


def unseen_splits(task: TaskConfig, seed: int) -> Any:
    """Validation and test trajectories of the unseen pendulum (seeds disjoint from the training system's)."""
    return trajectory_splits(unseen_task(task), seed + UNSEEN_SEED_OFFSET)


def observed_rollout_loss(model: nn.Module, states: torch.Tensor, actions: torch.Tensor, context: int) -> torch.Tensor:
    """The ``rollout`` adaptation loss: observe ``states[:, :context // 2]``, then feed each prediction back
    (``forward`` one step at a time, differentiable) up to time ``context - 1``; the mean squared error of those
    predictions against ``states[:, context // 2 : context]``, in units of the state change's std. Reads
    nothing from time ``context`` on: :func:`s3cmn.tasks.metrics.rollout` over that span, differentiable."""
    warm = max(1, context // 2)
    predicted = rollout(model, states[:, :context], actions[:, :context], warm, context - warm, differentiable=True)
    error = (predicted - states[:, warm:context]) / model.delta_std  # (B, context - warm, S)
    return error.pow(2).mean()


def adapt(model: nn.Module, states: torch.Tensor, actions: torch.Tensor, context: int, lr: float, steps: int,
          subset: str = "all", loss: str = "one_step") -> nn.Module:  # fmt: skip
    """A copy of ``model`` after ``steps`` Adam steps on ``loss`` (the module docstring's) over
    ``states[:, :context]`` (B, context, S) with ``actions[:, :context]``, of all its weights or of
    ``model.head``'s; ``model`` is unchanged."""
    if subset not in SUBSETS:
        raise ValueError(f"adaptation subset {subset!r} is not one of {SUBSETS}")
    if loss not in LOSSES:
        raise ValueError(f"adaptation loss {loss!r} is not one of {LOSSES}")
    adapted = copy.deepcopy(model)
    if steps == 0 or lr == 0:
        return adapted.eval()
    optimizer = torch.optim.Adam((adapted if subset == "all" else adapted.head).parameters(), lr=lr)
    adapted.eval()  # gradients in eval mode, as dynamic evaluation: no buffer (a LIF threshold) moves by a forward
    observed = states[:, :context], actions[:, :context]
    with torch.enable_grad():
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            value = (adapted.next_state_loss(*observed) if loss == "one_step" else
                     observed_rollout_loss(adapted, states, actions, context))
            if not torch.isfinite(value):
                break
            value.backward()
            optimizer.step()
    return adapted


def adapted_rollout(model: nn.Module, data: Trajectories, context: int, horizon: int, lr: float, steps: int,
                    subset: str = "all", loss: str = "one_step") -> torch.Tensor:  # fmt: skip
    """The open-loop rollout (n, horizon, S) of each trajectory after adapting a copy of ``model`` to that
    trajectory's first ``context`` states alone."""
    out = []
    for i in range(len(data.states)):
        states, actions = data.states[i : i + 1], data.actions[i : i + 1]
        adapted = adapt(model, states, actions, context, lr, steps, subset, loss)
        out.append(rollout(adapted, states, actions, context, horizon))
    return torch.cat(out)


def _rmse(predicted: torch.Tensor, data: Trajectories, context: int, horizon: int) -> float:
    return rollout_errors(predicted, data, context, horizon, math.inf)["rollout_rmse"]


def unseen_report(model: nn.Module, task: TaskConfig, seed: int) -> dict[str, Any]:
    """The unseen pendulum's test rollouts, frozen and adapted (loss, subset, lr and steps chosen on its validation
    trajectories), with the validation grid; ``seed``: the run's data seed."""
    splits = unseen_splits(task, seed)
    context, horizon = task.context_steps, task.horizon
    grid = [{"loss": loss, "subset": subset, "lr": lr, "steps": steps,
             "validation_rollout_rmse": _rmse(adapted_rollout(model, splits.valid, context, horizon, lr, steps, subset,
                                                              loss), splits.valid, context, horizon)}
            for loss in LOSSES for subset in SUBSETS for lr in LRS for steps in STEPS]  # fmt: skip
    frozen_valid = _rmse(rollout(model, splits.valid.states, splits.valid.actions, context, horizon), splits.valid,
                         context, horizon)  # fmt: skip
    best = min(grid, key=lambda g: g["validation_rollout_rmse"])
    adapted = adapted_rollout(model, splits.test, context, horizon, best["lr"], best["steps"], best["subset"],
                              best["loss"])
    return {"system": {"length": task.unseen_length, "damping": task.unseen_damping},
            "frozen": rollout_report(model, splits.test, context, horizon, task.error_threshold),
            "adapted": rollout_errors(adapted, splits.test, context, horizon, task.error_threshold),
            "chosen": {k: best[k] for k in ("loss", "subset", "lr", "steps")},
            "frozen_validation_rollout_rmse": frozen_valid,
            "grid": grid, "chosen_on": "the unseen pendulum's validation trajectories"}  # fmt: skip

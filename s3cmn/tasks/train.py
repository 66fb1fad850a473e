"""One training loop for the task models (S³CMN and baselines alike): AdamW, the warmup + decay schedule,
gradient clipping, an epoch or wall-clock budget, and the best state chosen on the validation split.

The loop never sees the test split: the caller scores it once, after training, with the validation-selected
state. Ctrl-C (SIGINT) or SIGTERM stops after the batch under way; the best state so far is kept and the
checkpoint on disk is whole (:func:`s3cmn.training.checkpoint.save_checkpoint` writes it atomically).
"""

from __future__ import annotations

import copy
import itertools
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from s3cmn.run_config import TrainingConfig
from s3cmn.tasks.checkpoint import save_task_checkpoint
from s3cmn.training.loop import TrainingError
from s3cmn.training.optim import BudgetSpent, build_optimizer, build_scheduler
from s3cmn.training.setup_run import step_limit
from s3cmn.training.signals import StopSignal

logger = logging.getLogger(__name__)

__all__ = ["TaskFitResult", "fit_task"]

LossFn = Callable[[nn.Module, Any], Tensor]
ScoreFn = Callable[[nn.Module], float]
BatchesFn = Callable[[torch.Generator], Iterator[Any]]


@dataclass
class TaskFitResult:
    """What a task run did; ``best_score`` is the validation score (higher is better) of the state kept."""

    epochs: int
    steps: int
    stopped: str
    best_score: float
    best_epoch: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)


def fit_task(model: nn.Module, loss_fn: LossFn, batches: BatchesFn, batches_per_epoch: int, score_fn: ScoreFn,
             training: TrainingConfig, checkpoint_dir: str | Path | None = None,
             spec: dict[str, Any] | None = None) -> TaskFitResult:
    """Train ``model`` on ``batches(generator)`` (one epoch each call) for ``training.num_epochs`` epochs or
    ``training.max_time`` seconds, score it with ``score_fn`` after each epoch, and leave it in the best-scoring
    state; with ``checkpoint_dir``, that state is saved there (``spec`` rebuilds the model on load)."""
    optimizer = build_optimizer(model, training)
    budget = BudgetSpent()  # num_epochs 0: no epoch limit, the schedule follows the time / step budget
    scheduler = build_scheduler(optimizer, training, step_limit(training, batches_per_epoch), budget)
    generator = torch.Generator().manual_seed(training.seed)
    best_score, best_epoch, best_state = -math.inf, 0, copy.deepcopy(model.state_dict())
    history: list[dict[str, float]] = []
    start, steps, stopped, epoch = time.perf_counter(), 0, "epochs", 0
    epochs = itertools.count(1) if training.num_epochs == 0 else range(1, training.num_epochs + 1)
    with StopSignal() as stop:
        for epoch in epochs:
            # 1. one epoch of optimiser steps; the budget and the stop signal are checked after every step
            model.train()
            losses = []
            for batch in batches(generator):
                losses.append(_train_step(model, loss_fn(model, batch), optimizer, scheduler, training))
                steps += 1
                budget.update(time.perf_counter() - start, 0, training)
                stopped = _stop_reason(stop.received, training, start, steps)
                if stopped:
                    break
            # 2. validation after the epoch (a signal skips it: the run is stopping)
            if stop.received:
                break
            score = score_fn(model)
            history.append({"epoch": epoch, "steps": steps, "train_loss": sum(losses) / len(losses),
                            "validation_score": score, "seconds": time.perf_counter() - start})
            logger.info("epoch %d: train loss %.4f, validation score %.4f", epoch, history[-1]["train_loss"], score)
            # 3. keep the best state (and its checkpoint)
            if score > best_score:
                best_score, best_epoch, best_state = score, epoch, copy.deepcopy(model.state_dict())
                if checkpoint_dir is not None:
                    state = {"epoch": epoch, "steps": steps, "validation_score": score, "spec": spec}
                    save_task_checkpoint(checkpoint_dir, model, spec or {}, optimizer, scheduler, state)
            if stopped:
                break
    model.load_state_dict(best_state)
    model.eval()
    return TaskFitResult(epoch, steps, stopped or "epochs", best_score, best_epoch, time.perf_counter() - start,
                         history)


def _train_step(model: nn.Module, loss: Tensor, optimizer: torch.optim.Optimizer, scheduler: Any,
                training: TrainingConfig) -> float:
    """Backward, clip, AdamW step, schedule step; a NaN / inf loss stops the run."""
    if not torch.isfinite(loss):
        raise TrainingError(f"the task loss is {loss.item()}: lower --learning-rate or check the data")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if training.gradient_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), training.gradient_clip)
    optimizer.step()
    scheduler.step()
    return float(loss.detach())


def _stop_reason(signal_received: int | None, training: TrainingConfig, start: float, steps: int) -> str:
    """Why the run stops now ("" = it goes on)."""
    if signal_received:
        return "signal"
    if training.max_time and time.perf_counter() - start >= training.max_time:
        return "max_time"
    if training.max_steps and steps >= training.max_steps:
        return "max_steps"
    return ""

"""AdamW with weight decay only on matrices, and the warmup + cosine / linear / constant schedule."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from s3cmn.run_config import TrainingConfig


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: decayed matrices, and everything else.

    Biases, norm gains, and parameters marked ``_no_weight_decay`` (A_log, D, Δ, β, thresholds, filter
    parameters) are not decayed. Tied parameters appear once.
    """
    decay, no_decay, seen = [], [], set()
    for _, param in model.named_parameters():
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        if param.ndim >= 2 and not getattr(param, "_no_weight_decay", False):
            decay.append(param)
        else:
            no_decay.append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, training: TrainingConfig) -> torch.optim.AdamW:
    """AdamW (β = 0.9, 0.95) over :func:`parameter_groups`; the fused kernel (one pass over all parameters
    instead of ~10 elementwise ops per tensor) wherever every parameter is a float on the CPU or CUDA."""
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in model.parameters())
    return torch.optim.AdamW(
        parameter_groups(model, training.weight_decay), lr=training.learning_rate, betas=(0.9, 0.95), eps=1e-8,
        fused=fused or None,
    )


@dataclass
class BudgetSpent:
    """The fraction of its time / token budget a run has spent: the schedule's progress when the run has no
    step horizon (no epoch or step limit; it ends by ``max_time`` or ``max_tokens``). The loop updates it."""

    fraction: float = 0.0

    def update(self, elapsed: float, tokens: int, training: TrainingConfig) -> None:
        spent = [elapsed / training.max_time if training.max_time else 0.0,
                 tokens / training.max_tokens if training.max_tokens else 0.0]
        self.fraction = min(1.0, max(spent))


def lr_factor(step: int, training: TrainingConfig, total_steps: int | None, budget_fraction: float = 0.0) -> float:
    """Multiplier of the peak learning rate at optimiser step ``step`` (0-based).

    Linear warmup over ``warmup_steps``, then cosine or linear decay to ``min_lr_ratio`` at ``total_steps``,
    or constant. With no step horizon (``total_steps`` None) the decay follows ``budget_fraction``, the part
    of the time / token budget spent, so a ``--max-time`` run ends at the floor too.
    """
    if step < training.warmup_steps:
        return (step + 1) / training.warmup_steps
    if training.scheduler == "constant":
        return 1.0
    if total_steps is None:
        progress = min(1.0, budget_fraction)
    else:
        span = max(1, total_steps - training.warmup_steps)
        progress = min(1.0, (step - training.warmup_steps) / span)
    floor = training.min_lr_ratio
    if training.scheduler == "linear":
        return floor + (1 - floor) * (1 - progress)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, training: TrainingConfig, total_steps: int | None,
    budget: BudgetSpent | None = None,
) -> torch.optim.lr_scheduler.LambdaLR:
    """The LR schedule over ``total_steps`` optimiser steps, or over ``budget`` when there is no step horizon."""
    budget = budget or BudgetSpent()
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, training, total_steps, budget.fraction)
    )

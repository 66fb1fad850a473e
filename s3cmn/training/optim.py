"""AdamW with weight decay only on matrices, and the warmup + cosine / linear / constant schedule."""

from __future__ import annotations

import math

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
    """AdamW (β = 0.9, 0.95) over :func:`parameter_groups`."""
    return torch.optim.AdamW(
        parameter_groups(model, training.weight_decay), lr=training.learning_rate, betas=(0.9, 0.95), eps=1e-8
    )


def lr_factor(step: int, training: TrainingConfig, total_steps: int) -> float:
    """Multiplier of the peak learning rate at optimiser step ``step`` (0-based).

    Linear warmup over ``warmup_steps``, then cosine or linear decay to ``min_lr_ratio`` at ``total_steps``,
    or constant.
    """
    if step < training.warmup_steps:
        return (step + 1) / training.warmup_steps
    if training.scheduler == "constant":
        return 1.0
    span = max(1, total_steps - training.warmup_steps)
    progress = min(1.0, (step - training.warmup_steps) / span)
    floor = training.min_lr_ratio
    if training.scheduler == "linear":
        return floor + (1 - floor) * (1 - progress)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, training: TrainingConfig, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, training, total_steps))

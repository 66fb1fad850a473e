"""Scores of the task models: accuracy, per-class accuracy, spike rates and the input-noise curve (vision);
one-step error, open-loop rollout error and the horizon before it crosses a threshold (robotics)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from s3cmn.tasks.robotics_sim import Trajectories

__all__ = ["classify", "one_step_rmse", "rollout", "rollout_errors", "rollout_report", "vision_report"]

NOISE_SEED = 1234  # the noise of the robustness curve is the same draw for every model


@torch.no_grad()
def classify(model: nn.Module, images: Tensor, batch_size: int = 256) -> tuple[Tensor, dict[str, list[float]]]:
    """Predicted labels (n,) and the mean firing rate of each spiking conv layer and block, in eval mode."""
    model.eval()
    preds, conv_rates, block_rates = [], [], []
    for i in range(0, len(images), batch_size):
        out = model(images[i : i + batch_size])
        preds.append(out.logits.argmax(dim=-1))
        conv_rates.append([float(r) for r in out.conv_spike_rates])
        block_rates.append([float(s.firing_rate) for s in out.spike_stats])
    weights = torch.tensor([min(batch_size, len(images) - i) for i in range(0, len(images), batch_size)]).float()

    def mean(rows: list[list[float]]) -> list[float]:  # per layer, weighted by batch size
        return [] if not rows or not rows[0] else (torch.tensor(rows).T @ weights / weights.sum()).tolist()

    return torch.cat(preds), {"conv": mean(conv_rates), "blocks": mean(block_rates)}


def vision_report(model: nn.Module, images: Tensor, labels: Tensor, num_classes: int,
                  noise_levels: list[float], batch_size: int = 256) -> dict[str, Any]:
    """Accuracy, per-class accuracy, spike rates, and accuracy under Gaussian pixel noise of each std."""
    preds, rates = classify(model, images, batch_size)
    correct = (preds == labels).float()
    per_class = [float(correct[labels == k].mean()) if (labels == k).any() else float("nan")
                 for k in range(num_classes)]
    generator = torch.Generator().manual_seed(NOISE_SEED)
    curve = []
    for std in noise_levels:
        noisy = images + std * torch.randn(images.shape, generator=generator)
        curve.append({"noise_std": std, "accuracy": float((classify(model, noisy, batch_size)[0] == labels)
                                                           .float().mean())})
    return {"accuracy": float(correct.mean()), "per_class_accuracy": per_class, "spike_rates": rates,
            "noise_curve": curve, "examples": len(labels)}


@torch.no_grad()
def one_step_rmse(model: nn.Module, data: Trajectories) -> float:
    """RMSE of the teacher-forced next-state prediction over every step of every trajectory (state units)."""
    model.eval()
    out = model(data.states[:, :-1], data.actions[:, :-1])
    return float((out.next_states - data.states[:, 1:]).pow(2).mean().sqrt())


def rollout(model: nn.Module, states: Tensor, actions: Tensor, context: int, horizon: int,
            differentiable: bool = False) -> Tensor:
    """Open-loop prediction: observe ``context`` steps (one ``forward``), then feed each prediction back with
    ``step``. states (B, L, S), actions (B, L, A) -> predicted states (B, horizon, S) of times
    context .. context + horizon - 1. ``differentiable`` feeds them back through ``forward`` one step at a time
    instead (the same predictions, with a graph to train through)."""
    with torch.set_grad_enabled(differentiable):
        model.eval()
        out = model(states[:, :context], actions[:, :context])  # (B, context, S): predictions of times 1..context
        s, cache = out.next_states[:, -1], out.cache  # (B, S): time `context`
        predicted = [s]
        for k in range(1, horizon):
            action = actions[:, context + k - 1]  # the action applied after time context+k-1
            if differentiable:
                out = model(s[:, None], action[:, None], cache)
                s = out.next_states[:, -1]
            else:
                out = model.step(s, action, cache)
                s = out.next_states  # (B, S)
            cache = out.cache
            predicted.append(s)
    return torch.stack(predicted, dim=1)  # (B, horizon, S)


def rollout_errors(predicted: Tensor, data: Trajectories, context: int, horizon: int,
                   threshold: float) -> dict[str, Any]:  # fmt: skip
    """The open-loop rollout's RMSE at each step (over trajectories and state values) of ``predicted``
    (n, horizon, S), its mean, and ``valid_horizon``: the steps before that RMSE first exceeds ``threshold``."""
    truth = data.states[:, context : context + horizon]  # (n, H, S)
    by_step = (predicted - truth).pow(2).mean(dim=(0, 2)).sqrt()  # (H,)
    over = (by_step > threshold).nonzero()
    return {
        "rollout_rmse": float(by_step.mean()),
        "rollout_rmse_by_step": by_step.tolist(),
        "valid_horizon": int(over[0, 0]) if len(over) else horizon,
        "threshold": threshold,
        "trajectories": len(data.states),
    }


def rollout_report(model: nn.Module, data: Trajectories, context: int, horizon: int,
                   threshold: float) -> dict[str, Any]:
    """One-step RMSE and :func:`rollout_errors` of the model's open-loop rollout."""
    predicted = rollout(model, data.states, data.actions, context, horizon)  # (n, H, S)
    return {"one_step_rmse": one_step_rmse(model, data), **rollout_errors(predicted, data, context, horizon, threshold)}

"""Spike functions: the exact Heaviside step forward, a smooth surrogate derivative backward.

``spike_fn(x, surrogate, alpha)`` returns ``S = H(x) = 1[x >= 0]`` (exactly 0 or 1) and back-propagates
``dL/dx = dL/dS · σ'(x)``, where σ is a smooth primitive ("sigmoid-like" step) of slope ``alpha``:

================  ========================================  ==========================================
surrogate         primitive σ(x)                            derivative σ'(x), the surrogate gradient
================  ========================================  ==========================================
``atan``          1/π · arctan(π/2 · α · x) + 1/2           α/2 / (1 + (π/2 · α · x)²)  (snntorch ATan)
``fast_sigmoid``  x / (1 + α|x|)   (range ±1/α)             1 / (1 + α|x|)²  (snntorch, SuperSpike)
``triangular``    1/2 + α·c − α²·c|c|/2, c = clip(x, ±1/α)  α · max(0, 1 − α|x|)  (support ±1/α)
================  ========================================  ==========================================

``atan`` and ``triangular`` integrate to 1 (their primitives go from 0 to 1); ``fast_sigmoid`` keeps
snntorch's unnormalised form (gradient 1 at the threshold, area 2/α), whatever α.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

__all__ = ["SURROGATES", "Surrogate", "spike_fn", "surrogate_grad", "surrogate_primitive"]

Surrogate = Literal["atan", "fast_sigmoid", "triangular"]
SURROGATES: tuple[str, ...] = ("atan", "fast_sigmoid", "triangular")


def _check(surrogate: str, alpha: float) -> None:
    if surrogate not in SURROGATES:
        raise ValueError(f"unknown surrogate {surrogate!r}: choose one of {SURROGATES}")
    if not alpha > 0:
        raise ValueError(f"surrogate alpha must be > 0, got {alpha}")


def surrogate_grad(x: Tensor, surrogate: str, alpha: float) -> Tensor:
    """σ'(x): the surrogate derivative of the spike at x (same shape as x); see the module table."""
    _check(surrogate, alpha)
    if surrogate == "atan":
        return (alpha / 2) / (1 + (math.pi / 2 * alpha * x) ** 2)
    if surrogate == "fast_sigmoid":
        return 1 / (alpha * x.abs() + 1) ** 2
    return alpha * torch.clamp(1 - alpha * x.abs(), min=0)  # triangular


def surrogate_primitive(x: Tensor, surrogate: str, alpha: float) -> Tensor:
    """σ(x): the smooth function whose derivative is :func:`surrogate_grad` (differentiable by autograd)."""
    _check(surrogate, alpha)
    if surrogate == "atan":
        return torch.atan(math.pi / 2 * alpha * x) / math.pi + 0.5
    if surrogate == "fast_sigmoid":
        return x / (1 + alpha * x.abs())
    c = x.clamp(-1 / alpha, 1 / alpha)  # triangular
    return 0.5 + alpha * c - alpha**2 * c * c.abs() / 2


class _SpikeFunction(torch.autograd.Function):
    """H(x) forward, σ'(x) backward."""

    @staticmethod
    def forward(ctx, x: Tensor, surrogate: str, alpha: float) -> Tensor:
        ctx.save_for_backward(x)
        ctx.surrogate, ctx.alpha = surrogate, alpha
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_spike: Tensor) -> tuple[Tensor, None, None]:
        (x,) = ctx.saved_tensors
        return grad_spike * surrogate_grad(x, ctx.surrogate, ctx.alpha), None, None


def spike_fn(x: Tensor, surrogate: str = "atan", alpha: float = 2.0) -> Tensor:
    """S = 1[x >= 0] (x = membrane − threshold), with the surrogate gradient σ'(x) in backward."""
    _check(surrogate, alpha)
    return _SpikeFunction.apply(x, surrogate, float(alpha))

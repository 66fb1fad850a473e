"""S4D maths: ZOH discretisation of a diagonal complex SSM and its Vandermonde products (Gu et al. 2022,
"On the Parameterization and Initialization of Diagonal State Space Models", the S4D minimal example).

A diagonal SSM per channel d and mode n, x'(t) = A x(t) + B u(t), y = 2·Re(C x) + D u, discretised with a
zero-order hold of step Δ (B = 1, folded into C)::

    Ā = exp(Δ·A),   B̄ = (exp(Δ·A) − 1) / A
    x[t] = Ā·x[t-1] + B̄·u[t],   y[t] = 2·Re(Σ_n C[n]·x[t, n]) + D·u[t]
    K[l] = 2·Re(Σ_n C[n]·B̄[n]·Ā[n]^l)          (y = K * u, a causal convolution)

Everything reduces to two Vandermonde products with powers Ā^l = exp(l·Δ·A):

- ``vandermonde_sum(coef, dtA, L)[..., d, l] = Σ_n coef[..., d, n] · exp(l·dtA[d, n])``   (kernels)
- ``vandermonde_reduce(w, dtA)[..., d, n] = Σ_l w[..., d, l] · exp(l·dtA[d, n])``        (final states)

The ``*_ref`` versions materialise the (D, N, L) Vandermonde matrix (the S4D minimal example). The fast
versions split l = i + c·j (c ≈ √L): exp(l·dtA) = exp(i·dtA)·exp(c·j·dtA), so only D·N·(c + L/c) complex
exponentials are taken and the sums over n (or l) become batched matmuls; the (D, N, L) matrix is never built.
Real parts of dtA are <= 0, so every power has modulus <= 1.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

LOG2_E = 1.0 / math.log(2.0)

__all__ = [
    "s4d_discretize",
    "vandermonde_reduce",
    "vandermonde_reduce_ref",
    "vandermonde_sum",
    "vandermonde_sum_ref",
]


def s4d_discretize(log_dt: Tensor, A: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """ZOH of a diagonal complex A (D, N) with step exp(log_dt) (D,): (dtA, Ā, B̄), each (D, N) complex."""
    dtA = A * torch.exp(log_dt).unsqueeze(-1)  # (D, N)
    A_bar = torch.exp(dtA)
    B_bar = (A_bar - 1.0) / A
    return dtA, A_bar, B_bar


def _block(L: int) -> int:
    return max(1, math.isqrt(max(L - 1, 0)) + 1)  # ceil(sqrt(L))


def _powers_ref(dtA: Tensor, L: int) -> Tensor:
    """exp(l·dtA) for l = 0..L-1: (D, N) -> (D, N, L)."""
    idx = torch.arange(L, device=dtA.device, dtype=dtA.real.dtype)
    return torch.exp(dtA.unsqueeze(-1) * idx)  # (D, N, L)


def _powers(dtA: Tensor, L: int, step: int = 1) -> Tensor:
    """exp(step·l·dtA) for l = 0..L-1: (D, N) -> (D, N, L), as e^re·(cos im + i sin im).

    Real exp2 / cos / sin are vectorised on the CPU; the complex exp is ~5x slower.
    """
    idx = torch.arange(L, device=dtA.device, dtype=dtA.real.dtype) * step
    re = dtA.real.unsqueeze(-1) * idx  # (D, N, L)
    im = dtA.imag.unsqueeze(-1) * idx
    mag = torch.exp2(re * LOG2_E)
    return torch.complex(mag * torch.cos(im), mag * torch.sin(im))


def vandermonde_sum_ref(coef: Tensor, dtA: Tensor, L: int) -> Tensor:
    """Σ_n coef[..., d, n]·exp(l·dtA[d, n]) for l < L: coef (..., D, N) complex -> (..., D, L) complex."""
    return torch.einsum("...dn,dnl->...dl", coef, _powers_ref(dtA, L))


def vandermonde_sum(coef: Tensor, dtA: Tensor, L: int) -> Tensor:
    """Same contract as :func:`vandermonde_sum_ref`, without the (D, N, L) matrix."""
    c = _block(L)
    n_blocks = -(-L // c)
    low = _powers(dtA, c)  # (D, N, c)       exp(i·dtA)
    high = _powers(dtA, n_blocks, step=c)  # (D, N, nb)  exp(c·j·dtA)
    # out[..., d, j, i] = Σ_n high[d, n, j] · (coef[..., d, n] · low[d, n, i])
    scaled = coef.unsqueeze(-1) * low  # (..., D, N, c)
    out = torch.matmul(high.transpose(-1, -2), scaled)  # (..., D, nb, c)
    return out.flatten(-2)[..., :L]  # (..., D, L), l = c·j + i


def vandermonde_reduce_ref(w: Tensor, dtA: Tensor) -> Tensor:
    """Σ_l w[..., d, l]·exp(l·dtA[d, n]): w (..., D, L) real or complex -> (..., D, N) complex."""
    return torch.einsum("...dl,dnl->...dn", w.to(dtA.dtype), _powers_ref(dtA, w.shape[-1]))


def vandermonde_reduce(w: Tensor, dtA: Tensor) -> Tensor:
    """Same contract as :func:`vandermonde_reduce_ref`, without the (D, N, L) matrix."""
    L = w.shape[-1]
    c = _block(L)
    n_blocks = -(-L // c)
    w = F.pad(w, (0, n_blocks * c - L)).to(dtA.dtype)  # zero weights on the padded powers
    w = w.unflatten(-1, (n_blocks, c))  # (..., D, nb, c), l = c·j + i
    low = _powers(dtA, c)  # (D, N, c)
    high = _powers(dtA, n_blocks, step=c)  # (D, N, nb)
    partial = torch.matmul(w, low.transpose(-1, -2))  # (..., D, nb, N) Σ_i w·exp(i·dtA)
    return (partial * high.transpose(-1, -2)).sum(-2)  # (..., D, N)

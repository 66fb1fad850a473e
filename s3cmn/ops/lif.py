"""Leaky integrate-and-fire (LIF) neurons, surrogate gradient (snntorch ``Leaky``, spikingjelly ``LIFNode``).

One step, for every neuron (β the decay, θ the threshold, both per neuron)::

    U[t] = β · V[t-1] + I[t]                      charge (V = membrane after the previous reset)
    S[t] = H(U[t] − θ)                            fire: 1 if U[t] >= θ (surrogate gradient in backward)
    V[t] = U[t] − sg(S[t]) · θ                    reset "subtract" (soft reset: the excess is kept)
    V[t] = U[t] · (1 − sg(S[t]))                  reset "zero"     (hard reset)

``sg`` is stop-gradient when ``detach_reset`` (the default, as snntorch): the reset moves the membrane but no
gradient flows back through the spike that caused it; gradients still reach θ through the ``− S·θ`` term of
the subtract reset. Zenke & Vogels (2021) found detaching the reset trains better; ``detach_reset=False``
keeps the full (surrogate) gradient.

A sequence (B, T, N) runs ``num_steps`` micro-steps per token with the token's current held constant; the
output for a token is the spike *rate* over its micro-steps (in [0, 1]; with ``num_steps = 1``, the spike).

- ``lif_scan_ref``: the plain loop over :func:`lif_step` (the specification, autograd through every step).
- ``lif_scan``: the same loop in an ``autograd.Function`` that builds no per-step graph: forward keeps only
  U (B, T·num_steps, N); backward is the adjoint loop in reverse time (see ``_LIFScan.backward``).

Both return the final membrane V and the mean / std of the membrane V[t] (after reset) over every batch
element, token, micro-step and neuron (detached statistics).
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import torch
from torch import Tensor

from s3cmn.ops.surrogate import spike_fn, surrogate_grad

logger = logging.getLogger(__name__)

__all__ = ["RESETS", "LIFScanOutput", "lif_step", "lif_scan", "lif_scan_ref"]

RESETS: tuple[str, ...] = ("subtract", "zero")


class LIFScanOutput(NamedTuple):
    """Result of a LIF scan."""

    spikes: Tensor  # (B, T, N) spike rate per token over the micro-steps (exact 0/1 when num_steps = 1)
    v: Tensor  # (B, N) membrane after the last micro-step (the recurrent state)
    membrane_mean: Tensor  # () mean of V over (B, T, num_steps, N), detached
    membrane_std: Tensor  # () std (population) of V over the same, detached


def lif_step(
    v: Tensor,
    current: Tensor,
    beta: Tensor,
    threshold: Tensor,
    reset: str = "subtract",
    surrogate: str = "atan",
    alpha: float = 2.0,
    detach_reset: bool = True,
) -> tuple[Tensor, Tensor]:
    """One LIF step (module docstring): v (B, N) membrane, current (B, N); beta, threshold broadcast to them.

    Returns (spike (B, N) in {0, 1}, v_new (B, N) the membrane after reset).
    """
    if reset not in RESETS:
        raise ValueError(f"unknown reset {reset!r}: choose one of {RESETS}")
    u = beta * v + current  # (B, N) charge
    spike = spike_fn(u - threshold, surrogate, alpha)  # (B, N) fire
    s = spike.detach() if detach_reset else spike
    v_new = u - s * threshold if reset == "subtract" else u * (1 - s)  # (B, N) reset
    return spike, v_new


def _check_scan(
    current: Tensor, beta: Tensor, threshold: Tensor, v0: Tensor, reset: str, num_steps: int
) -> None:
    if current.dim() != 3:
        raise ValueError(f"expected current (B, T, N), got {tuple(current.shape)}")
    B, _, N = current.shape
    if beta.shape != (N,) or threshold.shape != (N,):
        raise ValueError(
            f"expected beta and threshold (N,) = ({N},), got {tuple(beta.shape)}, {tuple(threshold.shape)}"
        )
    if v0.shape != (B, N):
        raise ValueError(f"expected v0 (B, N) = ({B}, {N}), got {tuple(v0.shape)}")
    if reset not in RESETS:
        raise ValueError(f"unknown reset {reset!r}: choose one of {RESETS}")
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")


def _moments(v_all: Tensor) -> tuple[Tensor, Tensor]:
    v_all = v_all.detach()
    return v_all.mean(), v_all.std(correction=0)


def lif_scan_ref(
    current: Tensor,
    beta: Tensor,
    threshold: Tensor,
    v0: Tensor,
    reset: str = "subtract",
    surrogate: str = "atan",
    alpha: float = 2.0,
    num_steps: int = 1,
    detach_reset: bool = True,
) -> LIFScanOutput:
    """LIF over a sequence by a loop over lif_step: current (B, T, N), beta, threshold (N,), v0 (B, N)."""
    _check_scan(current, beta, threshold, v0, reset, num_steps)
    v = v0
    rates, trace = [], []
    for t in range(current.shape[1]):
        rate = torch.zeros_like(v0)
        for _ in range(num_steps):
            spike, v = lif_step(v, current[:, t], beta, threshold, reset, surrogate, alpha, detach_reset)
            rate = rate + spike
            trace.append(v)
        rates.append(rate / num_steps)
    spikes = torch.stack(rates, dim=1)  # (B, T, N)
    mean, std = _moments(torch.stack(trace, dim=1)) if trace else _moments(v0[:, None])
    return LIFScanOutput(spikes, v, mean, std)


def _reset(u: Tensor, s: Tensor, threshold: Tensor, reset: str) -> Tensor:
    """V from U and the spikes S (0/1), written exactly as in lif_step so both paths round the same way."""
    return u - s * threshold if reset == "subtract" else u * (1 - s)


def _reset_where(u: Tensor, threshold: Tensor, reset: str) -> Tensor:
    """The V of ``_reset(u, 1[u >= θ], ...)`` bit for bit (u − 1·θ = u − θ, u − 0·θ = u), in fewer ops."""
    fired = u >= threshold  # the same test as spike_fn(u − θ): for floats u − θ >= 0 iff u >= θ
    return torch.where(fired, u - threshold if reset == "subtract" else 0.0, u)


class _LIFScan(torch.autograd.Function):
    """lif_scan's autograd: tensors are kept time-major, (K, B, N) with K = T · num_steps micro-steps."""

    @staticmethod
    def forward(ctx, current, beta, threshold, v0, reset, surrogate, alpha, num_steps, detach_reset):
        B, T, N = current.shape
        S = num_steps
        cur = current.transpose(0, 1)  # (T, B, N)
        u_all = current.new_empty(T * S, B, N)  # charge U of every micro-step
        v = v0
        for t in range(T):
            for k in range(S):
                u = beta * v + cur[t]  # (B, N), the same expression as lif_step: same rounding
                u_all[t * S + k] = u
                v = _reset_where(u, threshold, reset)
        s_all = (u_all - threshold >= 0).to(u_all.dtype)  # (K, B, N), the same test as spike_fn
        v_all = _reset(u_all, s_all, threshold, reset)  # (K, B, N)
        spikes = (s_all.view(T, S, B, N).sum(1) / S).transpose(0, 1).contiguous()  # (B, T, N)
        mean, std = _moments(v_all) if T else _moments(v0[:, None])
        ctx.save_for_backward(u_all, beta, threshold, v0)
        ctx.cfg = (reset, surrogate, alpha, num_steps, detach_reset)
        ctx.mark_non_differentiable(mean, std)
        return spikes, v, mean, std

    @staticmethod
    def backward(ctx, g_spikes, g_v, _g_mean, _g_std):
        """Adjoint of the loop. With gV[k] the gradient reaching V[k] (from the outputs and from
        U[k+1] = βV[k] + I), d = σ'(U[k] − θ), s = S[k], gS = dL/dS[k] from the rate output (g_spikes / S):

            subtract: Gs = gS − [not detach]·gV·θ;  gU = gV + Gs·d;         gθ += −gV·s − Gs·d
            zero:     Gs = gS − [not detach]·gV·U;  gU = gV·(1 − s) + Gs·d;  gθ += −Gs·d
            gI[t] += gU;  gβ += gU · V[k-1];  gV[k-1] = β · gU

        gU is affine in gV (gU = a·gV + c, with a and c known from the forward), so the reverse loop is only
        ``gU = a·gV + c; gV = β·gU``; every sum over micro-steps (gI, gβ, gθ) is done after it, vectorised.
        """
        u_all, beta, threshold, v0 = ctx.saved_tensors
        reset, surrogate, alpha, S, detach_reset = ctx.cfg
        K, B, N = u_all.shape
        T = K // S
        s_all = (u_all - threshold >= 0).to(u_all.dtype)  # (K, B, N)
        d_all = surrogate_grad(u_all - threshold, surrogate, alpha)  # (K, B, N)
        g_s = (g_spikes.transpose(0, 1) / S)[:, None].expand(T, S, B, N).reshape(K, B, N)  # dL/dS[k]
        c_all = g_s * d_all
        if reset == "subtract":
            a_all = None if detach_reset else 1 - threshold * d_all  # None: a = 1
        else:
            a_all = 1 - s_all if detach_reset else 1 - s_all - u_all * d_all
        # 1. the reverse recurrence
        gu_all = torch.empty_like(u_all)  # (K, B, N)
        gv = g_v
        for k in reversed(range(K)):
            gu = gv + c_all[k] if a_all is None else a_all[k] * gv + c_all[k]
            gu_all[k] = gu
            gv = gu * beta
        # 2. the sums, vectorised
        g_cur = gu_all.view(T, S, B, N).sum(1).transpose(0, 1)  # (B, T, N)
        g_beta = g_thr = None
        if ctx.needs_input_grad[1]:
            v_all = _reset(u_all, s_all, threshold, reset)
            v_prev = torch.cat([v0[None], v_all[:-1]])  # V[k-1]
            g_beta = (gu_all * v_prev).sum((0, 1))
        if ctx.needs_input_grad[2]:
            gv_all = torch.cat([gu_all[1:] * beta, g_v[None]])  # gV[k]
            if reset == "subtract":
                gs_tot = g_s if detach_reset else g_s - gv_all * threshold
                g_thr = -(gv_all * s_all + gs_tot * d_all).sum((0, 1))
            else:
                gs_tot = g_s if detach_reset else g_s - gv_all * u_all
                g_thr = -(gs_tot * d_all).sum((0, 1))
        return g_cur, g_beta, g_thr, gv, None, None, None, None, None


def lif_scan(
    current: Tensor,
    beta: Tensor,
    threshold: Tensor,
    v0: Tensor,
    reset: str = "subtract",
    surrogate: str = "atan",
    alpha: float = 2.0,
    num_steps: int = 1,
    detach_reset: bool = True,
) -> LIFScanOutput:
    """Same contract and numbers as :func:`lif_scan_ref`, with no per-step autograd graph (the fast path)."""
    _check_scan(current, beta, threshold, v0, reset, num_steps)
    spikes, v, mean, std = _LIFScan.apply(
        current, beta, threshold, v0, reset, surrogate, float(alpha), int(num_steps), bool(detach_reset)
    )
    return LIFScanOutput(spikes, v, mean, std)

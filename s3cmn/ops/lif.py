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
  U (B, T·num_steps, N); backward is the adjoint loop in reverse time (see ``_LIFScan.backward``). Its two
  time loops run in C on fp32 CPU tensors (:mod:`s3cmn.ops.lif_cpu`), else in Python.

Both return the final membrane V and the mean / std of the membrane V[t] (after reset) over every batch
element, token, micro-step and neuron (detached statistics).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from torch import Tensor

from s3cmn.ops.cpu_kernel import why_unavailable
from s3cmn.ops.lif_cpu import lif_adjoint_loop, lif_charge_loop, lif_kernel
from s3cmn.ops.surrogate import spike_fn, surrogate_grad

__all__ = ["RESETS", "LIFScanOutput", "lif_step", "lif_scan", "lif_scan_ref"]

RESETS: tuple[str, ...] = ("subtract", "zero")
Backend = Literal["auto", "c", "loop"]
BACKENDS: tuple[str, ...] = ("auto", "c", "loop")


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


def _charge_loop(cur: Tensor, beta: Tensor, threshold: Tensor, v0: Tensor, zero_reset: bool, num_steps: int
                 ) -> tuple[Tensor, Tensor]:
    """The forward time loop: cur (T, B, N) -> (U of every micro-step (T·S, B, N), V after the last (B, N))."""
    T, B, N = cur.shape
    reset = "zero" if zero_reset else "subtract"
    u_all = cur.new_empty(T * num_steps, B, N)  # charge U of every micro-step
    v = v0
    for t in range(T):
        for k in range(num_steps):
            u = beta * v + cur[t]  # (B, N), the same expression as lif_step: same rounding
            u_all[t * num_steps + k] = u
            v = _reset_where(u, threshold, reset)
    return u_all, v


def _adjoint_loop(a_all: Tensor | None, c_all: Tensor, beta: Tensor, g_v: Tensor) -> tuple[Tensor, Tensor]:
    """The backward time loop gU[k] = a[k]·gV + c[k], gV = β·gU[k] (a None: 1) -> (gU (K, B, N), dL/dV0)."""
    gu_all = torch.empty_like(c_all)  # (K, B, N)
    gv = g_v
    for k in reversed(range(c_all.shape[0])):
        gu = gv + c_all[k] if a_all is None else a_all[k] * gv + c_all[k]
        gu_all[k] = gu
        gv = gu * beta
    return gu_all, gv


def _use_c_kernel(backend: Backend, *tensors: Tensor) -> bool:
    """Whether the time loops run in C: "auto" for fp32 CPU tensors where the kernel builds; "c" must."""
    if backend == "loop":
        return False
    fits = all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)
    if backend == "c" and not fits:
        raise ValueError("lif_scan backend 'c' takes float32 CPU tensors: use backend='loop' for others")
    if fits and lif_kernel() is None:
        if backend == "c":
            raise RuntimeError(f"lif_scan backend 'c' is unavailable: {why_unavailable('lif')}")
        return False
    return fits


class _LIFScan(torch.autograd.Function):
    """lif_scan's autograd: tensors are kept time-major, (K, B, N) with K = T · num_steps micro-steps."""

    @staticmethod
    def forward(ctx, current, beta, threshold, v0, reset, surrogate, alpha, num_steps, detach_reset, backend):
        B, T, N = current.shape
        S = num_steps
        cur = current.transpose(0, 1)  # (T, B, N)
        use_c = _use_c_kernel(backend, current, beta, threshold, v0)
        charge_loop = lif_charge_loop if use_c else _charge_loop
        u_all, v = charge_loop(cur, beta, threshold, v0, reset == "zero", S)  # (T·S, B, N), (B, N)
        s_all = (u_all - threshold >= 0).to(u_all.dtype)  # (K, B, N), the same test as spike_fn
        v_all = _reset(u_all, s_all, threshold, reset)  # (K, B, N)
        spikes = (s_all.view(T, S, B, N).sum(1) / S).transpose(0, 1).contiguous()  # (B, T, N)
        mean, std = _moments(v_all) if T else _moments(v0[:, None])
        ctx.save_for_backward(u_all, beta, threshold, v0)
        ctx.cfg = (reset, surrogate, alpha, num_steps, detach_reset, use_c)
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
        reset, surrogate, alpha, S, detach_reset, use_c = ctx.cfg
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
        use_c = use_c and g_v.dtype == torch.float32 and d_all.dtype == torch.float32
        gu_all, gv = (lif_adjoint_loop if use_c else _adjoint_loop)(a_all, c_all, beta, g_v)  # (K, B, N), (B, N)
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
        return g_cur, g_beta, g_thr, gv, None, None, None, None, None, None


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
    backend: Backend = "auto",
) -> LIFScanOutput:
    """Same contract and numbers as :func:`lif_scan_ref`, with no per-step autograd graph (the fast path).

    ``backend``: "c" runs the two time loops in C (:mod:`s3cmn.ops.lif_cpu`, fp32 CPU tensors, bit-equal
    membranes); "loop" in Python; "auto" = "c" where it applies and builds, else "loop".
    """
    _check_scan(current, beta, threshold, v0, reset, num_steps)
    if backend not in BACKENDS:
        raise ValueError(f"unknown lif_scan backend {backend!r}: choose one of {BACKENDS}")
    spikes, v, mean, std = _LIFScan.apply(
        current, beta, threshold, v0, reset, surrogate, float(alpha), int(num_steps), bool(detach_reset), backend
    )
    return LIFScanOutput(spikes, v, mean, std)

"""One-token updates of the recurrent states, for decoding: a readable PyTorch ``*_ref`` and a C kernel each.

At batch 1 a decode step is dozens of tiny tensor ops per sub-layer, each costing more in dispatch than in
arithmetic. These functions do a sub-layer's whole state update in one C loop (``s3cmn.ops.cpu_kernel``: plain
C on fp32 pointers, compiled on first use), between the matmuls that PyTorch does well:

- :func:`window_step`: a causal FIR filter over the last K inputs, ``y = Σ_j window[j]·w[j] (+ add) (+ x·skip)``,
  optional SiLU, and the shifted window (Mamba's and Hyena's short convolutions, Hyena's long filters);
- :func:`ssm_step`: Mamba's selective-SSM step from the raw Δ: softplus, ``h = exp(ΔA)·h + ΔB·u``,
  ``y = (C·h + D·u)·SiLU(z)``;
- :func:`lif_step_stats`: ``num_steps`` LIF micro-steps with their spike rate and membrane statistics.

Each takes ``backend``: "c" (must), "torch" (the ``_ref``), "auto" (C for contiguous-able fp32 CPU tensors
where the kernel builds, else the reference; the fallback is logged once by ``load_kernel``). Inputs are never
modified: every result is a new tensor, so a state can be stepped from twice (beam search, the tests).
"""

from __future__ import annotations

import ctypes

import torch
import torch.nn.functional as F
from torch import Tensor

from s3cmn.ops.cpu_kernel import EXACT, FAST_MATH, Backend, KernelUnavailable, load_kernel, why_unavailable

__all__ = [
    "decode_kernel", "lif_step_stats", "lif_step_stats_ref", "ssm_step", "ssm_step_ref", "window_step",
    "window_step_ref",
]

SOURCE = r"""
#include <math.h>
#include <string.h>

/* state: (B, C, K-1) the last inputs; x, y: (B, C); w: (C, K), w[:, K-1] meets x; add, skip: (C) or NULL;
   new_state: (B, C, K-1) = [state[..., 1:], x]. */
void window_step(int B, int C, int K, const float *state, const float *x, const float *w, const float *add,
                 const float *skip, int silu, float *y, float *new_state) {
    const int H = K - 1;
    for (int b = 0; b < B; b++) {
        for (int c = 0; c < C; c++) {
            const long bc = (long)b * C + c;
            const float *s = state + bc * H, *wc = w + (long)c * K;
            const float xv = x[bc];
            float acc = 0.0f;
            for (int j = 0; j < H; j++) acc += s[j] * wc[j];
            acc += xv * wc[H];
            if (add) acc += add[c];
            if (skip) acc += xv * skip[c];
            y[bc] = silu ? acc / (1.0f + expf(-acc)) : acc;
            if (H > 0) {
                memcpy(new_state + bc * H, s + 1, sizeof(float) * (H - 1));
                new_state[bc * H + H - 1] = xv;
            }
        }
    }
}

/* h, h_new: (B, E, N); x, dt, z, y: (B, E); dt_bias, D: (E); A: (E, N); Bm, Cm: (B, N). */
void ssm_step(int B, int E, int N, const float *h, const float *x, const float *dt, const float *dt_bias,
              const float *A, const float *Bm, const float *Cm, const float *D, const float *z, float *y,
              float *h_new) {
    for (int b = 0; b < B; b++) {
        const float *Bb = Bm + (long)b * N, *Cb = Cm + (long)b * N;
        for (int e = 0; e < E; e++) {
            const long be = (long)b * E + e;
            const float r = dt[be] + dt_bias[e];
            const float d = r > 20.0f ? r : log1pf(expf(r));  /* softplus, torch's threshold 20 */
            const float u = x[be], du = d * u;
            const float *Ae = A + (long)e * N, *he = h + be * N;
            float *ho = h_new + be * N;
            float acc = 0.0f;
            for (int n = 0; n < N; n++) {
                const float hn = expf(d * Ae[n]) * he[n] + du * Bb[n];
                ho[n] = hn;
                acc += Cb[n] * hn;
            }
            const float zv = z[be];
            y[be] = (acc + D[e] * u) * (zv / (1.0f + expf(-zv)));
        }
    }
}
"""

LIF_SOURCE = r"""
#include <math.h>

/* v, cur, v_new, rate: (B, N); beta, thr: (N); count: (N); moments: [mean, population std] of V over the
   B·S·N neuron-steps. Same arithmetic and order as the PyTorch loop (no contraction): identical spikes. */
void lif_step(int B, int N, int S, int zero_reset, const float *v, const float *cur, const float *beta,
              const float *thr, float *v_new, float *rate, float *count, float *moments) {
    double s1 = 0.0, s2 = 0.0;
    for (int n = 0; n < N; n++) count[n] = 0.0f;
    for (int b = 0; b < B; b++) {
        for (int n = 0; n < N; n++) {
            const long j = (long)b * N + n;
            float vv = v[j], fired = 0.0f;
            for (int k = 0; k < S; k++) {
                const float u = beta[n] * vv + cur[j];
                const int f = u >= thr[n];
                vv = f ? (zero_reset ? 0.0f : u - thr[n]) : u;
                fired += (float)f;
                s1 += vv;
                s2 += (double)vv * vv;
            }
            v_new[j] = vv;
            rate[j] = S == 1 ? fired : fired / (float)S;
            count[n] += fired;
        }
    }
    const double n = (double)B * N * S, mean = s1 / n, var = s2 / n - mean * mean;
    moments[0] = (float)mean;
    moments[1] = (float)sqrt(var > 0.0 ? var : 0.0);
}
"""

_INT, _PTR = ctypes.c_int, ctypes.c_void_p
SIGNATURES = {"window_step": [_INT] * 3 + [_PTR] * 5 + [_INT] + [_PTR] * 2, "ssm_step": [_INT] * 3 + [_PTR] * 11}
LIF_SIGNATURES = {"lif_step": [_INT] * 4 + [_PTR] * 8}


def decode_kernel() -> ctypes.CDLL | None:
    """The compiled window and SSM steps, or None where they cannot be built (the reason is logged once)."""
    return load_kernel("decode_step", SOURCE, SIGNATURES, FAST_MATH)


def _kernel(name: str, backend: Backend, tensors: tuple[Tensor | None, ...]) -> ctypes.CDLL | None:
    """The library to run, or None for the reference: "c" must have it (fp32 CPU inputs, a compiler)."""
    if backend == "torch":
        return None
    fits = all(t is None or (t.device.type == "cpu" and t.dtype == torch.float32) for t in tensors)
    if not fits:
        if backend == "c":
            raise ValueError(f"{name} backend 'c' takes float32 CPU tensors: use backend='torch' for others")
        return None
    lib = load_kernel("decode_lif", LIF_SOURCE, LIF_SIGNATURES, EXACT) if name == "lif_step" else decode_kernel()
    if lib is None and backend == "c":
        raise KernelUnavailable(f"{name} backend 'c' is unavailable: {why_unavailable('decode_step')}")
    return lib


def _p(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


# --- causal FIR window ----------------------------------------------------------------------------------
def window_step_ref(state: Tensor, x: Tensor, weight: Tensor, add: Tensor | None = None, skip: Tensor | None = None,
                    silu: bool = False) -> tuple[Tensor, Tensor]:
    """state (B, C, K-1), x (B, C), weight (C, K) -> (y (B, C), the new state [state[..., 1:], x])."""
    window = torch.cat([state, x[..., None]], dim=-1)  # (B, C, K)
    y = (window * weight).sum(-1)  # (B, C)
    if add is not None:
        y = y + add
    if skip is not None:
        y = y + x * skip
    return (F.silu(y) if silu else y), window[..., 1:]


def window_step(state: Tensor, x: Tensor, weight: Tensor, add: Tensor | None = None, skip: Tensor | None = None,
                silu: bool = False, backend: Backend = "auto") -> tuple[Tensor, Tensor]:
    """:func:`window_step_ref` in one C pass (fused multiply-adds: equal to the reference within rounding)."""
    lib = _kernel("window_step", backend, (state, x, weight, add, skip))
    if lib is None:
        return window_step_ref(state, x, weight, add, skip, silu)
    B, C, H = state.shape
    state, x, weight = state.contiguous(), x.contiguous(), weight.contiguous()
    add = add.contiguous() if add is not None else None
    skip = skip.contiguous() if skip is not None else None
    y, new_state = x.new_empty(B, C), state.new_empty(B, C, H)
    lib.window_step(B, C, H + 1, _p(state), _p(x), _p(weight), _p(add), _p(skip), int(silu), _p(y), _p(new_state))
    return y, new_state


# --- selective SSM --------------------------------------------------------------------------------------
def ssm_step_ref(h: Tensor, x: Tensor, dt: Tensor, dt_bias: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor,
                 z: Tensor) -> tuple[Tensor, Tensor]:
    """One Mamba step: h (B, E, N), x, dt (raw, before bias and softplus), z (B, E); dt_bias, D (E); A (E, N);
    B, C (B, N) -> (y (B, E) = (C·h' + D·x)·SiLU(z), h' = exp(ΔA)·h + Δ·B·x), Δ = softplus(dt + dt_bias)."""
    delta = F.softplus(dt + dt_bias)  # (B, E)
    h = torch.exp(delta[..., None] * A) * h + (delta * x)[..., None] * B[:, None]  # (B, E, N)
    y = (h * C[:, None]).sum(-1) + D * x  # (B, E)
    return y * F.silu(z), h


def ssm_step(h: Tensor, x: Tensor, dt: Tensor, dt_bias: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor,
             z: Tensor, backend: Backend = "auto") -> tuple[Tensor, Tensor]:
    """:func:`ssm_step_ref` in one C pass over (batch, channel)."""
    lib = _kernel("ssm_step", backend, (h, x, dt, dt_bias, A, B, C, D, z))
    if lib is None:
        return ssm_step_ref(h, x, dt, dt_bias, A, B, C, D, z)
    batch, E, N = h.shape
    h, x, dt, z, B, C = h.contiguous(), x.contiguous(), dt.contiguous(), z.contiguous(), B.contiguous(), C.contiguous()
    dt_bias, A, D = dt_bias.contiguous(), A.contiguous(), D.contiguous()
    y, h_new = x.new_empty(batch, E), h.new_empty(batch, E, N)
    lib.ssm_step(batch, E, N, _p(h), _p(x), _p(dt), _p(dt_bias), _p(A), _p(B), _p(C), _p(D), _p(z), _p(y), _p(h_new))
    return y, h_new


# --- LIF ------------------------------------------------------------------------------------------------
def lif_step_stats_ref(v: Tensor, current: Tensor, beta: Tensor, threshold: Tensor, num_steps: int = 1,
                       zero_reset: bool = False) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``num_steps`` LIF micro-steps (:func:`s3cmn.ops.lif.lif_step`'s charge, fire, reset) on one token:
    v, current (B, N); beta, threshold (N,) -> (rate (B, N), V after the last (B, N), spike count (N,) over
    batch and micro-steps, mean and population std () of V over every neuron-step)."""
    fired_sum, trace = torch.zeros_like(v), []
    for _ in range(num_steps):
        u = beta * v + current  # (B, N) charge
        fired = u >= threshold
        v = torch.where(fired, torch.zeros_like(u) if zero_reset else u - threshold, u)  # (B, N) reset
        fired_sum = fired_sum + fired
        trace.append(v)
    std, mean = torch.std_mean(torch.stack(trace), correction=0)
    return fired_sum / num_steps, v, fired_sum.sum(0), mean, std


def lif_step_stats(
    v: Tensor, current: Tensor, beta: Tensor, threshold: Tensor, num_steps: int = 1, zero_reset: bool = False,
    backend: Backend = "auto",
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """:func:`lif_step_stats_ref` in one C pass: the same membranes and spikes bit for bit (no contraction)."""
    lib = _kernel("lif_step", backend, (v, current, beta, threshold))
    if lib is None:
        return lif_step_stats_ref(v, current, beta, threshold, num_steps, zero_reset)
    B, N = v.shape
    v, current, beta, threshold = v.contiguous(), current.contiguous(), beta.contiguous(), threshold.contiguous()
    v_new, rate, count = v.new_empty(B, N), v.new_empty(B, N), v.new_empty(N)
    moments = v.new_empty(2)  # mean, std
    lib.lif_step(B, N, num_steps, int(zero_reset), _p(v), _p(current), _p(beta), _p(threshold), _p(v_new), _p(rate),
                 _p(count), _p(moments))
    return rate, v_new, count, moments[0], moments[1]

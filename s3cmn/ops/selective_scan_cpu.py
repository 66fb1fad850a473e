"""The selective scan as one C loop per channel (the CPU backend of :func:`s3cmn.ops.selective_scan`).

Same recurrence as ``selective_scan_ref`` (h[t] = exp(Δ[t]·A)·h[t-1] + Δ[t]·B[t]·u[t], y[t] = Σ_n C[t, n]·h[t, n]),
computed for every (batch, channel) pair by a loop over t that holds the N-vector h in registers: one pass
over the inputs, no (B, E, T, N) tensor and no per-token tensor op. Channels are split across
torch.get_num_threads() threads.

Backward (per channel): the forward is recomputed into a (T, N) scratch of states and decays, then the
adjoint g[t] = a[t+1]·g[t+1] + C[t]·gy[t] runs backwards in time (the same equations as the chunked scan's
backward). dL/dB and dL/dC sum over channels, so each thread accumulates its own (B, T, N) copy.
"""

from __future__ import annotations

import ctypes

import torch
from torch.autograd.function import once_differentiable

from s3cmn.ops.cpu_kernel import FAST_MATH, load_kernel, num_workers, parallel_ranges, ptr

__all__ = ["scan_kernel", "SelectiveScanC"]

SOURCE = r"""
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* u, dl, y: (B, E, T); A: (E, N); Bm, Cm: (B, T, N); h0, hl: (B, E, N). Channels e0 <= e < e1. */
void scan_fwd(int nb, int E, int T, int N, int e0, int e1, const float *u, const float *dl,
              const float *A, const float *Bm, const float *Cm, const float *h0, float *y, float *hl) {
    float h[N];
    for (int b = 0; b < nb; b++) {
        for (int e = e0; e < e1; e++) {
            const long be = (long)b * E + e;
            const float *ue = u + be * T, *de = dl + be * T, *Ae = A + (long)e * N;
            float *ye = y + be * T;
            memcpy(h, h0 + be * N, sizeof(float) * N);
            for (int t = 0; t < T; t++) {
                const float d = de[t], du = d * ue[t];
                const float *Bt = Bm + ((long)b * T + t) * N, *Ct = Cm + ((long)b * T + t) * N;
                float acc = 0.0f;
                for (int n = 0; n < N; n++) {
                    h[n] = expf(d * Ae[n]) * h[n] + du * Bt[n];
                    acc += Ct[n] * h[n];
                }
                ye[t] = acc;
            }
            memcpy(hl + be * N, h, sizeof(float) * N);
        }
    }
}

/* Gradients of scan_fwd. gy: (B, E, T); gh: (B, E, N). Writes gu, gdl (B, E, T), gh0 (B, E, N) and
   gA (E, N) for e0 <= e < e1; adds into gB, gC (B, T, N), this thread's own copies. */
void scan_bwd(int nb, int E, int T, int N, int e0, int e1, const float *u, const float *dl,
              const float *A, const float *Bm, const float *Cm, const float *h0, const float *gy,
              const float *gh, float *gu, float *gdl, float *gA, float *gB, float *gC, float *gh0) {
    float *hs = malloc(sizeof(float) * (size_t)T * N), *as = malloc(sizeof(float) * (size_t)T * N);
    float g[N], gAe[N];
    for (int e = e0; e < e1; e++) {
        const float *Ae = A + (long)e * N;
        for (int n = 0; n < N; n++) gAe[n] = 0.0f;
        for (int b = 0; b < nb; b++) {
            const long be = (long)b * E + e;
            const float *ue = u + be * T, *de = dl + be * T, *h0e = h0 + be * N, *gye = gy + be * T;
            /* 1. states and decays of every token */
            const float *hp = h0e;
            for (int t = 0; t < T; t++) {
                const float d = de[t], du = d * ue[t];
                const float *Bt = Bm + ((long)b * T + t) * N;
                float *ht = hs + (long)t * N, *at = as + (long)t * N;
                for (int n = 0; n < N; n++) {
                    at[n] = expf(d * Ae[n]);
                    ht[n] = at[n] * hp[n] + du * Bt[n];
                }
                hp = ht;
            }
            /* 2. the adjoint, backwards in time */
            memcpy(g, gh + be * N, sizeof(float) * N);
            for (int t = T - 1; t >= 0; t--) {
                const float d = de[t], ut = ue[t], gyt = gye[t];
                const long bt = ((long)b * T + t) * N;
                const float *Bt = Bm + bt, *Ct = Cm + bt, *ht = hs + (long)t * N, *at = as + (long)t * N;
                const float *hprev = t > 0 ? hs + (long)(t - 1) * N : h0e;
                float *gBt = gB + bt, *gCt = gC + bt;
                float gBs = 0.0f, wA = 0.0f;
                for (int n = 0; n < N; n++) {
                    const float gn = g[n] + Ct[n] * gyt;            /* dL/dh[t] */
                    gCt[n] += ht[n] * gyt;
                    gBt[n] += gn * d * ut;
                    gBs += gn * Bt[n];
                    const float w = gn * at[n] * hprev[n];          /* dL/d(Δ·A) */
                    gAe[n] += w * d;
                    wA += w * Ae[n];
                    g[n] = gn * at[n];                              /* dL/dh[t-1] through the decay */
                }
                gdl[be * T + t] = wA + gBs * ut;
                gu[be * T + t] = gBs * d;
            }
            memcpy(gh0 + be * N, g, sizeof(float) * N);
        }
        memcpy(gA + (long)e * N, gAe, sizeof(float) * N);
    }
    free(hs);
    free(as);
}
"""

_INT, _PTR = ctypes.c_int, ctypes.c_void_p
SIGNATURES = {
    "scan_fwd": [_INT] * 6 + [_PTR] * 8,
    "scan_bwd": [_INT] * 6 + [_PTR] * 14,
}


def scan_kernel() -> ctypes.CDLL | None:
    """The compiled scan kernels, or None where they cannot be built (the reason is logged once)."""
    return load_kernel("selective_scan", SOURCE, SIGNATURES, FAST_MATH)


class SelectiveScanC(torch.autograd.Function):
    """(u, Δ, A, B, C, h0) -> (y = Σ_n C·h (B, E, T), h[T-1] (B, E, N)); fp32 CPU tensors, Δ already prepared.
    Saves only the inputs for backward."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, h0):  # type: ignore[override]
        lib = scan_kernel()
        if lib is None:
            raise RuntimeError("SelectiveScanC needs the compiled scan kernel: see the log for why it is missing")
        batch, E, T = u.shape
        N = A.shape[1]
        u, delta, A, h0 = u.contiguous(), delta.contiguous(), A.contiguous(), h0.contiguous()
        Bt, Ct = B.transpose(1, 2).contiguous(), C.transpose(1, 2).contiguous()  # (B, T, N)
        y = u.new_empty(batch, E, T)
        h_last = u.new_empty(batch, E, N)
        args = [ptr(x) for x in (u, delta, A, Bt, Ct, h0, y, h_last)]
        parallel_ranges(E, lambda _i, e0, e1: lib.scan_fwd(batch, E, T, N, e0, e1, *args))
        ctx.save_for_backward(u, delta, A, Bt, Ct, h0)
        return y, h_last

    @staticmethod
    @once_differentiable
    def backward(ctx, gy, gh_last):  # type: ignore[override]
        lib = scan_kernel()
        u, delta, A, Bt, Ct, h0 = ctx.saved_tensors
        batch, E, T = u.shape
        N = A.shape[1]
        gy = torch.zeros_like(u) if gy is None else gy.float().contiguous()  # (B, E, T)
        gh_last = torch.zeros_like(h0) if gh_last is None else gh_last.float().contiguous()  # (B, E, N)
        grad_u, grad_delta = torch.empty_like(u), torch.empty_like(u)  # (B, E, T)
        grad_A, grad_h0 = torch.empty_like(A), torch.empty_like(h0)
        workers = num_workers(E)
        grad_B = Bt.new_zeros(workers, batch, T, N)  # one copy a thread: they sum over channels
        grad_C = torch.zeros_like(grad_B)
        args = [ptr(x) for x in (u, delta, A, Bt, Ct, h0, gy, gh_last, grad_u, grad_delta, grad_A)]
        out = [ptr(grad_h0)]

        def run(i: int, e0: int, e1: int) -> None:
            lib.scan_bwd(batch, E, T, N, e0, e1, *args, ptr(grad_B[i]), ptr(grad_C[i]), *out)

        parallel_ranges(E, run)
        grad_B = grad_B.sum(0).transpose(1, 2)  # (B, N, T)
        grad_C = grad_C.sum(0).transpose(1, 2)
        return grad_u, grad_delta, grad_A, grad_B, grad_C, grad_h0

"""The two time loops of :func:`s3cmn.ops.lif.lif_scan` as C loops (its CPU backend).

A LIF layer's loop does a few tiny (B, N) tensor ops per micro-step, so in PyTorch its cost is the Python and
dispatch overhead of T · num_steps iterations, not arithmetic. These loops do the same arithmetic in C, in
the same order and without fused multiply-adds (``EXACT``), so the membrane and the spikes are bit-equal to
the PyTorch loop's (a threshold crossing never flips).
"""

from __future__ import annotations

import ctypes

import torch
from torch import Tensor

from s3cmn.ops.cpu_kernel import EXACT, load_kernel, ptr

__all__ = ["lif_kernel", "lif_charge_loop", "lif_adjoint_loop"]

SOURCE = r"""
/* cur: (T, B, N); beta, thr: (N); v: (B, N), in: V before the first step, out: after the last;
   u_all: (T * S, B, N) the charge U of every micro-step. */
void lif_charge(int T, int S, int B, int N, int zero_reset, const float *cur, const float *beta,
                const float *thr, float *v, float *u_all) {
    const long BN = (long)B * N;
    for (int t = 0; t < T; t++) {
        const float *ct = cur + t * BN;
        for (int k = 0; k < S; k++) {
            float *ut = u_all + ((long)t * S + k) * BN;
            for (int b = 0; b < B; b++) {
                for (int n = 0; n < N; n++) {
                    const long j = (long)b * N + n;
                    const float u = beta[n] * v[j] + ct[j];
                    ut[j] = u;
                    v[j] = u >= thr[n] ? (zero_reset ? 0.0f : u - thr[n]) : u;
                }
            }
        }
    }
}

/* The reverse recurrence gU[k] = a[k]·gV + c[k], gV = β·gU[k] (a NULL: a = 1). a, c, gu_all: (K, B, N);
   gv: (B, N), in: dL/dV after the last step, out: dL/dV0. */
void lif_adjoint(int K, int B, int N, const float *a, const float *c, const float *beta, float *gv,
                 float *gu_all) {
    const long BN = (long)B * N;
    for (int k = K - 1; k >= 0; k--) {
        const float *ck = c + k * BN, *ak = a ? a + k * BN : 0;
        float *gk = gu_all + k * BN;
        for (int b = 0; b < B; b++) {
            for (int n = 0; n < N; n++) {
                const long j = (long)b * N + n;
                const float gu = (ak ? ak[j] * gv[j] : gv[j]) + ck[j];
                gk[j] = gu;
                gv[j] = gu * beta[n];
            }
        }
    }
}
"""

_INT, _PTR = ctypes.c_int, ctypes.c_void_p
SIGNATURES = {"lif_charge": [_INT] * 5 + [_PTR] * 5, "lif_adjoint": [_INT] * 3 + [_PTR] * 5}


def lif_kernel() -> ctypes.CDLL | None:
    """The compiled LIF loops, or None where they cannot be built (the reason is logged once)."""
    return load_kernel("lif", SOURCE, SIGNATURES, EXACT)


def lif_charge_loop(cur: Tensor, beta: Tensor, threshold: Tensor, v0: Tensor, zero_reset: bool, num_steps: int
                    ) -> tuple[Tensor, Tensor]:
    """cur (T, B, N) -> (U of every micro-step (T·S, B, N), V after the last (B, N)); fp32 CPU tensors."""
    T, B, N = cur.shape
    cur, beta, threshold = cur.contiguous(), beta.contiguous(), threshold.contiguous()
    v = v0.clone().contiguous()  # (B, N), updated in place by the kernel
    u_all = cur.new_empty(T * num_steps, B, N)
    lif_kernel().lif_charge(T, num_steps, B, N, int(zero_reset), ptr(cur), ptr(beta), ptr(threshold), ptr(v),
                            ptr(u_all))
    return u_all, v


def lif_adjoint_loop(a_all: Tensor | None, c_all: Tensor, beta: Tensor, g_v: Tensor) -> tuple[Tensor, Tensor]:
    """(gU of every micro-step (K, B, N), dL/dV0 (B, N)) from a, c (K, B, N) (a None: 1) and dL/dV_last."""
    K, B, N = c_all.shape
    c_all, beta = c_all.contiguous(), beta.contiguous()
    a_all = None if a_all is None else a_all.contiguous()  # kept referenced: the kernel reads its memory
    a_ptr = ctypes.c_void_p(None) if a_all is None else ptr(a_all)
    gv = g_v.to(torch.float32, copy=True).contiguous()  # (B, N), updated in place by the kernel
    gu_all = torch.empty_like(c_all)
    lif_kernel().lif_adjoint(K, B, N, a_ptr, ptr(c_all), ptr(beta), ptr(gv), ptr(gu_all))
    return gu_all, gv

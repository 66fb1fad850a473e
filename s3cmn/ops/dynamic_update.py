"""Dynamic evaluation's weight update (:class:`s3cmn.nexttoken.dynamic.DynamicAdapter`) in one pass per tensor.

Krause et al.'s RMS-normalised step with decay back to the trained weights, per element:

    ms ← β·ms + (1 − β)·g²            (β = 1: the held-out MS, fixed)
    p  ← p + rate·(θ₀ − p) − step·g / (√ms + ε)

In PyTorch this is about ten whole-tensor ops per parameter tensor, each a sweep through memory, and a step of
a tiny model touches ~5M weights (the tied 30k-token embedding is most of them): the update took about half of
a dynamic-evaluation step. :func:`dynamic_update` does it in one C pass (two threads for large tensors);
:func:`dynamic_update_ref` is the readable PyTorch twin, and the tests hold them equal.

Both write ``p`` and ``ms`` in place and move their version counters, as an in-place PyTorch op would (the
decode path's caches of derived weights rebuild on that).
"""

from __future__ import annotations

import ctypes
from typing import Literal

import torch
from torch import Tensor

from s3cmn.ops.cpu_kernel import EXACT, KernelUnavailable, load_kernel, parallel_ranges, why_unavailable

__all__ = ["dynamic_update", "dynamic_update_ref"]

SOURCE = r"""
#include <math.h>

/* p, ms: written; theta0, g, rate: read; elements [start, stop). has_g 0: the decay alone. */
void dynamic_update(long start, long stop, float *p, const float *theta0, const float *g, float *ms,
                    const float *rate, float step, float beta, float eps, int has_g, int update_ms) {
    for (long i = start; i < stop; i++) {
        float u = rate[i] * (theta0[i] - p[i]);
        if (has_g) {
            const float gi = g[i];
            float m = ms[i];
            if (update_ms) {
                m = beta * m + (1.0f - beta) * gi * gi;
                ms[i] = m;
            }
            u = u - step * gi / (sqrtf(m) + eps);
        }
        p[i] = p[i] + u;
    }
}
"""

_L, _P, _F, _I = ctypes.c_long, ctypes.c_void_p, ctypes.c_float, ctypes.c_int
SIGNATURES = {"dynamic_update": [_L, _L, _P, _P, _P, _P, _P, _F, _F, _F, _I, _I]}
PARALLEL_MIN = 1 << 16  # elements: below, one thread (a thread hand-off costs more than the pass)


@torch.no_grad()
def dynamic_update_ref(p: Tensor, theta0: Tensor, g: Tensor | None, ms: Tensor, rate: Tensor, step: float,
                       beta: float, eps: float) -> None:
    """The update of the module docstring, op by op (``g`` None: the decay alone)."""
    update = rate * (theta0 - p)
    if g is not None:
        if beta < 1:
            ms.mul_(beta).addcmul_(g, g, value=1 - beta)
        update -= step * g / (ms.sqrt() + eps)
    p.add_(update)


def dynamic_update(p: Tensor, theta0: Tensor, g: Tensor | None, ms: Tensor, rate: Tensor, step: float, beta: float,
                   eps: float, backend: Literal["auto", "c", "torch"] = "auto") -> None:
    """:func:`dynamic_update_ref` in one C pass where every tensor is a contiguous float32 CPU tensor of one shape
    and the kernel builds (``auto``); ``c`` must take it, ``torch`` never does."""
    tensors = [t for t in (p, theta0, g, ms, rate) if t is not None]
    fits = all(t.device.type == "cpu" and t.dtype == torch.float32 and t.is_contiguous() and t.shape == p.shape
               for t in tensors)  # fmt: skip
    lib = load_kernel("dynamic_update", SOURCE, SIGNATURES, EXACT) if fits and backend != "torch" else None
    if lib is None:
        if backend == "c":
            reason = why_unavailable("dynamic_update") or "it takes contiguous float32 CPU tensors of one shape"
            raise KernelUnavailable(f"dynamic_update backend 'c' is unavailable: {reason}")
        dynamic_update_ref(p, theta0, g, ms, rate, step, beta, eps)
        return
    n, has_g = p.numel(), g is not None
    ptrs = [t.data_ptr() if t is not None else None for t in (p, theta0, g, ms, rate)]

    def run(worker: int, start: int, stop: int) -> None:
        lib.dynamic_update(start, stop, *ptrs, step, beta, eps, int(has_g), int(has_g and beta < 1))

    if n >= PARALLEL_MIN:
        parallel_ranges(n, run)
    else:
        run(0, 0, n)
    torch.autograd.graph.increment_version(p)  # written through a pointer: the version moves as in-place ops do
    if has_g and beta < 1:
        torch.autograd.graph.increment_version(ms)

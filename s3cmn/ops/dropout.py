"""Dropout whose mask is a hash of the element index: drawn and applied in one C pass, regenerated in backward.

Why: PyTorch's CPU dropout draws its mask from a sequential generator, about 6 ns an element, then multiplies:
on two AVX2 cores one (8, 512, 256) activation takes ~19 ms, and a training step of the small preset drops out
25 of them (~6% of the step, measured with the profiler). Here element ``i`` (of the contiguous tensor) is kept
iff ``mix(mix(i) ^ seed) >= t`` with ``t = round(p · 2³²)``, where ``mix`` is a 32-bit integer hash
(lowbias32, C. Wellons): every element is independent of the others, so the kernel is one vectorised loop over
the tensor, and backward recomputes the mask from the seed instead of storing it. The kept elements are scaled by
``1 / (1 - t / 2³²)``, the exact inverse of the keep probability, so ``E[dropout(x)] = x``.

The seed is drawn from PyTorch's default generator (``torch.manual_seed`` makes a run repeatable, as with
``F.dropout``); the masks differ from ``F.dropout``'s. :func:`dropout_ref` is the readable twin (the same hash in
int64 tensor ops: the same masks, bit-equal results).

Backends (``backend``): "c" (must), "torch" (``F.dropout``), "auto": the C kernel for float32 / bfloat16 CPU
tensors where it builds, ``F.dropout`` elsewhere (other devices and dtypes, tensors of 2³² elements or more,
inside ``torch.compile``, where the kernel cannot be traced); a missing kernel is logged once.
"""

from __future__ import annotations

import ctypes

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from s3cmn.ops.cpu_kernel import EXACT, Backend, KernelUnavailable, load_kernel, parallel_ranges, why_unavailable

__all__ = ["Dropout", "dropout", "dropout_kernel", "dropout_ref", "keep_threshold"]

SOURCE = r"""
#include <stdint.h>

static inline uint32_t mix(uint32_t x) {  /* lowbias32 */
    x ^= x >> 16; x *= 0x7feb352dU; x ^= x >> 15; x *= 0x846ca68bU; x ^= x >> 16;
    return x;
}

/* y[i] = x[i] * (scale if mix(mix(i) ^ seed) >= t else 0), for i0 <= i < i1 (a dropped NaN stays NaN, as in
   F.dropout, which multiplies by its mask). */
void dropout_f32(long i0, long i1, uint32_t seed, uint32_t t, float scale, const float *restrict x,
                 float *restrict y) {
    for (long i = i0; i < i1; i++) y[i] = x[i] * (mix(mix((uint32_t)i) ^ seed) >= t ? scale : 0.0f);
}

/* The same on bfloat16 bits: the product in float32, rounded to nearest even (as PyTorch's bf16 multiply). */
void dropout_bf16(long i0, long i1, uint32_t seed, uint32_t t, float scale, const uint16_t *restrict x,
                  uint16_t *restrict y) {
    for (long i = i0; i < i1; i++) {
        union { uint32_t u; float f; } v;
        v.u = (uint32_t)x[i] << 16;
        v.f = v.f * (mix(mix((uint32_t)i) ^ seed) >= t ? scale : 0.0f);
        if ((v.u & 0x7fffffffU) > 0x7f800000U) y[i] = (uint16_t)((v.u >> 16) | 0x40);  /* NaN stays a quiet NaN */
        else y[i] = (uint16_t)((v.u + 0x7fffU + ((v.u >> 16) & 1U)) >> 16);
    }
}
"""
_LONG, _U32, _FLOAT, _PTR = ctypes.c_long, ctypes.c_uint32, ctypes.c_float, ctypes.c_void_p
SIGNATURES = {name: [_LONG, _LONG, _U32, _U32, _FLOAT, _PTR, _PTR] for name in ("dropout_f32", "dropout_bf16")}
KERNELS = {torch.float32: "dropout_f32", torch.bfloat16: "dropout_bf16"}
PARALLEL_MIN_ELEMENTS = 2**16  # split across threads above this (below, a thread hand-off costs more than the loop)
MAX_ELEMENTS = 2**32  # the index is hashed as 32 bits: larger tensors use F.dropout
_MASK32 = 0xFFFFFFFF


def dropout_kernel() -> ctypes.CDLL | None:
    """The compiled kernel, or None where it cannot be built (the reason is logged once)."""
    # no fast-math: it would let the compiler turn x * 0 into 0 and lose a NaN
    return load_kernel("dropout", SOURCE, SIGNATURES, EXACT)


def keep_threshold(p: float) -> tuple[int, float]:
    """(t, scale): element i is kept iff its hash >= t; kept elements are scaled by 1 / P(kept) = 2³² / (2³² - t)."""
    t = min(round(p * 2**32), 2**32 - 1)
    return t, 2**32 / (2**32 - t)


def _mix(x: Tensor) -> Tensor:
    """lowbias32 on uint32 values held in int64 (products wrap mod 2⁶⁴; the mask keeps their low 32 bits)."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _MASK32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _MASK32
    return x ^ (x >> 16)


def dropout_ref(x: Tensor, p: float, seed: int) -> Tensor:
    """The kernel's dropout in tensor ops: element i (row-major) kept iff mix(mix(i) ^ seed) >= t, times the scale."""
    t, scale = keep_threshold(p)
    index = torch.arange(x.numel(), dtype=torch.int64, device=x.device)
    keep = (_mix(_mix(index) ^ seed) >= t).view(x.shape)
    # the product in float32 (bfloat16 x is promoted), rounded to x's dtype once: as the kernel does
    return (x * torch.where(keep, scale, 0.0)).to(x.dtype)


def _apply_c(lib: ctypes.CDLL, x: Tensor, p: float, seed: int) -> Tensor:
    t, scale = keep_threshold(p)
    x = x.contiguous()
    y = torch.empty_like(x)
    fn, n = getattr(lib, KERNELS[x.dtype]), x.numel()
    src, dst = x.data_ptr(), y.data_ptr()

    def run(_worker: int, i0: int, i1: int) -> None:
        fn(i0, i1, seed, t, scale, src, dst)

    if n >= PARALLEL_MIN_ELEMENTS:
        parallel_ranges(n, run)
    else:
        run(0, 0, n)
    return y


class _HashDropout(torch.autograd.Function):
    """y = mask ⊙ x · scale; backward applies the same mask (regenerated from the seed) to the gradient."""

    @staticmethod
    def forward(ctx, x: Tensor, p: float, seed: int, lib: ctypes.CDLL) -> Tensor:  # type: ignore[override]
        ctx.p, ctx.seed, ctx.lib = p, seed, lib
        return _apply_c(lib, x, p, seed)

    @staticmethod
    @once_differentiable  # the C pass has no graph: a second derivative is an error, not a silent zero
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        return _apply_c(ctx.lib, grad, ctx.p, ctx.seed), None, None, None


def _kernel_for(x: Tensor, backend: Backend) -> ctypes.CDLL | None:
    """The C kernel if ``backend`` and ``x`` call for it (None: F.dropout); raises for an impossible "c"."""
    if backend == "torch":
        return None
    fits = x.device.type == "cpu" and x.dtype in KERNELS and x.numel() < MAX_ELEMENTS
    if backend == "c" and not fits:
        raise ValueError(f"dropout backend 'c' takes float32 or bfloat16 CPU tensors of fewer than 2^32 elements, "
                         f"got {x.dtype} on {x.device} with {x.numel()} elements")
    if not fits or torch.compiler.is_compiling():
        return None
    lib = dropout_kernel()
    if lib is None and backend == "c":
        raise KernelUnavailable(f"dropout backend 'c' is unavailable: {why_unavailable('dropout')}")
    return lib


def _check_p(p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")


def dropout(x: Tensor, p: float, training: bool = True, backend: Backend = "auto") -> Tensor:
    """``F.dropout(x, p, training)`` with the hashed mask of the module docstring (``backend`` as it says)."""
    _check_p(p)
    if not training or p == 0.0:
        return x
    lib = _kernel_for(x, backend)
    if lib is None or p == 1.0:
        return F.dropout(x, p, training)
    seed = int(torch.randint(0, 2**32, (), dtype=torch.int64))  # from the default generator: seeded runs repeat
    return _HashDropout.apply(x, p, seed, lib)


class Dropout(nn.Module):
    """``nn.Dropout`` through :func:`dropout` (the hashed-mask kernel on the CPU); no parameters, no buffers."""

    def __init__(self, p: float = 0.5, backend: Backend = "auto") -> None:
        super().__init__()
        _check_p(p)  # at construction, so a bad setting fails before training starts
        self.p, self.backend = p, backend

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training, self.backend)

    def extra_repr(self) -> str:
        return f"p={self.p}, backend={self.backend}"

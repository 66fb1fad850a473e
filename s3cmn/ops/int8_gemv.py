"""Weight-only int8 GEMV for decoding: y = x · Wᵀ with W = (q − zero_point) · scale per output row.

Generating one token multiplies one row by every weight of the model, so the time is the time to read the
weights. fbgemm's dynamic int8 linear (``torch.ops.quantized.linear_dynamic``) also quantises the input and
requantises per call, and on two cores its threads often wait longer than the arithmetic takes. This kernel
reads the int8 codes once, converts them to float in registers and accumulates in float32 (the input stays
float: more accurate than the dynamic path), a quarter of the bytes of an fp32 GEMV. Rows of the output are
split across :func:`~s3cmn.ops.cpu_kernel.parallel_ranges` threads when the weight is large.

``int8_gemv_ref`` is the readable twin (dequantise, matmul).
"""

from __future__ import annotations

import ctypes

import torch
from torch import Tensor

from s3cmn.ops.cpu_kernel import FAST_MATH, Backend, KernelUnavailable, load_kernel, parallel_ranges, why_unavailable

__all__ = ["int8_gemv", "int8_gemv_kernel", "int8_gemv_ref", "unpack_linear_dynamic"]

SOURCE = r"""
#include <stdint.h>

/* x: (B, C) float; q: (R, C) int8 codes; scale, zp: (R); bias: (R) or NULL; y: (B, R). Rows r0 <= r < r1. */
void int8_gemv(int B, int R, int C, int r0, int r1, const float *x, const int8_t *q, const float *scale,
               const float *zp, const float *bias, float *y) {
    for (int b = 0; b < B; b++) {
        const float *xb = x + (long)b * C;
        float sx = 0.0f;
        for (int c = 0; c < C; c++) sx += xb[c];
        for (int r = r0; r < r1; r++) {
            const int8_t *qr = q + (long)r * C;
            float acc = 0.0f;
            for (int c = 0; c < C; c++) acc += (float)qr[c] * xb[c];
            float v = scale[r] * (acc - zp[r] * sx);
            y[(long)b * R + r] = bias ? v + bias[r] : v;
        }
    }
}
"""
_INT, _PTR = ctypes.c_int, ctypes.c_void_p
SIGNATURES = {"int8_gemv": [_INT] * 5 + [_PTR] * 6}
PARALLEL_MIN_WEIGHTS = 2**21  # split rows across threads only above 2M weights (the LM head, not a block's layer)


def int8_gemv_kernel() -> ctypes.CDLL | None:
    """The compiled kernel, or None where it cannot be built (the reason is logged once)."""
    return load_kernel("int8_gemv", SOURCE, SIGNATURES, FAST_MATH)


def int8_gemv_ref(x: Tensor, q: Tensor, scale: Tensor, zero_point: Tensor, bias: Tensor | None = None) -> Tensor:
    """x (..., C) float -> (..., R): x · ((q − zero_point) · scale)ᵀ + bias, q (R, C) int8, scale/zero_point (R,)."""
    weight = (q.float() - zero_point.float()[:, None]) * scale.float()[:, None]  # (R, C)
    y = x.float() @ weight.T
    return y if bias is None else y + bias


def int8_gemv(x: Tensor, q: Tensor, scale: Tensor, zero_point: Tensor, bias: Tensor | None = None,
              backend: Backend = "auto") -> Tensor:
    """:func:`int8_gemv_ref` for float32 CPU inputs in one C pass over the codes ("auto": where it builds)."""
    lib = None if backend == "torch" or x.device.type != "cpu" else int8_gemv_kernel()
    if lib is None:
        if backend == "c":
            raise KernelUnavailable(f"int8_gemv backend 'c' is unavailable: {why_unavailable('int8_gemv')}")
        return int8_gemv_ref(x, q, scale, zero_point, bias)
    R, C = q.shape
    x2 = x.reshape(-1, C).float().contiguous()  # (B, C)
    q, scale = q.contiguous(), scale.float().contiguous()
    zp = zero_point.float().contiguous()
    b = None if bias is None else bias.float().contiguous()
    y = x2.new_empty(x2.shape[0], R)
    args = (x2.data_ptr(), q.data_ptr(), scale.data_ptr(), zp.data_ptr(), None if b is None else b.data_ptr(),
            y.data_ptr())

    def run(_worker: int, r0: int, r1: int) -> None:
        lib.int8_gemv(x2.shape[0], R, C, r0, r1, *args)

    if R * C >= PARALLEL_MIN_WEIGHTS:
        parallel_ranges(R, run)
    else:
        run(0, 0, R)
    return y.view(*x.shape[:-1], R)


def unpack_linear_dynamic(packed: torch.ScriptObject) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """The codes (R, C) int8, scale (R,), zero point (R,) and bias of a packed dynamic int8 linear
    (``torch.ao.nn.quantized.dynamic.Linear._packed_params._packed_params``)."""
    qweight, bias = torch.ops.quantized.linear_unpack(packed)
    rows = qweight.shape[0]
    if qweight.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
        scale, zero_point = qweight.q_per_channel_scales().float(), qweight.q_per_channel_zero_points().float()
    else:
        scale = torch.full((rows,), qweight.q_scale(), dtype=torch.float32)
        zero_point = torch.full((rows,), float(qweight.q_zero_point()))
    return qweight.int_repr().contiguous(), scale.contiguous(), zero_point.contiguous(), bias

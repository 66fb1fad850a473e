"""s3cmn.ops.int8_gemv: the C weight-only int8 GEMV equals its dequantise-then-matmul reference (one row and a
few, with and without bias, split across threads for a large weight), and reads torch's packed dynamic
int8 Linear codes back exactly."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from s3cmn.ops.int8_gemv import PARALLEL_MIN_WEIGHTS, int8_gemv, int8_gemv_kernel, int8_gemv_ref, unpack_linear_dynamic

pytestmark = pytest.mark.skipif(int8_gemv_kernel() is None, reason="no C compiler here: the kernel cannot be built")


@pytest.mark.parametrize("rows,R,C,bias", [(1, 40, 24, True), (3, 33, 17, False), (1, 2**12, 2**9 + 3, True)])
def test_c_equals_reference(rows: int, R: int, C: int, bias: bool) -> None:
    g = torch.Generator().manual_seed(R)
    x = torch.randn(rows, C, generator=g)
    q = torch.randint(-128, 128, (R, C), generator=g, dtype=torch.int8)
    scale, zp = torch.rand(R, generator=g) * 0.01, torch.randint(-5, 5, (R,), generator=g).float()
    b = torch.randn(R, generator=g) if bias else None
    torch.testing.assert_close(int8_gemv(x, q, scale, zp, b, backend="c"), int8_gemv_ref(x, q, scale, zp, b),
                               rtol=1e-4, atol=1e-4)
    assert (R * C >= PARALLEL_MIN_WEIGHTS) == (R == 2**12)  # the large case runs on every thread


def test_unpacks_torch_dynamic_linear_codes() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(20, 12)
    dynamic = torch.ao.quantization.quantize_dynamic(nn.Sequential(linear), {nn.Linear}, dtype=torch.qint8)[0]
    q, scale, zp, bias = unpack_linear_dynamic(dynamic._packed_params._packed_params)
    assert q.dtype == torch.int8 and q.shape == (12, 20)
    weight = (q.float() - zp[:, None]) * scale[:, None]
    torch.testing.assert_close(weight, linear.weight, atol=scale.max().item(), rtol=0)  # within one step
    torch.testing.assert_close(bias, linear.bias)

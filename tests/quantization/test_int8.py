"""Per-row int8 weights: the rounding bound, Int8Embedding, Int8Linear's two kernels, a tied head's storage."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from s3cmn.quantization.int8 import (
    Int8Embedding,
    Int8Linear,
    dequantize_rows,
    fbgemm_available,
    int8_linear_ref,
    quantize_rows,
)


def test_rounding_error_is_at_most_half_a_step_per_weight() -> None:
    w = torch.randn(300, 64) * torch.rand(300, 1) + 0.3 * torch.randn(300, 1)  # rows of varied scale and offset
    w[0] = 0.0  # an all-zero row
    w[1] = torch.linspace(0.1, 2.0, 64)  # all positive: zero must still be representable
    q, scale, zero_point = quantize_rows(w)
    assert q.dtype == torch.int8 and scale.shape == zero_point.shape == (300,)
    error = (dequantize_rows(q, scale, zero_point) - w).abs()  # (R, C)
    assert (error <= scale[:, None] / 2 * (1 + 1e-5) + 1e-7).all()
    assert error[0].max() == 0
    assert dequantize_rows(q, scale, zero_point)[:, :1].isfinite().all()
    # zero maps to an integer code exactly
    zero = (torch.zeros(300) / scale + zero_point).round()
    torch.testing.assert_close(dequantize_rows(zero.to(torch.int8)[:, None], scale, zero_point)[:, 0],
                               torch.zeros(300), atol=1e-7, rtol=0)  # fmt: skip


def test_int8_embedding_is_the_dequantised_table() -> None:
    emb = nn.Embedding(100, 16)
    q8 = Int8Embedding.from_float(emb)
    ids = torch.randint(0, 100, (3, 7))
    torch.testing.assert_close(q8(ids), q8.dequantize()[ids], atol=0, rtol=0)
    assert (q8(ids) - emb(ids)).abs().max() <= q8.scale.max() / 2 + 1e-7
    assert {k: v.dtype for k, v in q8.state_dict().items()} == {
        "weight_int8": torch.int8, "scale": torch.float32, "zero_point": torch.int8
    }  # fmt: skip


def test_tied_head_shares_the_embedding_codes() -> None:
    q8 = Int8Embedding.from_float(nn.Embedding(50, 8))
    head = Int8Linear.tied_to(q8, kernel="weight_only")
    assert head.codes()[0].data_ptr() == q8.weight_int8.data_ptr()
    assert dict(head.state_dict()) == {}  # nothing of its own: stored once, in the embedding
    x = torch.randn(2, 5, 8)
    torch.testing.assert_close(head(x), x @ q8.dequantize().T, atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(not fbgemm_available(), reason="no fbgemm/x86 int8 engine")
def test_dynamic_kernel_agrees_with_the_weight_only_reference() -> None:
    """fbgemm quantises the input per tensor to 7 bits (reduce_range): each input value moves by at most half
    a step s_x = (max x - min x) / 127, so output r moves by at most s_x / 2 * sum_c |W_rc|."""
    torch.manual_seed(0)
    lin = nn.Linear(64, 300, bias=False)
    head = Int8Linear.from_float(lin, kernel="dynamic")
    x = torch.randn(16, 64)  # more rows than DECODE_ROWS: fbgemm's path (fewer take the weight-only GEMV)
    ref = head.forward_ref(x)
    torch.testing.assert_close(ref, int8_linear_ref(x, *head.codes()), atol=0, rtol=0)
    step = (x.max().clamp(min=0) - x.min().clamp(max=0)) / 127
    bound = step / 2 * dequantize_rows(*head.codes()).abs().sum(1)  # (R,)
    assert ((head(x) - ref).abs() <= bound * 1.01 + 1e-6).all()
    # the packed copy follows the codes when they change in place
    other = Int8Linear.from_float(nn.Linear(64, 300, bias=False), kernel="dynamic")
    for name in ("weight_int8", "scale", "zero_point"):
        getattr(head, name).copy_(getattr(other, name))
    torch.testing.assert_close(head(x), other(x), atol=0, rtol=0)


def test_a_biased_linear_keeps_its_bias() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(4, 5, bias=True)
    layer = Int8Linear.from_float(lin, kernel="weight_only")
    torch.testing.assert_close(layer.bias, lin.bias.detach())
    for rows in (1, 20):  # the decode GEMV and the dequantised matmul
        x = torch.randn(rows, 4)
        torch.testing.assert_close(layer(x), layer.forward_ref(x), rtol=1e-5, atol=1e-5)

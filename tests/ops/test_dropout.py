"""The hashed-mask dropout: the C kernel against its readable twin, its statistics, its seeding, its errors."""

import pytest
import torch
import torch.nn.functional as F

from s3cmn.ops.dropout import Dropout, _HashDropout, dropout, dropout_kernel, dropout_ref, keep_threshold

pytestmark = pytest.mark.skipif(dropout_kernel() is None, reason="no C compiler for the dropout kernel")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("p", [0.1, 0.5])
def test_the_kernel_equals_its_reference_forward_and_backward_bit_for_bit(dtype, p):
    torch.manual_seed(0)
    x = torch.randn(6, 40, 33).to(dtype).transpose(1, 2)  # (B, E, T): not contiguous
    x[0, 0, :3] = torch.tensor([float("nan"), float("inf"), -0.0])
    upstream = torch.randn(x.shape).to(dtype)
    fast_x, ref_x = x.clone().requires_grad_(), x.clone().requires_grad_()
    fast = _HashDropout.apply(fast_x, p, 987654321, dropout_kernel())
    ref = dropout_ref(ref_x, p, 987654321)
    torch.testing.assert_close(fast, ref, rtol=0, atol=0, equal_nan=True)
    fast.backward(upstream)
    ref.backward(upstream)
    torch.testing.assert_close(fast_x.grad, ref_x.grad, rtol=0, atol=0, equal_nan=True)
    assert fast.dtype == dtype and fast.shape == x.shape


def test_a_dropped_nan_stays_nan_as_in_f_dropout():
    x = torch.full((4096,), float("nan"))
    assert torch.isnan(_HashDropout.apply(x, 0.5, 1, dropout_kernel())).all()


def test_the_mask_keeps_one_minus_p_of_the_elements_independently_and_keeps_the_mean():
    torch.manual_seed(1)
    p, ones = 0.1, torch.ones(1 << 20)
    y = dropout(ones, p)
    kept = (y != 0).float()  # (N,)
    _, scale = keep_threshold(p)
    assert y.unique().tolist() == [0.0, pytest.approx(scale)]
    assert abs(float(kept.mean()) - (1 - p)) < 2e-3  # binomial std 3e-4
    assert abs(float(y.mean()) - 1.0) < 3e-3  # E[dropout(x)] = x
    assert abs(float((kept[:-1] * kept[1:]).mean()) - (1 - p) ** 2) < 3e-3  # neighbours independent
    assert abs(float((kept[:-1024] * kept[1024:]).mean()) - (1 - p) ** 2) < 3e-3


def test_seeded_runs_repeat_and_successive_calls_draw_new_masks():
    x = torch.randn(3, 70_000)  # above the size split across threads
    torch.manual_seed(5)
    first, second = dropout(x, 0.3), dropout(x, 0.3)
    torch.manual_seed(5)
    assert torch.equal(dropout(x, 0.3), first)
    assert not torch.equal(first, second)


def test_eval_mode_p_zero_and_other_backends():
    x = torch.randn(2, 8)
    assert dropout(x, 0.5, training=False) is x and dropout(x, 0.0) is x
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))
    torch.manual_seed(2)
    expected = F.dropout(x, 0.5)
    torch.manual_seed(2)
    assert torch.equal(dropout(x, 0.5, backend="torch"), expected)
    assert dropout(x.double(), 0.5).dtype == torch.float64  # "auto": F.dropout for a dtype the kernel lacks
    with pytest.raises(ValueError, match="float32 or bfloat16"):
        dropout(x.double(), 0.5, backend="c")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        dropout(x, 1.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        Dropout(-0.1)


def test_the_module_drops_in_training_only_and_has_no_state():
    layer = Dropout(0.25)
    x = torch.randn(4, 64, requires_grad=True)
    y = layer(x)
    assert (y == 0).any() and layer.state_dict() == {} and "p=0.25" in repr(layer)
    y.sum().backward()
    assert torch.equal(x.grad == 0, y == 0)  # the gradient passes where the input did
    layer.eval()
    assert layer(x) is x

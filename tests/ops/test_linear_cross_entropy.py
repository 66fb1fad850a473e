"""The chunked LM-head cross-entropy equals the plain one, values and gradients."""

from __future__ import annotations

import pytest
import torch

from s3cmn.ops.linear_cross_entropy import linear_cross_entropy, linear_cross_entropy_ref


def _inputs(n: int, e: int, v: int, ignored: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    hidden = torch.randn(n, e, requires_grad=True)
    weight = (torch.randn(v, e) * 0.3).requires_grad_()
    targets = torch.randint(0, v, (n,))
    targets[torch.randperm(n)[:ignored]] = -100
    return hidden, weight, targets


def _loss_and_grads(fn, hidden, weight, targets, **kw):
    hidden.grad = weight.grad = None
    loss = fn(hidden, weight, targets, **kw)
    (loss * 1.7).backward()  # a non-unit incoming gradient
    return loss.detach(), hidden.grad.clone(), weight.grad.clone()


@pytest.mark.parametrize("chunk_rows", [None, 1, 7, 64])
@pytest.mark.parametrize("ignored", [0, 9])
def test_equals_plain_cross_entropy(chunk_rows: int | None, ignored: int) -> None:
    hidden, weight, targets = _inputs(n=37, e=16, v=101, ignored=ignored)
    ref = _loss_and_grads(linear_cross_entropy_ref, hidden, weight, targets)
    kw = {"chunk_rows": chunk_rows} if chunk_rows else {}
    fast = _loss_and_grads(linear_cross_entropy, hidden, weight, targets, **kw)
    for a, b in zip(fast, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_targets_whose_probability_underflows_float32() -> None:
    # logit gaps of hundreds of nats: softmax(z)[y] is 0 in float32, the loss still equals the log-softmax one
    hidden, weight, targets = _inputs(n=12, e=8, v=40, ignored=2)
    with torch.no_grad():
        hidden.mul_(60.0)
    ref = _loss_and_grads(linear_cross_entropy_ref, hidden, weight, targets)
    assert ref[0] > 100  # the case is real: some target probabilities are far below 1e-30
    fast = _loss_and_grads(linear_cross_entropy, hidden, weight, targets, chunk_rows=5)
    for a, b in zip(fast, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_gradient_of_hidden_only_and_no_grad() -> None:
    hidden, weight, targets = _inputs(n=20, e=8, v=50)
    weight.requires_grad_(False)
    hidden.grad = None
    linear_cross_entropy(hidden, weight, targets, chunk_rows=6).backward()
    expected = torch.autograd.grad(linear_cross_entropy_ref(hidden, weight, targets), hidden)[0]
    torch.testing.assert_close(hidden.grad, expected, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(linear_cross_entropy(hidden, weight, targets),
                                   linear_cross_entropy_ref(hidden, weight, targets), rtol=1e-5, atol=1e-5)


def test_all_rows_ignored_gives_nan_like_cross_entropy() -> None:
    hidden, weight, targets = _inputs(n=5, e=4, v=11)
    targets[:] = -100
    assert torch.isnan(linear_cross_entropy(hidden, weight, targets))
    assert torch.isnan(linear_cross_entropy_ref(hidden, weight, targets))


def test_under_bf16_autocast_matches_the_plain_autocast_path() -> None:
    hidden, weight, targets = _inputs(n=24, e=16, v=64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = _loss_and_grads(linear_cross_entropy_ref, hidden, weight, targets)
        fast = _loss_and_grads(linear_cross_entropy, hidden, weight, targets, chunk_rows=5)
    assert fast[1].dtype == torch.float32 and fast[2].dtype == torch.float32  # grads in the leaves' dtype
    for a, b in zip(fast, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-2)


def test_shape_errors_are_clear() -> None:
    hidden, weight, targets = _inputs(n=5, e=4, v=11)
    with pytest.raises(ValueError, match="expected hidden"):
        linear_cross_entropy(hidden[None], weight, targets)

"""S4D maths: ZOH discretisation and the factorised Vandermonde products against their materialised refs."""

import math

import pytest
import torch

from s3cmn.ops.s4d_kernel import (
    s4d_discretize,
    vandermonde_reduce,
    vandermonde_reduce_ref,
    vandermonde_sum,
    vandermonde_sum_ref,
)


def _dtA(D: int = 3, N: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    log_dt = (torch.rand(D, generator=g) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)).requires_grad_()
    A = torch.complex(-0.5 - torch.rand(D, N, generator=g), math.pi * torch.arange(N).float().repeat(D, 1))
    return log_dt, A.requires_grad_()


def test_discretize_is_zoh():
    """Ā = exp(ΔA), B̄ = (Ā − 1)/A; for a scalar real A the ZOH integral ∫_0^Δ exp(sA) ds."""
    log_dt = torch.tensor([math.log(0.3)])
    A = torch.tensor([[-2.0 + 0j]])
    dtA, A_bar, B_bar = s4d_discretize(log_dt, A)
    assert dtA.item() == pytest.approx(-0.6)
    assert A_bar.real.item() == pytest.approx(math.exp(-0.6))
    assert B_bar.real.item() == pytest.approx((1 - math.exp(-0.6)) / 2.0, rel=1e-6)


@pytest.mark.parametrize("L", [1, 2, 7, 16, 50])
def test_vandermonde_sum_matches_ref(L):
    log_dt, A = _dtA()
    g = torch.Generator().manual_seed(1)
    coef = torch.randn(2, 3, 5, generator=g, dtype=torch.cfloat).requires_grad_()

    def run(fn):
        dtA, _, _ = s4d_discretize(log_dt, A)
        out = fn(coef, dtA, L)
        w = torch.randn(out.shape, generator=torch.Generator().manual_seed(2), dtype=torch.cfloat)
        return out, torch.autograd.grad((out * w).real.sum(), [coef, log_dt, A])

    out, grads = run(vandermonde_sum)
    out_ref, grads_ref = run(vandermonde_sum_ref)
    assert out.shape == (2, 3, L)
    torch.testing.assert_close(out, out_ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("L", [1, 3, 16, 50])
def test_vandermonde_reduce_matches_ref(L):
    log_dt, A = _dtA()
    w = torch.randn(2, 3, L, generator=torch.Generator().manual_seed(1)).requires_grad_()

    def run(fn):
        dtA, _, _ = s4d_discretize(log_dt, A)
        out = fn(w, dtA)
        v = torch.randn(out.shape, generator=torch.Generator().manual_seed(2), dtype=torch.cfloat)
        return out, torch.autograd.grad((out * v).real.sum(), [w, log_dt, A])

    out, grads = run(vandermonde_reduce)
    out_ref, grads_ref = run(vandermonde_reduce_ref)
    assert out.shape == (2, 3, 5)
    torch.testing.assert_close(out, out_ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_vandermonde_ref_is_powers():
    """The reference itself: Σ_n c_n Ā_n^l by repeated multiplication."""
    log_dt, A = _dtA(1, 2)
    dtA, A_bar, _ = s4d_discretize(log_dt.detach(), A.detach())
    coef = torch.tensor([[1.0 + 2j, -0.5 + 0.1j]])
    out = vandermonde_sum_ref(coef, dtA, 4)
    power = torch.ones_like(A_bar)
    for l in range(4):
        torch.testing.assert_close(out[0, l], (coef * power).sum(), rtol=1e-6, atol=1e-6)
        power = power * A_bar

"""Contracts of the spike function: exact step forward, analytic surrogate backward, finite differences."""

import math

import pytest
import torch

from s3cmn.ops.surrogate import SURROGATES, spike_fn, surrogate_grad, surrogate_primitive

ALPHA = 2.0


def _analytic(x: torch.Tensor, name: str, a: float) -> torch.Tensor:
    """The surrogate derivatives written out independently of the library."""
    if name == "atan":
        return a / 2 / (1 + (math.pi / 2 * a * x) ** 2)
    if name == "fast_sigmoid":
        return 1 / (a * x.abs() + 1) ** 2
    return torch.where(x.abs() < 1 / a, a * (1 - a * x.abs()), torch.zeros_like(x))


@pytest.mark.parametrize("name", SURROGATES)
def test_forward_is_the_exact_step(name):
    x = torch.tensor([-3.0, -1e-7, 0.0, 1e-7, 0.5, 7.0])
    s = spike_fn(x, name, ALPHA)
    assert s.dtype == x.dtype
    assert s.tolist() == [0.0, 0.0, 1.0, 1.0, 1.0, 1.0]


@pytest.mark.parametrize("name", SURROGATES)
@pytest.mark.parametrize("alpha", [0.7, 2.0, 5.0])
def test_backward_is_the_analytic_surrogate(name, alpha):
    x = torch.linspace(-3, 3, 61, requires_grad=True)
    g_out = torch.linspace(0.5, 1.5, 61)
    (g,) = torch.autograd.grad(spike_fn(x, name, alpha), x, g_out)
    torch.testing.assert_close(g, g_out * _analytic(x.detach(), name, alpha))
    torch.testing.assert_close(surrogate_grad(x.detach(), name, alpha), _analytic(x.detach(), name, alpha))


@pytest.mark.parametrize("name", SURROGATES)
def test_backward_matches_finite_differences_of_the_primitive(name):
    # points away from the triangular's kinks at 0 and ±1/alpha
    x = torch.tensor([-2.3, -0.61, -0.17, 0.11, 0.29, 0.77, 1.9], dtype=torch.float64)
    # 1. the smooth primitive's autograd gradient is right (gradcheck = finite differences)
    primitive = lambda z: surrogate_primitive(z, name, ALPHA)  # noqa: E731
    assert torch.autograd.gradcheck(primitive, (x.clone().requires_grad_(),))
    # 2. the spike's backward equals the central difference of the primitive
    h = 1e-6
    fd = (surrogate_primitive(x + h, name, ALPHA) - surrogate_primitive(x - h, name, ALPHA)) / (2 * h)
    xr = x.clone().requires_grad_()
    (g,) = torch.autograd.grad(spike_fn(xr, name, ALPHA).sum(), xr)
    torch.testing.assert_close(g, fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", ["atan", "triangular"])
def test_normalised_primitives_go_from_0_to_1(name):
    ends = surrogate_primitive(torch.tensor([-1e6, 1e6], dtype=torch.float64), name, ALPHA)
    torch.testing.assert_close(ends, torch.tensor([0.0, 1.0], dtype=torch.float64), rtol=0, atol=1e-6)


def test_triangular_has_compact_support():
    x = torch.tensor([-0.6, -0.5, 0.5, 0.6])
    assert torch.all(surrogate_grad(x, "triangular", ALPHA) == 0)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="unknown surrogate"):
        spike_fn(torch.zeros(2), "sigmoid", 1.0)
    with pytest.raises(ValueError, match="alpha"):
        spike_fn(torch.zeros(2), "atan", 0.0)

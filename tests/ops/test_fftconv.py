"""Contracts of the FFT causal convolution: fast == direct (forward, backward), causality, no wrap-around."""

import pytest
import torch

from s3cmn.ops.fftconv import fft_causal_conv, fft_causal_conv_ref, next_fast_len


def _smooth(n: int) -> bool:
    for p in (2, 3, 5):
        while n % p == 0:
            n //= p
    return n == 1


def test_next_fast_len_is_the_smallest_5_smooth_length():
    for n in range(1, 300):
        m = next_fast_len(n)
        assert m >= n and _smooth(m)
        assert all(not _smooth(j) for j in range(n, m))
    assert next_fast_len(2 * 1000 - 1) == 2000


@pytest.mark.parametrize("T,L", [(16, 5), (16, 16), (16, 40), (37, 37), (1, 3), (23, 1)])
@pytest.mark.parametrize("with_bias", [False, True])
def test_fast_matches_direct_forward_and_backward(T, L, with_bias):
    g = torch.Generator().manual_seed(T * 100 + L)
    B, D = 2, 3
    u = torch.randn(B, D, T, generator=g, requires_grad=True)
    k = torch.randn(D, L, generator=g, requires_grad=True)
    bias = torch.randn(D, generator=g, requires_grad=True) if with_bias else None
    w = torch.randn(B, D, T, generator=g)
    outs = []
    for fn in (fft_causal_conv, fft_causal_conv_ref):
        y = fn(u, k, bias)
        leaves = [u, k] + ([bias] if with_bias else [])
        grads = torch.autograd.grad((y * w).sum(), leaves)
        outs.append((y, grads))
    (y_fast, g_fast), (y_ref, g_ref) = outs
    assert y_fast.shape == (B, D, T)
    # FFT rounding is relative to the whole signal, so an absolute tolerance scaled to its size
    torch.testing.assert_close(y_fast, y_ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(g_fast, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    if L > T:  # taps beyond T get no gradient
        assert torch.all(g_fast[1][:, T:] == 0)


def test_explicit_sum_definition_in_float64():
    g = torch.Generator().manual_seed(0)
    u = torch.randn(1, 2, 9, generator=g, dtype=torch.float64)
    k = torch.randn(2, 4, generator=g, dtype=torch.float64)
    bias = torch.randn(2, generator=g, dtype=torch.float64)
    y = fft_causal_conv(u, k, bias)
    expected = torch.zeros_like(u)
    for t in range(9):
        for s in range(min(t + 1, 4)):
            expected[..., t] += k[:, s] * u[..., t - s]
    expected += bias[:, None] * u
    torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12)
    assert y.dtype == torch.float64


def test_impulse_response_is_the_truncated_filter():
    T, L = 12, 20
    k = torch.randn(3, L, generator=torch.Generator().manual_seed(1))
    u = torch.zeros(1, 3, T)
    u[..., 0] = 1
    torch.testing.assert_close(fft_causal_conv(u, k)[0], k[:, :T], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("L", [8, 32, 64])
def test_causal_and_no_wraparound(L):
    """Changing inputs after t leaves outputs up to t unchanged, even for a filter as long as the sequence."""
    g = torch.Generator().manual_seed(2)
    T, t0 = 32, 13
    u = torch.randn(2, 4, T, generator=g)
    k = torch.randn(4, L, generator=g)
    u2 = u.clone()
    u2[..., t0 + 1 :] += 100 * torch.randn(2, 4, T - t0 - 1, generator=g)
    y, y2 = fft_causal_conv(u, k), fft_causal_conv(u2, k)
    torch.testing.assert_close(y[..., : t0 + 1], y2[..., : t0 + 1], rtol=0, atol=1e-6 * y2.abs().max().item())
    assert not torch.allclose(y[..., t0 + 1 :], y2[..., t0 + 1 :])


def test_half_precision_input_keeps_dtype():
    u = torch.randn(1, 2, 10).to(torch.bfloat16)
    k = torch.randn(2, 10)
    y = fft_causal_conv(u, k)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), fft_causal_conv_ref(u.float(), k), rtol=2e-2, atol=2e-2)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="same D"):
        fft_causal_conv(torch.randn(1, 3, 5), torch.randn(2, 5))
    with pytest.raises(ValueError, match="bias"):
        fft_causal_conv(torch.randn(1, 3, 5), torch.randn(3, 5), torch.randn(2))

"""Contracts of the Hyena operator: shapes, causality, step == forward, prefill continuation, fast == ref."""

import pytest
import torch

import s3cmn.modeling.hyena as hyena_module
from s3cmn.config import S3CMNConfig
from s3cmn.modeling.hyena import HyenaOperator
from s3cmn.ops.fftconv import fft_causal_conv_ref

D, L = 16, 8


def _config(**overrides) -> S3CMNConfig:
    fields = dict(
        hidden_dim=D, num_attention_heads=4, memory_compression_dim=8, hyena_filter_dim=8,
        hyena_filter_length=L, hyena_order=2, hyena_short_conv=3, dropout=0.0,
    )
    return S3CMNConfig.from_preset("tiny", **{**fields, **overrides})


def _model(seed: int = 0, **overrides) -> HyenaOperator:
    torch.manual_seed(seed)
    return HyenaOperator(_config(**overrides), layer_idx=0).eval()


def _x(B: int = 2, T: int = 20, seed: int = 1) -> torch.Tensor:
    return torch.randn(B, T, D, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("order", [2, 3])
def test_shapes(order):
    m = _model(hyena_order=order)
    y, state = m(_x(3, 11))
    assert y.shape == (3, 11, D)
    assert state["short_conv"].shape == (3, (order + 1) * D, 2)
    assert state["long_conv"].shape == (3, order - 1, D, L - 1)
    assert m.filter_taps().shape == (order - 1, D, L)
    y1, state1 = m.step(_x(3, 1)[:, 0], None)
    assert y1.shape == (3, D)
    assert {k: v.shape for k, v in state1.items()} == {k: v.shape for k, v in state.items()}


def test_parameter_count_does_not_grow_with_filter_length():
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(_model(hyena_filter_length=8)) == count(_model(hyena_filter_length=512))


def test_causal():
    m = _model()
    x = _x(2, 20)
    x2 = x.clone()
    x2[:, 12:] = torch.randn(2, 8, D)
    with torch.no_grad():
        y, y2 = m(x)[0], m(x2)[0]
    torch.testing.assert_close(y[:, :12], y2[:, :12], rtol=0, atol=1e-6)
    assert not torch.allclose(y[:, 12:], y2[:, 12:])


@pytest.mark.parametrize("order,kernel", [(2, 3), (3, 3), (2, 1), (4, 4)])
def test_step_equals_forward_beyond_the_filter_length(order, kernel):
    """T = 20 > L = 8: forward truncates the filter to the L taps step keeps."""
    m = _model(hyena_order=order, hyena_short_conv=kernel)
    x = _x(2, 20)
    with torch.no_grad():
        y, state = m(x)
        ys, st = [], None
        for t in range(x.shape[1]):
            y_t, st = m.step(x[:, t], st)
            ys.append(y_t)
    torch.testing.assert_close(torch.stack(ys, 1), y, rtol=1e-5, atol=1e-5)
    for k in state:
        torch.testing.assert_close(st[k], state[k], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("T1", [1, 5, 13])
def test_forward_continues_from_state(T1):
    m = _model(hyena_order=3)
    x = _x(2, 20)
    with torch.no_grad():
        y, state = m(x)
        y1, s1 = m(x[:, :T1])
        y2, s2 = m(x[:, T1:], s1)
        # a prefill followed by decoding steps
        ys, st = [], s1
        for t in range(T1, 20):
            y_t, st = m.step(x[:, t], st)
            ys.append(y_t)
    torch.testing.assert_close(torch.cat([y1, y2], 1), y, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.stack(ys, 1), y[:, T1:], rtol=1e-5, atol=1e-5)
    for k in state:
        torch.testing.assert_close(s2[k], state[k], rtol=1e-5, atol=1e-5)


def test_fft_path_matches_direct_convolution_forward_and_backward(monkeypatch):
    m = _model(hyena_order=3).train()  # dropout is 0: train mode only checks the gradient path
    x = _x(2, 20).requires_grad_()
    state = {k: torch.randn_like(v) for k, v in m.init_state(2).items()}

    def run():
        m.zero_grad()
        y, new_state = m(x, state)
        loss = (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum() + new_state["long_conv"].sum()
        grads = torch.autograd.grad(loss, [x, *m.parameters()])
        return y, grads

    y_fast, g_fast = run()
    monkeypatch.setattr(hyena_module, "fft_causal_conv", fft_causal_conv_ref)
    y_ref, g_ref = run()
    torch.testing.assert_close(y_fast, y_ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(g_fast, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_deterministic():
    x = _x()
    y_a = _model(seed=3)(x)[0]
    y_b = _model(seed=3)(x)[0]
    assert torch.equal(y_a, y_b)


def test_gradients_reach_every_parameter():
    m = _model(hyena_order=3).train()
    y, _ = m(_x(2, 12))
    y.pow(2).mean().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_filter_taps_cached_only_while_parameters_are_unchanged():
    m = _model()
    with torch.no_grad():
        k1 = m.filter_fn.filter_taps()
        assert m.filter_fn.filter_taps() is k1  # reused in decoding
        m.filter_fn.implicit_filter[0].weight.data.mul_(2)  # even a change that bypasses autograd's versions
        k2 = m.filter_fn.filter_taps()
    assert k2 is not k1 and not torch.allclose(k1, k2)
    assert m.filter_taps().requires_grad  # with gradients: always a fresh, differentiable computation


def test_filter_decays_along_taps():
    m = _model(hyena_filter_length=64)
    with torch.no_grad():
        k = m.filter_taps().abs()  # (1, D, 64)
    assert k[..., -16:].mean() < k[..., :16].mean()

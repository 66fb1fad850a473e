"""Hyena-specific checks: state layout, parameter count, FFT == direct convolution, the filter cache and decay.
(Shapes, causality, step == forward beyond the filter length, continuation, gradients, save/load:
tests/modeling/test_mixer_contract.py.)"""

import pytest
import torch
from torch import Tensor

import s3cmn.modeling.hyena as hyena_module
from s3cmn.model_config import S3CMNConfig
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
def test_state_layout(order):
    m = _model(hyena_order=order)
    state = m(_x(3, 11)).state
    assert state["short_conv"].shape == (3, (order + 1) * D, 2)
    assert state["long_conv"].shape == (3, order - 1, D, L - 1)
    assert m.filter_taps().shape == (order - 1, D, L)
    assert {k: v.shape for k, v in m.step(_x(3, 1)[:, 0], None).state.items()} == {k: v.shape for k, v in state.items()}


def test_parameter_count_does_not_grow_with_filter_length():
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(_model(hyena_filter_length=8)) == count(_model(hyena_filter_length=512))


def test_fft_path_matches_direct_convolution_forward_and_backward(monkeypatch):
    m = _model(hyena_order=3).train()  # dropout is 0: train mode only checks the gradient path
    x = _x(2, 20).requires_grad_()
    state = {k: torch.randn_like(v) for k, v in m.init_state(2, x).items()}

    def run():
        m.zero_grad()
        y, new_state = (out := m(x, state)).y, out.state
        loss = (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum() + new_state["long_conv"].sum()
        grads = torch.autograd.grad(loss, [x, *m.parameters()])
        return y, grads

    y_fast, g_fast = run()
    monkeypatch.setattr(hyena_module, "fft_causal_conv", fft_causal_conv_ref)
    y_ref, g_ref = run()
    torch.testing.assert_close(y_fast, y_ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(g_fast, g_ref, strict=True):  # float32 FFT rounding: 4.5e-5 measured on an Intel Xeon's MKL
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_step_reuses_its_taps_only_while_the_weights_keep_their_version():
    """The decode path computes the reversed taps once per weights version: an in-place change, a
    re-assignment and a load_state_dict are each seen by the next step; forward always recomputes."""
    m = _model()
    x, state = _x(1, 1)[:, 0], m(_x(1, 4)).state
    weight = m.filter_fn.implicit_filter[0].weight

    def taps() -> Tensor:
        m.step(x, state)
        return m.__dict__["_derived"]["taps_reversed"][-1]

    with torch.no_grad():
        k1 = taps()
        assert taps() is k1  # reused while nothing changed
        weight.mul_(2)  # in place: the version moves
        k2 = taps()
        assert k2 is not k1 and not torch.allclose(k1, k2)
        torch.testing.assert_close(k2, m.filter_taps().flip(-1))
        weight.data = weight.data * 0.5  # re-assigned: another tensor
        k3 = taps()
        torch.testing.assert_close(k3, k1)
        m.load_state_dict({k: v * 1.5 if "implicit_filter" in k else v for k, v in m.state_dict().items()})
        torch.testing.assert_close(taps(), m.filter_taps().flip(-1))
    assert m.filter_taps().requires_grad  # with gradients: always a fresh, differentiable computation


def test_filter_decays_along_taps():
    m = _model(hyena_filter_length=64)
    with torch.no_grad():
        k = m.filter_taps().abs()  # (1, D, 64)
    assert k[..., -16:].mean() < k[..., :16].mean()

"""S4D-specific checks: state layout, S4D-Lin init, the kernel against the S4D minimal example's formula,
fast == ref, a state that survives reordering and saving. (Shapes, causality, step == forward, continuation,
gradients, save/load: tests/modeling/test_mixer_contract.py.)"""

import math

import pytest
import torch

import s3cmn.modeling.s4d as s4d_module
from s3cmn.model_config import S3CMNConfig
from s3cmn.modeling.s4d import S4DMixer
from s3cmn.ops.fftconv import fft_causal_conv_ref
from s3cmn.ops.s4d_kernel import vandermonde_reduce_ref, vandermonde_sum_ref
from s3cmn.utils.fields import ConfigError

D, N = 16, 8


def _config(**overrides) -> S3CMNConfig:
    fields = dict(hidden_dim=D, num_attention_heads=4, memory_compression_dim=8, ssm_type="s4d",
                  s4d_d_state=N, dropout=0.0)
    return S3CMNConfig.from_preset("tiny", **{**fields, **overrides})


def _model(seed: int = 0, **overrides) -> S4DMixer:
    torch.manual_seed(seed)
    return S4DMixer(_config(**overrides), layer_idx=0).eval()


def _x(B: int = 2, T: int = 20, seed: int = 1) -> torch.Tensor:
    return torch.randn(B, T, D, generator=torch.Generator().manual_seed(seed))


def test_state_layout():
    m = _model()
    state = m(_x(3, 11)).state
    assert state["ssm"].shape == (3, D, N // 2, 2) and state["ssm"].dtype == torch.float32
    assert m.step(_x(3, 1)[:, 0], None).state["ssm"].shape == state["ssm"].shape


def test_init_s4d_lin():
    m = _model()
    A = torch.complex(-torch.exp(m.log_A_real), m.A_imag)
    torch.testing.assert_close(A.real, torch.full((D, N // 2), -0.5))
    torch.testing.assert_close(A.imag, math.pi * torch.arange(N // 2).float().repeat(D, 1))
    dt = torch.exp(m.log_dt)
    assert (dt >= 1e-3).all() and (dt <= 0.1).all()
    assert m.log_dt._no_weight_decay and m.log_A_real._no_weight_decay and m.A_imag._no_weight_decay


def test_odd_state_size_is_a_config_error():
    with pytest.raises(ConfigError, match="s4d_d_state = 7 must be even"):
        _config(s4d_d_state=7)


def test_kernel_matches_s4d_minimal_formula():
    """y before the output layer = K * u + D u with K = 2 Re(Σ C (exp(ΔA) − 1)/A · exp(ΔA l)) (s4d.py)."""
    m = _model()
    T = 9
    x = _x(1, T)
    with torch.no_grad():
        dt = torch.exp(m.log_dt)
        A = -torch.exp(m.log_A_real) + 1j * m.A_imag
        C = torch.view_as_complex(m.C) * (torch.exp(dt[:, None] * A) - 1.0) / A
        powers = torch.exp(dt[:, None, None] * A[..., None] * torch.arange(T))  # (H, N, L)
        K = 2 * torch.einsum("hn,hnl->hl", C, powers).real
        u = x.transpose(1, 2)
        y = fft_causal_conv_ref(u, K) + u * m.D[:, None]
        expected = m._output(y.transpose(1, 2))
        torch.testing.assert_close(m(x).y, expected, rtol=1e-5, atol=1e-5)


def test_fast_matches_ref_forward_backward(monkeypatch):
    m = _model()
    x = _x(2, 19).requires_grad_()
    state = {"ssm": torch.randn(2, D, N // 2, 2)}

    def run():
        y, new_state = (out := m(x, state)).y, out.state
        loss = (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum() + new_state["ssm"].sum()
        return y, new_state, torch.autograd.grad(loss, [x, *m.parameters()])

    y, s, g = run()
    monkeypatch.setattr(s4d_module, "fft_causal_conv", fft_causal_conv_ref)
    monkeypatch.setattr(s4d_module, "vandermonde_sum", vandermonde_sum_ref)
    monkeypatch.setattr(s4d_module, "vandermonde_reduce", vandermonde_reduce_ref)
    y_ref, s_ref, g_ref = run()
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(s["ssm"], s_ref["ssm"], rtol=1e-5, atol=1e-5)
    for a, b in zip(g, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_state_reorders_and_survives_save(tmp_path):
    """The state is a real batch-first tensor: index_select and torch.save/load keep it usable."""
    m = _model()
    x = _x(3, 8)
    idx = torch.tensor([2, 0, 1])
    with torch.no_grad():
        state = m(x).state
        torch.save(state, tmp_path / "state.pt")
        loaded = torch.load(tmp_path / "state.pt")
        y = m(x[idx, :4], {k: v.index_select(0, idx) for k, v in loaded.items()}).y
        y_ref = m(x[:, :4], state).y
    torch.testing.assert_close(y, y_ref[idx], rtol=1e-6, atol=1e-6)

"""Contracts of the Mamba mixer: shapes, init, causality, step == forward, prefill continuation, fast == ref,
and equality with mambapy's MambaBlock on copied weights."""

import math

import pytest
import torch
from mambapy.mamba import MambaBlock, MambaConfig

import s3cmn.modeling.mamba as mamba_module
from s3cmn.config import S3CMNConfig
from s3cmn.modeling.mamba import MambaMixer
from s3cmn.ops.selective_scan import selective_scan_ref

D, N = 16, 4
E = 2 * D


def _config(**overrides) -> S3CMNConfig:
    fields = dict(hidden_dim=D, num_attention_heads=4, memory_compression_dim=8, ssm_type="mamba",
                  mamba_d_state=N, mamba_d_conv=4, mamba_expand=2, dropout=0.0)
    return S3CMNConfig.from_preset("tiny", **{**fields, **overrides})


def _model(seed: int = 0, **overrides) -> MambaMixer:
    torch.manual_seed(seed)
    return MambaMixer(_config(**overrides), layer_idx=0).eval()


def _x(B: int = 2, T: int = 20, seed: int = 1) -> torch.Tensor:
    return torch.randn(B, T, D, generator=torch.Generator().manual_seed(seed))


def test_shapes_and_state():
    m = _model()
    y, state = m(_x(3, 11))
    assert y.shape == (3, 11, D)
    assert state["conv"].shape == (3, E, 3) and state["ssm"].shape == (3, E, N)
    assert state["ssm"].dtype == torch.float32
    y1, state1 = m.step(_x(3, 1)[:, 0], None)
    assert y1.shape == (3, D)
    assert {k: v.shape for k, v in state1.items()} == {k: v.shape for k, v in state.items()}


def test_init():
    m = _model()
    assert m.dt_rank == math.ceil(D / 16)
    torch.testing.assert_close(-torch.exp(m.A_log), -torch.arange(1, N + 1).float().repeat(E, 1))
    assert m.A_log.dtype == torch.float32 and m.A_log._no_weight_decay and m.D._no_weight_decay
    dt = torch.nn.functional.softplus(m.dt_proj.bias)
    assert (dt >= 1e-3 * 0.999).all() and (dt <= 0.1 * 1.001).all()
    assert torch.equal(m.D, torch.ones(E))


def test_causal():
    m = _model()
    x = _x(2, 20)
    x2 = x.clone()
    x2[:, 12:] = torch.randn(2, 8, D)
    with torch.no_grad():
        y, y2 = m(x)[0], m(x2)[0]
    torch.testing.assert_close(y[:, :12], y2[:, :12], rtol=0, atol=1e-6)
    assert not torch.allclose(y[:, 12:], y2[:, 12:])


@pytest.mark.parametrize("d_conv", [1, 2, 4])
def test_step_matches_forward(d_conv):
    m = _model(mamba_d_conv=d_conv)
    x = _x(2, 13)
    with torch.no_grad():
        y_full, state_full = m(x)
        state, ys = None, []
        for t in range(x.shape[1]):
            y, state = m.step(x[:, t], state)
            ys.append(y)
    torch.testing.assert_close(torch.stack(ys, 1), y_full, rtol=1e-5, atol=1e-5)
    for k in state_full:
        torch.testing.assert_close(state[k], state_full[k], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("T1", [1, 2, 9])  # 1, 2 < d_conv - 1: the conv state mixes kept and new inputs
def test_prefill_continuation(T1):
    m = _model()
    x = _x(2, 17)
    with torch.no_grad():
        y_full, state_full = m(x)
        y1, state = m(x[:, :T1])
        y2, state = m(x[:, T1:], state)
        y3, state3 = m.step(x[:, -1], m(x[:, :-1])[1])
    torch.testing.assert_close(torch.cat([y1, y2], 1), y_full, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y3, y_full[:, -1], rtol=1e-5, atol=1e-5)
    for k in state_full:
        torch.testing.assert_close(state[k], state_full[k], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(state3[k], state_full[k], rtol=1e-5, atol=1e-5)


def test_fast_matches_ref_forward_backward(monkeypatch):
    m = _model()
    x = _x(2, 19).requires_grad_()
    state = {"conv": torch.randn(2, E, 3), "ssm": torch.randn(2, E, N)}

    def run():
        y, new_state = m(x, state)
        loss = (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum() + new_state["ssm"].sum()
        grads = torch.autograd.grad(loss, [x, *m.parameters()])
        return y, new_state, grads

    y, s, g = run()
    monkeypatch.setattr(mamba_module, "selective_scan", selective_scan_ref)
    y_ref, s_ref, g_ref = run()
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(s["ssm"], s_ref["ssm"], rtol=1e-5, atol=1e-5)
    for a, b in zip(g, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_deterministic():
    x = _x(2, 15)
    y1 = _model(seed=3)(x)[0]
    y2 = _model(seed=3)(x)[0]
    assert torch.equal(y1, y2)


def test_gradients_reach_every_parameter():
    m = _model().train()
    y, state = m(_x(2, 10))
    (y.square().mean()).backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def _mambapy_twin(m: MambaMixer) -> MambaBlock:
    cfg = MambaConfig(d_model=D, n_layers=1, d_state=N, expand_factor=2, d_conv=m.d_conv, dt_rank=m.dt_rank)
    block = MambaBlock(cfg)
    # parameter names are mamba_simple.py's on both sides; mambapy names the widths d_model / d_inner
    block.load_state_dict(m.state_dict())
    return block.eval()


def test_matches_mambapy_forward_and_step():
    m = _model()
    ref = _mambapy_twin(m)
    x = _x(2, 12)
    with torch.no_grad():
        torch.testing.assert_close(m(x)[0], ref(x), rtol=1e-5, atol=1e-5)
        state, cache = None, (None, torch.zeros(2, E, m.d_conv - 1))
        for t in range(x.shape[1]):
            y, state = m.step(x[:, t], state)
            y_ref, cache = ref.step(x[:, t], cache)
            torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(state["ssm"], cache[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(state["conv"], cache[1], rtol=0, atol=0)


def test_state_reorders_by_batch():
    """The state is batch-first: reordering rows of the state equals running on reordered inputs."""
    m = _model()
    x = _x(3, 8)
    idx = torch.tensor([2, 0, 1])
    with torch.no_grad():
        _, state = m(x)
        y, _ = m(x[idx, :4], {k: v.index_select(0, idx) for k, v in state.items()})
        y_ref, _ = m(x[:, :4], state)
    torch.testing.assert_close(y, y_ref[idx], rtol=1e-6, atol=1e-6)

"""Mamba-specific checks: state layout, init, a conv-state corner of prefill continuation, fast == ref, the
B/C modulation of ``step``, and equality with mambapy's MambaBlock on copied weights. (Shapes, causality,
step == forward, continuation, gradients, save/load: tests/modeling/test_mixer_contract.py.)"""

import math

import pytest
import torch
from mambapy.mamba import MambaBlock, MambaConfig

import s3cmn.modeling.mamba as mamba_module
from s3cmn.model_config import S3CMNConfig
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


def test_state_layout():
    m = _model()
    state = m(_x(3, 11)).state
    assert state["conv"].shape == (3, E, 3) and state["ssm"].shape == (3, E, N)
    assert state["ssm"].dtype == torch.float32
    assert {k: v.shape for k, v in m.step(_x(3, 1)[:, 0], None).state.items()} == {k: v.shape for k, v in state.items()}


def test_init():
    m = _model()
    assert m.dt_rank == math.ceil(D / 16)
    torch.testing.assert_close(-torch.exp(m.A_log), -torch.arange(1, N + 1).float().repeat(E, 1))
    assert m.A_log.dtype == torch.float32 and m.A_log._no_weight_decay and m.D._no_weight_decay
    dt = torch.nn.functional.softplus(m.dt_proj.bias)
    assert (dt >= 1e-3 * 0.999).all() and (dt <= 0.1 * 1.001).all()
    assert torch.equal(m.D, torch.ones(E))


@pytest.mark.parametrize("T1", [1, 2])  # < d_conv - 1: the conv state mixes kept and new inputs
def test_prefill_continuation_shorter_than_the_conv(T1):
    m = _model()
    x = _x(2, 17)
    with torch.no_grad():
        full = m(x)
        first = m(x[:, :T1])
        second = m(x[:, T1:], first.state)
    torch.testing.assert_close(torch.cat([first.y, second.y], 1), full.y, rtol=1e-5, atol=1e-5)
    for k in full.state:
        torch.testing.assert_close(second.state[k], full.state[k], rtol=1e-5, atol=1e-5)


def test_fast_matches_ref_forward_backward(monkeypatch):
    m = _model()
    x = _x(2, 19).requires_grad_()
    state = {"conv": torch.randn(2, E, 3), "ssm": torch.randn(2, E, N)}

    def run():
        y, new_state = (out := m(x, state)).y, out.state
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
        torch.testing.assert_close(m(x).y, ref(x), rtol=1e-5, atol=1e-5)
        state, cache = None, (None, torch.zeros(2, E, m.d_conv - 1))
        for t in range(x.shape[1]):
            y, state = (out := m.step(x[:, t], state)).y, out.state
            y_ref, cache = ref.step(x[:, t], cache)
            torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(state["ssm"], cache[0], rtol=1e-5, atol=1e-5)
        # the raw in_proj outputs: equal up to the rounding of the decode path's transposed-weight GEMV
        torch.testing.assert_close(state["conv"], cache[1], rtol=1e-6, atol=1e-6)


def test_state_reorders_by_batch():
    """The state is batch-first: reordering rows of the state equals running on reordered inputs."""
    m = _model()
    x = _x(3, 8)
    idx = torch.tensor([2, 0, 1])
    with torch.no_grad():
        state = m(x).state
        y = m(x[idx, :4], {k: v.index_select(0, idx) for k, v in state.items()}).y
        y_ref = m(x[:, :4], state).y
    torch.testing.assert_close(y, y_ref[idx], rtol=1e-6, atol=1e-6)


def test_step_modulation():
    """Scales of ones are the plain step; other scales multiply B and C (here: a zero C leaves only D·u)."""
    m = _model()
    x, state = _x(3, 1)[:, 0], m(_x(3, 6)).state
    ones = torch.ones(3, N)
    with torch.no_grad():
        plain = m.step(x, state)
        scaled = m.step(x, state, ones, ones)
        no_C = m.step(x, state, None, torch.zeros(3, N))
        changed = m.step(x, state, 2 * ones, None)
    torch.testing.assert_close(scaled.y, plain.y, rtol=0, atol=0)
    for k in plain.state:
        torch.testing.assert_close(scaled.state[k], plain.state[k], rtol=0, atol=0)
    assert not torch.allclose(changed.state["ssm"], plain.state["ssm"])
    torch.testing.assert_close(no_C.state["ssm"], plain.state["ssm"], rtol=0, atol=0)  # C is read-out only
    xs, z = m.in_proj(x).chunk(2, dim=-1)
    window = torch.cat([state["conv"], xs.unsqueeze(-1)], dim=2)
    u = torch.nn.functional.silu((window * m.conv1d.weight.squeeze(1)).sum(-1) + m.conv1d.bias)
    expected = m.out_proj(m.D * u * torch.nn.functional.silu(z))
    torch.testing.assert_close(no_C.y, expected, rtol=1e-5, atol=1e-6)

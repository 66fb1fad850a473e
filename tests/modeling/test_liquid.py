"""Contracts of the liquid mixer (CfC / LTC / NCP from ncps): shapes, causality, step == forward, prefill
continuation, time constants, gradients, determinism, NCP sparsity, config errors."""

from __future__ import annotations

import pytest
import torch
from ncps.torch import CfCCell, LTCCell, WiredCfCCell

from s3cmn.config import S3CMNConfig
from s3cmn.modeling.liquid import LiquidMixer, ncp_motor_size
from s3cmn.utils.fields import ConfigError

D, U = 16, 8
BACKBONES = ["cfc", "ltc", "ncp"]


def _config(**overrides) -> S3CMNConfig:
    fields = dict(hidden_dim=D, num_attention_heads=4, liquid_units=U, memory_compression_dim=8, dropout=0.0,
                  ltc_ode_unfolds=3)
    return S3CMNConfig.from_preset("tiny", **{**fields, **overrides})


def _model(backbone: str, seed: int = 0, **overrides) -> LiquidMixer:
    torch.manual_seed(seed)
    return LiquidMixer(_config(liquid_backbone=backbone, **overrides), layer_idx=0).eval()


def _x(B: int = 2, T: int = 10, seed: int = 1) -> torch.Tensor:
    return torch.randn(B, T, D, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("backbone", BACKBONES)
def test_shapes_and_cell(backbone: str) -> None:
    m = _model(backbone)
    cell_type = {"cfc": CfCCell, "ltc": LTCCell, "ncp": WiredCfCCell}[backbone]
    assert isinstance(m.cell, cell_type)
    y, state = m(_x(3, 7))
    assert y.shape == (3, 7, D) and state["h"].shape == (3, U)
    y1, state1 = m.step(_x(3, 1)[:, 0], None)
    assert y1.shape == (3, D) and state1["h"].shape == (3, U)
    assert m.out_units == (ncp_motor_size(U) if backbone == "ncp" else U)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_causal(backbone: str) -> None:
    m = _model(backbone)
    x = _x()
    x2 = x.clone()
    x2[:, 6:] = torch.randn(2, 4, D)
    with torch.no_grad():
        y, y2 = m(x)[0], m(x2)[0]
    torch.testing.assert_close(y[:, :6], y2[:, :6], rtol=0, atol=1e-6)
    assert not torch.allclose(y[:, 6:], y2[:, 6:])


@pytest.mark.parametrize("backbone", BACKBONES)
def test_step_matches_forward_and_continuation(backbone: str) -> None:
    m = _model(backbone)
    x = _x()
    with torch.no_grad():
        y_full, s_full = m(x)
        state, ys = None, []
        for t in range(x.shape[1]):
            y, state = m.step(x[:, t], state)
            ys.append(y)
        y_a, s_a = m(x[:, :4])
        y_b, s_b = m(x[:, 4:], s_a)
    torch.testing.assert_close(torch.stack(ys, 1), y_full, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(state["h"], s_full["h"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.cat([y_a, y_b], 1), y_full, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(s_b["h"], s_full["h"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_time_constant(backbone: str) -> None:
    """τ = τ_base everywhere is the default; another τ changes the dynamics; step takes τ (B, U) too."""
    m = _model(backbone, liquid_tau_base=2.0)
    x = _x(2, 5)
    tau = torch.full((2, 5, U), 2.0)
    with torch.no_grad():
        y0 = m(x)[0]
        torch.testing.assert_close(m(x, tau=tau)[0], y0, rtol=1e-6, atol=1e-6)
        y_fast = m(x, tau=tau * 0.25)[0]
        assert not torch.allclose(y_fast, y0, atol=1e-4)
        y_step, _ = m.step(x[:, 0], None, tau[:, 0] * 0.25)
    torch.testing.assert_close(y_step, y_fast[:, 0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_gradients_reach_every_trainable_parameter(backbone: str) -> None:
    m = _model(backbone).train()
    x = _x().requires_grad_()
    y, _ = m(x)
    y.square().mean().backward()
    for name, p in m.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:  # ncps' wiring masks are frozen parameters
            assert "sparsity_mask" in name and p.grad is None, name
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize("backbone", BACKBONES)
def test_deterministic(backbone: str) -> None:
    x = _x()
    with torch.no_grad():
        torch.testing.assert_close(_model(backbone, seed=3)(x)[0], _model(backbone, seed=3)(x)[0], rtol=0, atol=0)


def test_ncp_wiring_is_sparse_and_differs_per_layer() -> None:
    cfg = _config(liquid_backbone="ncp", liquid_units=16, ncp_sparsity=0.75)
    a, b = LiquidMixer(cfg, 0), LiquidMixer(cfg, 1)
    masks_a = [p for n, p in a.named_parameters() if "sparsity_mask" in n]
    masks_b = [p for n, p in b.named_parameters() if "sparsity_mask" in n]
    assert masks_a and all(not p.requires_grad for p in masks_a)
    assert min(float((p == 0).float().mean()) for p in masks_a) > 0  # some synapses are missing
    assert any(not torch.equal(p, q) for p, q in zip(masks_a, masks_b, strict=True))


@pytest.mark.parametrize("fields", [dict(liquid_units=3), dict(ncp_sparsity=0.05)], ids=str)
def test_ncp_bad_settings(fields: dict) -> None:
    with pytest.raises((ConfigError, ValueError), match="ncp"):
        LiquidMixer(_config(liquid_backbone="ncp", use_liquid=True, **fields), 0)

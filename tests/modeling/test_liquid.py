"""Liquid-specific checks (CfC / LTC / NCP from ncps): the cell, time constants, NCP sparsity, config errors.
(Shapes, causality, step == forward, continuation, gradients, save/load: tests/modeling/test_mixer_contract.py.)"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from ncps.torch import CfCCell, LTCCell, WiredCfCCell

from s3cmn.model_config import S3CMNConfig
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
def test_cell_and_state(backbone: str) -> None:
    m = _model(backbone)
    cell_type = {"cfc": CfCCell, "ltc": LTCCell, "ncp": WiredCfCCell}[backbone]
    assert isinstance(m.cell, cell_type)
    assert m(_x(3, 7)).state["h"].shape == (3, U)
    assert m.out_units == (ncp_motor_size(U) if backbone == "ncp" else U)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_time_constant(backbone: str) -> None:
    """τ = τ_base everywhere is the default; another τ changes the dynamics; step takes τ (B, U) too."""
    m = _model(backbone, liquid_tau_base=2.0)
    x = _x(2, 5)
    tau = torch.full((2, 5, U), 2.0)
    with torch.no_grad():
        y0 = m(x).y
        torch.testing.assert_close(m(x, tau=tau).y, y0, rtol=1e-6, atol=1e-6)
        y_fast = m(x, tau=tau * 0.25).y
        assert not torch.allclose(y_fast, y0, atol=1e-4)
        y_step = m.step(x[:, 0], None, tau[:, 0] * 0.25).y
    torch.testing.assert_close(y_step, y_fast[:, 0], rtol=1e-5, atol=1e-5)


def test_ncp_wiring_is_sparse_and_differs_per_layer() -> None:
    cfg = _config(liquid_backbone="ncp", liquid_units=16, ncp_sparsity=0.75)
    a, b = LiquidMixer(cfg, 0), LiquidMixer(cfg, 1)
    masks_a = [p for n, p in a.named_parameters() if "sparsity_mask" in n]
    masks_b = [p for n, p in b.named_parameters() if "sparsity_mask" in n]
    assert masks_a and all(not p.requires_grad for p in masks_a)
    assert min(float((p == 0).float().mean()) for p in masks_a) > 0  # some synapses are missing
    assert any(not torch.equal(p, q) for p, q in zip(masks_a, masks_b, strict=True))


@pytest.mark.parametrize("fields", [dict(liquid_units=3), dict(ncp_sparsity=0.05)], ids=str)
def test_ncp_bad_settings_are_config_errors(fields: dict) -> None:
    with pytest.raises(ConfigError, match="liquid_backbone = 'ncp'"):
        _config(liquid_backbone="ncp", use_liquid=True, **fields)


def test_ncps_is_needed_only_to_build_a_liquid_mixer(monkeypatch) -> None:
    """The block's registry imports every mixer class, so the model code must import without the optional
    ncps; building a liquid mixer without it names the extra to install."""
    code = "import sys, s3cmn.modeling.lm; print('ncps' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split() == [
        "False"]
    for name in ("ncps", "ncps.torch", "ncps.wirings"):
        monkeypatch.setitem(sys.modules, name, None)  # what an import finds when the package is missing
    with pytest.raises(ImportError, match=r"needs ncps .*pip install 's3cmn\[liquid\]'"):
        _model("cfc")

"""Integration-specific checks: the parts each setting builds, homeostasis through the potential adapter, the
EMA adapter fast == ref, the exchange at init, the gate, the config rules, and the LM with use_liquid
(causality, generation == full forward, save/load, gradients). (The mixer contract over modes and adapters:
tests/modeling/test_mixer_contract.py.)"""

from __future__ import annotations

import pytest
import torch

from s3cmn import S3CMNConfig, S3CMNForCausalLM
from s3cmn.modeling.block import S3CMNBlock
from s3cmn.modeling.integration import GatedFusion, IntegratedMixer, ema_scan, ema_scan_ref
from s3cmn.modeling.population import PopulationLIFLayer, PopulationSpikeStats
from s3cmn.modeling.spiking import LIFLayer
from s3cmn.utils.fields import ConfigError

D, V = 16, 50
MODES = ["sequential", "parallel", "bidirectional"]
ADAPTERS = ["rate", "temporal", "potential"]
def _config(**overrides) -> S3CMNConfig:
    fields = dict(vocab_size=V, embedding_dim=D, hidden_dim=D, num_layers=2, num_attention_heads=4,
                  cross_attention_heads=4, gating_heads=4, spiking_units=6, liquid_units=8, mamba_d_state=4,
                  hyena_filter_dim=8, hyena_filter_length=16, memory_compression_dim=8, use_memory=False,
                  dropout=0.0, embedding_dropout=0.0, attention_dropout=0.0, spike_threshold=0.05,
                  ltc_ode_unfolds=2, use_liquid=True)
    return S3CMNConfig.from_preset("tiny", **{**fields, **overrides})


def _mixer(seed: int = 0, **overrides) -> IntegratedMixer:
    torch.manual_seed(seed)
    return IntegratedMixer(_config(**overrides), 0).eval()


def _x(B: int = 2, T: int = 8, seed: int = 1) -> torch.Tensor:
    return torch.randn(B, T, D, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    "fields,spiking,parts",
    [
        (dict(integration_mode="sequential"), LIFLayer, {"spiking", "adapter", "liquid", "mamba"}),
        (dict(integration_mode="parallel", use_population_coding=True), PopulationLIFLayer,
         {"spiking", "adapter", "liquid", "mamba", "fusion"}),
        (dict(integration_mode="bidirectional", use_spiking=False), None,
         {"liquid", "mamba", "fusion", "mamba_cross", "exchange_B", "exchange_C", "exchange_tau"}),
        (dict(use_cross_modal_attention=True), LIFLayer, {"spiking", "adapter", "liquid", "mamba", "cross_modal"}),
    ],
    ids=str,
)
def test_settings_build_their_parts(fields: dict, spiking: type | None, parts: set) -> None:
    m = _mixer(**fields)
    assert {name for name, _ in m.named_children()} == parts
    assert (m.spiking is None) if spiking is None else type(m.spiking) is spiking


def test_potential_adapter_keeps_homeostasis() -> None:
    m = _mixer(spike_adapter="potential", adaptive_threshold=True, threshold_adaptation_rate=0.5).train()
    before = m.spiking.threshold.clone()
    m(_x())
    assert not torch.equal(m.spiking.threshold, before)


def test_ema_fast_matches_reference() -> None:
    y = _x(2, 11).requires_grad_()
    c0 = torch.randn(2, D, requires_grad=True)
    g = torch.randn(2, 11, D)
    outs = []
    for fn in (ema_scan, ema_scan_ref):
        c = fn(y, c0, 0.7)
        outs.append((c, *torch.autograd.grad((c * g).sum(), (y, c0))))
    for a, b in zip(*outs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_exchange_starts_as_identity() -> None:
    """W_B, W_C, W_τ start at zero: Mamba starts unmodulated, the liquid τ at liquid_tau_base."""
    m = _mixer(integration_mode="bidirectional")
    for lin in (m.exchange_B, m.exchange_C, m.exchange_tau):
        assert lin.weight.abs().sum() == 0 and lin.bias.abs().sum() == 0
    x = _x(2, 1)[:, 0]
    with torch.no_grad():
        L, M, _, _ = m._exchange(x, x, None, None)
        torch.testing.assert_close(M, m.mamba.step(x, None).y)
        torch.testing.assert_close(L, m.liquid.step(x, None).y)


def test_gated_fusion() -> None:
    torch.manual_seed(0)
    fusion = GatedFusion(_config(gating_heads=4, gating_temperature=1.0))
    a, b = _x(2, 3), _x(2, 3, seed=2)
    w = fusion.weights(a, b)
    assert w.shape == (2, 3, 4, 2)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 3, 4))
    torch.testing.assert_close(fusion(a, a), a)  # a convex combination of equal streams
    fusion.temperature = 1e6
    torch.testing.assert_close(fusion(a, b), (a + b) / 2, rtol=1e-4, atol=1e-4)  # hot gate: the mean


@pytest.mark.parametrize(
    "fields,match",
    [
        (dict(ssm_type="s4d"), "ssm_type = 'mamba'"),
        (dict(use_cross_modal_attention=True, use_spiking=False), "use_cross_modal_attention"),
        (dict(use_cross_modal_attention=True, use_liquid=False), "use_cross_modal_attention"),
        (dict(integration_mode="bidirectional", cross_attention_heads=3), "cross_attention_heads"),
        (dict(integration_mode="parallel", gating_heads=3), "gating_heads"),
        (dict(liquid_backbone="ncp", liquid_units=3), "ncp"),
        (dict(use_population_coding=True, use_spiking=False), "use_population_coding"),
    ],
    ids=str,
)
def test_bad_combinations_are_config_errors(fields: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        S3CMNForCausalLM(_config(**fields))


# ---------------------------------------------------------------------------------------------------------
# in the block and the LM
# ---------------------------------------------------------------------------------------------------------


def test_block_uses_the_integrated_mixer() -> None:
    block = S3CMNBlock(_config(), 0)
    assert isinstance(block.integration, IntegratedMixer)
    assert not hasattr(block, "ssm") and not hasattr(block, "spiking")
    assert [sub.kind for sub in block.sublayers] == ["integration", "hyena", "mlp"]  # the tiny preset: ssm_first
    out = block(_x())
    assert set(out.state) == {"hyena", "integration"} and out.spike_stats is not None


LM_CASES = [
    dict(integration_mode="sequential"),
    dict(integration_mode="parallel", spike_adapter="temporal", use_population_coding=True),
    dict(integration_mode="bidirectional", spike_adapter="potential", use_cross_modal_attention=True,
         cross_modal_mode="multiscale", cross_attention_heads=2),
    dict(integration_mode="parallel", liquid_backbone="ltc"),
    dict(integration_mode="sequential", liquid_backbone="ncp", use_cross_modal_attention=True),
]


@pytest.mark.parametrize("fields", LM_CASES, ids=str)
def test_lm_causality_and_generation_equals_full_forward(fields: dict, check_decoding) -> None:
    torch.manual_seed(0)
    model = S3CMNForCausalLM(_config(**fields)).eval()
    full = check_decoding(model, torch.randint(0, V, (2, 14)), split=8, prefill=5)
    assert len(full.spike_stats) == 2 and 0 <= full.spike_rate <= 1
    if fields.get("use_population_coding"):
        assert all(isinstance(s, PopulationSpikeStats) for s in full.spike_stats)


@pytest.mark.parametrize("mode", MODES)
def test_lm_gradients_and_save_load(mode: str, tmp_path, check_training_and_save) -> None:
    torch.manual_seed(0)
    model = S3CMNForCausalLM(_config(integration_mode=mode, use_cross_modal_attention=True,
                                     adaptive_threshold=False))
    loaded = check_training_and_save(model, torch.randint(0, V, (2, 10)), tmp_path)
    assert loaded.config.integration_mode == mode

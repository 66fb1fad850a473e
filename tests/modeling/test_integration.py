"""Contracts of the Mamba–liquid–spiking integration: every mode and adapter (shapes, causality, step == forward,
prefill continuation, gradients), the composed Mamba step, the EMA adapter fast == ref, the gate, the config
rules, and the LM with use_liquid (causality, generation == full forward, save/load, gradients)."""

from __future__ import annotations

import pytest
import torch

from s3cmn import S3CMNConfig, S3CMNForCausalLM
from s3cmn.modeling.block import S3CMNBlock
from s3cmn.modeling.integration import GatedFusion, IntegratedMixer, ema_scan, ema_scan_ref, mamba_step_modulated
from s3cmn.modeling.mamba import MambaMixer
from s3cmn.modeling.population import PopulationLIFLayer, PopulationSpikeStats
from s3cmn.modeling.spiking import SpikeStats
from s3cmn.utils.fields import ConfigError

D, V = 16, 50
MODES = ["sequential", "parallel", "bidirectional"]
ADAPTERS = ["rate", "temporal", "potential"]
VARIANTS = [
    dict(),
    dict(use_cross_modal_attention=True),
    dict(use_cross_modal_attention=True, cross_modal_mode="bidirectional"),
    dict(use_cross_modal_attention=True, cross_modal_mode="multiscale", cross_attention_heads=2),
    dict(use_population_coding=True, population_decoding="hybrid", num_spike_steps=2),
    dict(use_spiking=False),
    dict(liquid_backbone="ltc"),
    dict(liquid_backbone="ncp"),
]


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


def _check_mixer(m: IntegratedMixer) -> None:
    """Shapes, causality, step == forward, [0:3] then [3:T] == [0:T]."""
    x = _x()
    x2 = x.clone()
    x2[:, 5:] = torch.randn(2, 3, D)
    with torch.no_grad():
        y, state, stats = m(x)
        torch.testing.assert_close(m(x2)[0][:, :5], y[:, :5], rtol=0, atol=1e-6)
        st, ys = None, []
        for t in range(x.shape[1]):
            yt, st, _ = m.step(x[:, t], st)
            ys.append(yt)
        ya, sa, _ = m(x[:, :3])
        yb, sb, _ = m(x[:, 3:], sa)
    assert y.shape == (2, 8, D)
    assert all(v.shape[0] == 2 for v in state.values()) and set(st) == set(state) == set(sb)
    torch.testing.assert_close(torch.stack(ys, 1), y, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.cat([ya, yb], 1), y, rtol=1e-5, atol=1e-5)
    for k in state:
        torch.testing.assert_close(st[k], state[k], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(sb[k], state[k], rtol=1e-5, atol=1e-5)
    assert (stats is None) == (m.spiking is None)
    if stats is not None:
        assert isinstance(stats, SpikeStats) and stats.num_steps == 2 * 8 * m.spiking.num_spike_steps


@pytest.mark.parametrize("adapter", ADAPTERS)
@pytest.mark.parametrize("mode", MODES)
def test_modes_and_adapters(mode: str, adapter: str) -> None:
    _check_mixer(_mixer(integration_mode=mode, spike_adapter=adapter))


@pytest.mark.parametrize("variant", VARIANTS, ids=str)
@pytest.mark.parametrize("mode", ["sequential", "bidirectional"])
def test_variants(mode: str, variant: dict) -> None:
    m = _mixer(integration_mode=mode, **variant)
    assert isinstance(m.spiking, PopulationLIFLayer) == bool(variant.get("use_population_coding"))
    _check_mixer(m)


@pytest.mark.parametrize("mode", MODES)
def test_gradients_reach_every_trainable_parameter(mode: str) -> None:
    m = _mixer(integration_mode=mode, spike_adapter="potential", use_cross_modal_attention=True,
               cross_modal_mode="bidirectional", adaptive_threshold=False).train()
    x = _x().requires_grad_()
    y, _, _ = m(x)
    y.square().mean().backward()
    for name, p in m.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0


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


def test_modulated_mamba_step_is_mamba_step() -> None:
    torch.manual_seed(0)
    mamba = MambaMixer(_config(), 0)
    x = _x()
    with torch.no_grad():
        s1 = s2 = s3 = None
        for t in range(x.shape[1]):
            y1, s1 = mamba.step(x[:, t], s1)
            y2, s2 = mamba_step_modulated(mamba, x[:, t], s2, torch.ones(2, 4), torch.ones(2, 4))
            y3, s3 = mamba_step_modulated(mamba, x[:, t], s3, torch.full((2, 4), 1.5), None)
            torch.testing.assert_close(y2, y1, rtol=0, atol=0)
        assert not torch.allclose(y3, y1)
    for k in s1:
        torch.testing.assert_close(s2[k], s1[k], rtol=0, atol=0)


def test_exchange_starts_as_identity() -> None:
    """W_B, W_C, W_τ start at zero: Mamba starts unmodulated, the liquid τ at liquid_tau_base."""
    m = _mixer(integration_mode="bidirectional")
    for lin in (m.exchange_B, m.exchange_C, m.exchange_tau):
        assert lin.weight.abs().sum() == 0 and lin.bias.abs().sum() == 0
    x = _x(2, 1)[:, 0]
    with torch.no_grad():
        L, M, _, _ = m._exchange(x, x, None, None)
        torch.testing.assert_close(M, m.mamba.step(x, None)[0])
        torch.testing.assert_close(L, m.liquid.step(x, None)[0])


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
    assert isinstance(block.integration, IntegratedMixer) and block.ssm is None and block.spiking is None
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
def test_lm_causality_and_generation_equals_full_forward(fields: dict) -> None:
    torch.manual_seed(0)
    model = S3CMNForCausalLM(_config(**fields)).eval()
    ids = torch.randint(0, V, (2, 14))
    changed = ids.clone()
    changed[:, 8:] = torch.randint(0, V, (2, 6))
    with torch.no_grad():
        full = model(ids)
        torch.testing.assert_close(model(changed).logits[:, :8], full.logits[:, :8], rtol=0, atol=1e-6)
        out = model(ids[:, :5], use_cache=True)
        logits = [out.logits]
        for t in range(5, 14):
            out = model(ids[:, t : t + 1], cache=out.cache, use_cache=True)
            logits.append(out.logits)
    torch.testing.assert_close(torch.cat(logits, 1), full.logits, rtol=1e-5, atol=1e-5)
    assert len(full.spike_stats) == 2 and 0 <= full.spike_rate <= 1
    if fields.get("use_population_coding"):
        assert all(isinstance(s, PopulationSpikeStats) for s in full.spike_stats)


@pytest.mark.parametrize("mode", MODES)
def test_lm_gradients_and_save_load(mode: str, tmp_path) -> None:
    torch.manual_seed(0)
    model = S3CMNForCausalLM(_config(integration_mode=mode, use_cross_modal_attention=True,
                                     adaptive_threshold=False)).train()
    ids = torch.randint(0, V, (2, 10))
    model(ids, labels=ids).loss.backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    model.eval().save_pretrained(tmp_path)
    loaded = S3CMNForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=0)
    assert loaded.config.integration_mode == mode

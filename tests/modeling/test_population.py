"""Population-coded LIF layer: threshold spreads, hand-checked population dynamics, fast == ref, timing decode,
stats, homeostasis, drop-in for LIFLayer in the block and the LM (causality, step == forward, save/load). (The
layer's mixer contract: tests/modeling/test_mixer_contract.py.)"""

from __future__ import annotations

import pytest
import torch

from s3cmn import S3CMNConfig, S3CMNForCausalLM
from s3cmn.modeling.block import S3CMNBlock
from s3cmn.modeling.population import (
    PopulationLIFLayer,
    PopulationSpikeStats,
    decode_population,
    population_scan,
    threshold_spread,
)
from s3cmn.modeling.spiking import SpikeStats
from s3cmn.ops.lif import lif_scan
from s3cmn.utils.fields import ConfigError

D, N, V = 16, 6, 50


def _config(**overrides) -> S3CMNConfig:
    fields = dict(vocab_size=V, embedding_dim=D, hidden_dim=D, num_layers=2, num_attention_heads=4, spiking_units=N,
                  mamba_d_state=4, hyena_filter_dim=8, hyena_filter_length=16, memory_compression_dim=8,
                  use_memory=False, dropout=0.0, embedding_dropout=0.0, attention_dropout=0.0,
                  spike_threshold=0.1, use_population_coding=True, population_size=5)
    return S3CMNConfig.from_preset("tiny", **{**fields, **overrides})


def _layer(seed: int = 0, **overrides) -> PopulationLIFLayer:
    torch.manual_seed(seed)
    return PopulationLIFLayer(_config(**overrides), 0).eval()


def _x(B: int = 2, T: int = 10, seed: int = 1) -> torch.Tensor:
    return torch.randn(B, T, D, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("size", [3, 5, 7])
def test_threshold_spreads(size: int) -> None:
    uni, gau, log = (threshold_spread(size, k) for k in ("uniform", "gaussian", "log"))
    for s in (uni, gau, log):
        assert s.shape == (size,) and (s > 0).all() and (s.diff() > 0).all()
    torch.testing.assert_close(uni, torch.linspace(0.5, 1.5, size))
    torch.testing.assert_close(log[[0, -1]], torch.tensor([0.5, 2.0]))
    torch.testing.assert_close(log[1:] / log[:-1], torch.full((size - 1,), float(log[1] / log[0])))  # geometric
    torch.testing.assert_close(gau[[0, -1]], torch.tensor([0.5, 1.5]))
    if size > 3:  # gaussian quantiles are denser near the threshold (with 3 they are the uniform spread)
        assert gau.diff()[size // 2 - 1] < uni.diff()[0]
    with pytest.raises(ValueError, match="uniform"):
        threshold_spread(size, "cubic")


def test_population_dynamics_by_hand() -> None:
    """A constant current 0.6 into thresholds (0.5, 1.0, 1.5), β = 1, subtract reset, 4 tokens:
    the charge after k tokens is 0.6k minus what fired; spikes by hand."""
    current = torch.full((1, 4, 1), 0.6)
    threshold = torch.tensor([[0.5, 1.0, 1.5]])
    out = population_scan(current, torch.ones(1), threshold, torch.zeros(1, 3), "subtract", "atan", 2.0, 1)
    spikes = out.spikes[0, :, 0, 0]  # (T, P)
    # θ=0.5: U 0.6 fire → 0.1; 0.7 fire → 0.2; 0.8 fire → 0.3; 0.9 fire → 0.4
    # θ=1.0: U 0.6; 1.2 fire → 0.2; 0.8; 1.4 fire → 0.4
    # θ=1.5: U 0.6; 1.2; 1.8 fire → 0.3; 0.9
    expected = torch.tensor([[1, 0, 0], [1, 1, 0], [1, 0, 1], [1, 1, 0]], dtype=torch.float32)
    torch.testing.assert_close(spikes, expected)
    torch.testing.assert_close(out.v, torch.tensor([[0.4, 0.4, 0.9]]), rtol=0, atol=1e-6)


def test_micro_steps_equal_lif_scan_and_timing_code() -> None:
    """Repeating the current per micro-step is lif_scan(num_steps=S); the timing code is the first-spike latency."""
    torch.manual_seed(0)
    B, T, S, P = 2, 5, 4, 3
    current = torch.randn(B, T, N) * 0.5
    beta, threshold = torch.rand(N) * 0.5 + 0.5, torch.rand(N, P) + 0.2
    v0 = torch.zeros(B, N * P)
    out = population_scan(current, beta, threshold, v0, "subtract", "atan", 2.0, S)
    ref = lif_scan(current[..., None].expand(B, T, N, P).reshape(B, T, N * P), beta[:, None].expand(N, P).reshape(-1),
                   threshold.reshape(-1), v0, "subtract", "atan", 2.0, S)
    torch.testing.assert_close(out.spikes.mean(2).reshape(B, T, N * P), ref.spikes)
    torch.testing.assert_close(out.v, ref.v)
    spikes = torch.tensor([0.0, 1, 1, 0]).view(1, 1, 4, 1, 1)  # first spike at micro-step 1 of 4 -> (4-1)/4
    torch.testing.assert_close(decode_population(spikes, "timing"), torch.tensor([[[0.75]]]))
    torch.testing.assert_close(decode_population(spikes, "rate"), torch.tensor([[[0.5]]]))
    torch.testing.assert_close(decode_population(torch.zeros(1, 1, 4, 1, 1), "timing"), torch.zeros(1, 1, 1))
    assert decode_population(spikes, "hybrid").shape == (1, 1, 2)


@pytest.mark.parametrize("decoding", ["rate", "timing", "hybrid"])
def test_fast_matches_reference_forward_and_backward(decoding: str) -> None:
    layer = _layer(population_decoding=decoding, num_spike_steps=3, adaptive_threshold=False)
    x = _x()
    results = []
    for ref in (False, True):
        layer.zero_grad()
        xr = x.clone().requires_grad_()
        y, state = (out := layer._run(xr, None, update_threshold=False, ref=ref)).y, out.state
        (y.square().sum() + state["v"].sum()).backward()
        results.append([y, state["v"], xr.grad] + [p.grad.clone() for p in layer.parameters()])
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("decoding", ["rate", "timing", "hybrid"])
@pytest.mark.parametrize("spread", ["uniform", "gaussian", "log"])
def test_state_and_stats(decoding: str, spread: str) -> None:
    layer = _layer(population_decoding=decoding, population_threshold_spread=spread, num_spike_steps=2)
    with torch.no_grad():
        out = layer(_x())
    state, stats = out.state, out.stats
    assert state["v"].shape == (2, N * 5)
    assert isinstance(stats, PopulationSpikeStats) and isinstance(stats, SpikeStats)
    assert stats.spike_count.shape == (N * 5,) and stats.num_steps == 2 * 10 * 2
    assert 0 < stats.firing_rate < 1 and 0 < stats.population_sparsity < 1 and 0 < stats.active_fraction <= 1
    assert stats.rate_by_rank.shape == (5,)
    assert stats.rate_by_rank[0] >= stats.rate_by_rank[-1]  # the lowest threshold fires most
    merged = stats.merge(stats)
    assert merged.num_steps == 2 * stats.num_steps
    torch.testing.assert_close(merged.population_sparsity, stats.population_sparsity)


def test_homeostasis_moves_the_scale_and_keeps_the_spread() -> None:
    layer = _layer(adaptive_threshold=True, threshold_adaptation_rate=0.5, target_spike_rate=0.01).train()
    before = layer.thresholds().clone()
    layer(_x() * 5)
    after = layer.thresholds()
    assert (after >= before).all() and (after > before).any()  # firing above target raises thresholds
    torch.testing.assert_close(after / after[:, :1], before / before[:, :1])  # same spread
    layer.eval()
    layer(_x() * 5)
    torch.testing.assert_close(layer.thresholds(), after)  # eval never adapts


# ---------------------------------------------------------------------------------------------------------
# in the block and the LM
# ---------------------------------------------------------------------------------------------------------


def test_drop_in_for_the_block_lif_layer() -> None:
    block = S3CMNBlock(_config(), 0)
    assert isinstance(block.spiking, PopulationLIFLayer)
    assert not isinstance(S3CMNBlock(_config(use_population_coding=False), 0).spiking, PopulationLIFLayer)


@pytest.mark.parametrize("decoding", ["rate", "hybrid"])
def test_lm_causality_generation_and_stats(decoding: str, check_decoding) -> None:
    torch.manual_seed(0)
    model = S3CMNForCausalLM(_config(population_decoding=decoding, num_spike_steps=2)).eval()
    full = check_decoding(model, torch.randint(0, V, (2, 16)), split=9, prefill=6)
    assert len(full.spike_stats) == 2 and all(isinstance(s, PopulationSpikeStats) for s in full.spike_stats)
    assert 0 < full.spike_rate < 1


def test_lm_gradients_and_save_load(tmp_path, check_training_and_save) -> None:
    torch.manual_seed(0)
    check_training_and_save(S3CMNForCausalLM(_config(adaptive_threshold=False)), torch.randint(0, V, (2, 12)), tmp_path)


def test_population_needs_spiking() -> None:
    with pytest.raises(ConfigError, match="use_population_coding"):
        S3CMNForCausalLM(_config(use_spiking=False))

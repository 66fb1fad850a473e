"""Sparsity numbers on hand-made spike statistics, and on a real spiking model."""

from __future__ import annotations

import pytest
import torch

from s3cmn.evaluation.perplexity import score_stream
from s3cmn.evaluation.sparsity import E_AC_PJ, E_MAC_PJ, layer_sparsity, model_sparsity, spiking_layers
from s3cmn.modeling.spiking import SpikeStats


def _stats(counts: list[float], num_steps: int) -> SpikeStats:
    count = torch.tensor(counts)
    return SpikeStats(count, num_steps, count.sum() / (num_steps * count.numel()), torch.tensor(0.1),
                      torch.tensor(0.5))  # fmt: skip


def test_hand_made_layer() -> None:
    # 4 neurons, 5 tokens x 2 micro-steps = 10 neuron-steps each; 6 spikes; read-out fan-out 8
    s = layer_sparsity(_stats([0, 2, 4, 0], 10), layer=3, fan_out=8, tokens=5)
    assert (s.layer, s.neurons, s.neuron_steps, s.spikes) == (3, 4, 40, 6)
    assert s.spike_rate == pytest.approx(6 / 40) and s.silent_fraction == 0.5
    assert s.synaptic_ops == 6 * 8 and s.dense_macs == 5 * 4 * 8
    assert s.ops_ratio == pytest.approx(48 / 160) and s.spikes_per_token == pytest.approx(6 / 5)
    assert s.energy_spiking_pj_per_token == pytest.approx(48 * E_AC_PJ / 5)
    assert s.energy_dense_pj_per_token == pytest.approx(160 * E_MAC_PJ / 5)
    assert s.energy_ratio == pytest.approx(48 * 0.9 / (160 * 4.6))
    assert (E_AC_PJ, E_MAC_PJ) == (0.9, 4.6)


def test_merged_statistics_add_up() -> None:
    a, b = _stats([1, 0, 3], 4), _stats([0, 0, 5], 6)
    s = layer_sparsity(a.merge(b), layer=0, fan_out=2, tokens=10)
    assert s.spikes == 9 and s.neuron_steps == 30 and s.silent_fraction == pytest.approx(1 / 3)
    assert s.synaptic_ops == 18


def test_silent_layer_costs_nothing() -> None:
    s = layer_sparsity(_stats([0, 0], 8), layer=0, fan_out=16, tokens=8)
    assert s.spike_rate == 0 and s.silent_fraction == 1 and s.synaptic_ops == 0 and s.energy_ratio == 0


def test_real_model_layers_and_counts(tiny_model) -> None:
    model = tiny_model(num_layers=2, use_memory=False)
    assert spiking_layers(model) == [(0, 32), (1, 32)]  # read-out fan-out = hidden_dim
    score = score_stream(model, torch.randint(0, 97, (65,)), 16, 8, 4)
    layers = model_sparsity(model, score.spike_stats, score.tokens_processed)
    assert [x.layer for x in layers] == [0, 1]
    for x in layers:
        assert x.neurons == 16 and x.tokens == score.tokens_processed
        assert x.neuron_steps == score.tokens_processed * model.config.num_spike_steps * 16
        assert 0 < x.spike_rate < 1 and x.synaptic_ops == x.spikes * 32
    with pytest.raises(ValueError, match="spiking layers"):
        model_sparsity(model, score.spike_stats[:1], 10)

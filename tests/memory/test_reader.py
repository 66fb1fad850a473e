"""MemoryReader: shapes, fast == reference attention, gradients, one search per forward, write selection."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from s3cmn.memory import (
    PROVENANCE_WINDOW,
    FaissMemory,
    MemoryReader,
    memory_attend,
    memory_attend_ref,
    select_write,
)
from s3cmn.model_config import S3CMNConfig

D = 32


@pytest.fixture
def config() -> S3CMNConfig:
    return S3CMNConfig.from_preset("tiny", hidden_dim=D, embedding_dim=D, memory_compression_dim=8)


@pytest.fixture
def memory(config, clustered_data) -> FaissMemory:
    mem = FaissMemory.from_config(config, -1)
    mem.write(clustered_data(200, D, 10, seed=0))
    assert mem.searchable
    return mem


def test_attend_matches_reference_forward_and_backward():
    torch.manual_seed(0)
    n, k, d, dv = 6, 5, 8, 12
    q = torch.nn.functional.normalize(torch.randn(n, d, dtype=torch.float64), dim=-1).requires_grad_()
    keys = torch.nn.functional.normalize(torch.randn(n, k, d, dtype=torch.float64), dim=-1)
    values = torch.randn(n, k, dv, dtype=torch.float64)
    hit = torch.rand(n, k) > 0.4
    hit[0] = False  # a row without any hit
    hit[1] = True
    log_tau = torch.tensor(-1.5, dtype=torch.float64, requires_grad=True)
    outs = []
    for fn in (memory_attend, memory_attend_ref):
        out, attn = fn(q, keys, values, hit, log_tau)
        (grad_q, grad_tau) = torch.autograd.grad((out * values.new_ones(dv).cumsum(0)).sum(), (q, log_tau))
        outs.append((out, attn, grad_q, grad_tau))
    for a, b in zip(*outs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    out, attn = outs[0][:2]
    assert (out[0] == 0).all() and (attn[~hit] == 0).all()
    torch.testing.assert_close(attn[hit.any(-1)].sum(-1), torch.ones(n - 1, dtype=torch.float64))


def test_read_shapes_stats_and_one_search(config, memory):
    reader = MemoryReader(config, 1)
    h = torch.randn(2, 8, D)
    calls = memory.counters["search_calls"]
    delta, stats = reader(h, memory)
    assert delta.shape == h.shape and delta.abs().sum() > 0
    assert memory.counters["search_calls"] == calls + 1  # one FAISS call for all B*T = 16 queries
    assert stats.searched and 0 <= stats.hit_rate <= 1 and 0 < stats.gate_mean < 1 and stats.latency_ms > 0
    assert stats.entries == 200 and memory.stats().queries == 16
    assert memory.entries()["usage"].sum() == round(stats.hit_rate * 16 * memory.settings.memory_top_k)


def test_empty_or_missing_memory_reads_zero(config):
    reader = MemoryReader(config, 0)
    h = torch.randn(2, 4, D)
    for mem in (None, FaissMemory.from_config(config, 0)):
        delta, stats = reader(h, mem)
        assert torch.equal(delta, torch.zeros_like(h)) and not stats.searched and stats.hit_rate == 0


def test_all_misses_read_zero(config, memory):
    memory.settings = dataclasses.replace(memory.settings, max_retrieval_distance=1e-9)  # nothing is that close
    delta, stats = MemoryReader(config, 1)(torch.randn(1, 4, D), memory)
    assert stats.hit_rate == 0 and torch.equal(delta, torch.zeros_like(delta))


def test_gradients_reach_reader_parameters_never_the_store(config, memory):
    reader = MemoryReader(config, 1)
    h = torch.randn(2, 6, D, requires_grad=True)
    values_before = memory.entries()["values"].copy()
    delta, stats = reader(h, memory)
    assert stats.hit_rate > 0
    delta.pow(2).sum().backward()
    for name, p in reader.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert h.grad is not None
    np.testing.assert_array_equal(memory.entries()["values"], values_before)
    res = memory.search(torch.randn(3, D))
    assert not res.values.requires_grad and not res.keys.requires_grad


def test_log_tau_is_excluded_from_weight_decay(config):
    assert MemoryReader(config, 0).log_tau._no_weight_decay


def test_select_write_positions_and_provenance():
    B, T, stride = 2, 10, 4
    h = torch.randn(B, T, D, requires_grad=True)
    ids = torch.arange(B * T).view(B, T) + 100
    values, prov = select_write(h, ids, stride, position_offset=50)
    assert not values.requires_grad and values.dtype == torch.float32
    # positions 3 and 7 of each row
    torch.testing.assert_close(values, h.detach()[:, [3, 7]].reshape(4, D))
    assert prov.positions.tolist() == [53, 57, 53, 57] and prov.segment_ids.tolist() == [0, 0, 1, 1]
    assert prov.token_ids.shape == (4, PROVENANCE_WINDOW)
    assert prov.token_ids[0, -4:].tolist() == [100, 101, 102, 103] and (prov.token_ids[0, :-4] == -1).all()
    assert prov.token_ids[3, -8:].tolist() == list(range(110, 118))
    empty_values, empty_prov = select_write(h, ids, 16)
    assert empty_values.shape == (0, D) and len(empty_prov) == 0


def test_write_then_read_finds_what_an_earlier_segment_wrote(config):
    """A segment written after its forward is what the next segment reads; it never reads itself first."""
    mem = FaissMemory.from_config(config, 0)
    reader = MemoryReader(config, 0)
    seg1 = torch.randn(1, 64, D)
    delta1, stats1 = reader(seg1, mem)
    assert not stats1.searched  # nothing written before the first segment
    values, prov = select_write(seg1, torch.arange(64)[None], stride=1)
    mem.write(values, prov, step=1)
    res = mem.search(seg1[0, :5])
    assert res.ids[:, 0].tolist() == [0, 1, 2, 3, 4]  # the stored hidden states find themselves


def test_bf16_autocast_read_and_write(config, memory):
    """Under bf16 autocast the attention weights are bf16: usage recording and writes take any float dtype."""
    reader = MemoryReader(config, 1)
    h = torch.randn(2, 8, D)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        delta, stats = reader(h, memory)
    assert stats.hit_rate > 0 and torch.isfinite(delta.float()).all()
    assert memory.entries()["usage"].sum() > 0
    values, prov = select_write(h.bfloat16(), torch.zeros(2, 8, dtype=torch.long), 4)
    memory.write(values.bfloat16(), prov)
    memory.record_usage(torch.tensor([0, 1]), torch.tensor([0.5, 0.25], dtype=torch.bfloat16))


def test_centred_queries_track_a_running_mean_in_training_only(config, memory):
    assert config.memory_query_centering  # the presets turn it on
    reader = MemoryReader(config, 1).train()
    h = torch.randn(2, 6, D)
    raw = reader.q_proj(h).float().reshape(-1, D).detach()
    reader(h, memory)
    torch.testing.assert_close(reader.query_mean, raw.mean(0))  # the first batch sets it
    reader(h + 1, memory)
    expected = raw.mean(0).lerp(reader.q_proj(h + 1).float().reshape(-1, D).mean(0), 0.05)
    torch.testing.assert_close(reader.query_mean, expected.detach())
    before = reader.query_mean.clone()
    reader.eval()(torch.randn(2, 6, D), memory)
    assert torch.equal(reader.query_mean, before) and int(reader.query_batches) == 2  # evaluation leaves it
    assert {"query_mean", "query_batches"} <= set(reader.state_dict())
    plain = MemoryReader(dataclasses.replace(config, memory_query_centering=False), 1)
    assert "query_mean" not in plain.state_dict() and torch.equal(plain.centred(raw, memory), raw)


def test_a_training_read_never_depends_on_a_later_token_of_its_batch(config, memory):
    torch.manual_seed(0)
    reader = MemoryReader(config, 1).train()
    reader(torch.randn(2, 6, D), memory)  # a first batch sets the mean
    state = {k: v.clone() for k, v in reader.state_dict().items()}
    h = torch.randn(2, 6, D)
    later = h.clone()
    later[:, -1] += 5.0  # the last position of every row changes
    outs = []
    for x in (h, later):
        reader.load_state_dict(state)
        outs.append(reader(x, memory, record_usage=False)[0])
    torch.testing.assert_close(outs[0][:, :-1], outs[1][:, :-1], rtol=0, atol=0)


def test_centring_spreads_queries_that_share_one_offset(config, clustered_data):
    """Queries with a large common offset all land on one entry; centred, they spread over the store."""
    config = dataclasses.replace(config, memory_compression=False, max_retrieval_distance=2.0)  # every hit counts
    memory = FaissMemory.from_config(config, -1)
    keys = clustered_data(400, D, 40, seed=1)
    memory.write(keys)
    reader = MemoryReader(config, 1)
    with torch.no_grad():
        reader.q_proj.weight.copy_(torch.eye(D))
        reader.query_mean.copy_(torch.full((D,), 8.0))
    queries = torch.from_numpy(keys[:200]).float() + 8.0  # the content of the keys plus one shared offset

    def spread(raw: torch.Tensor) -> tuple[float, float]:
        ids = memory.search(raw, 1).ids[:, 0]
        counts = np.bincount(ids[ids >= 0], minlength=400)
        return counts.max() / len(ids), (counts > 0).mean()

    top_plain, read_plain = spread(queries)
    top_centred, read_centred = spread(reader.centred(queries, memory))
    assert top_plain > 0.2 and top_centred < 0.05 and read_centred > 2 * read_plain

"""FaissMemory: search against exact FAISS, misses, pruning, growth, reset, usage, config overrides."""

from __future__ import annotations

import logging

import faiss
import numpy as np
import pytest
import torch

from s3cmn.memory import FaissMemory, Provenance
from s3cmn.memory.settings import MemorySettings
from s3cmn.model_config import S3CMNConfig
from s3cmn.utils.fields import ConfigError


def _memory(**kwargs) -> FaissMemory:
    args = dict(dim=32, memory_size=8192, num_clusters=128, memory_compression=False, max_retrieval_distance=2.0)
    return FaissMemory(MemorySettings(**{**args, **kwargs}))


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_exact_phase_equals_index_flat(clustered_data):
    data = clustered_data(500, 32, 20, seed=0)
    queries = clustered_data(64, 32, 20, seed=0, sample_seed=1)
    mem = _memory()
    mem.write(data)
    assert mem.searchable and not mem.is_ivf  # 500 < 39 * 128
    res = mem.search(queries, k=8)
    flat = faiss.IndexFlatIP(32)
    flat.add(_normalise(data))
    sims, ids = flat.search(_normalise(queries), 8)
    np.testing.assert_array_equal(res.ids.numpy(), ids)
    np.testing.assert_allclose(res.distances.numpy(), 1 - sims, atol=1e-5)
    np.testing.assert_allclose(res.values.numpy(), data[ids], atol=0)


def test_ivf_recall_at_8_vs_exact(clustered_data):
    data = clustered_data(6000, 32, 300, seed=0)
    queries = clustered_data(500, 32, 300, seed=0, sample_seed=1)
    mem = _memory()  # defaults: nlist 128, nprobe 8
    for chunk in np.array_split(data, 3):
        mem.write(chunk)
    assert mem.is_ivf and mem.settings.memory_nprobe == 8 and mem.index.nprobe == 8
    res = mem.search(queries, k=8)
    flat = faiss.IndexFlatIP(32)
    flat.add(_normalise(data))
    _, exact = flat.search(_normalise(queries).astype(np.float32), 8)
    found = res.ids.numpy()
    recall = np.mean([len(set(found[i]) & set(exact[i])) / 8 for i in range(len(queries))])
    assert recall >= 0.9, recall
    occupancy = mem.stats().cluster_occupancy
    assert len(occupancy) == 128 and sum(occupancy) == 6000


def test_search_is_one_faiss_call_and_stats(clustered_data):
    mem = _memory()
    mem.write(clustered_data(300, 32, 10, seed=0))
    mem.search(clustered_data(1024, 32, 10, seed=0, sample_seed=1))
    stats = mem.stats()
    assert mem.counters["search_calls"] == 1 and stats.queries == 1024
    assert stats.hit_rate == 1.0 and 0 < stats.mean_similarity <= 1
    assert stats.latency_ms_p95 >= stats.latency_ms_p50 > 0
    assert stats.bytes_total == stats.bytes_keys + stats.bytes_values + stats.bytes_index > 0


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_max_retrieval_distance_makes_misses(metric):
    mem = _memory(memory_metric=metric, max_retrieval_distance=0.5)
    e = np.eye(32, dtype=np.float32)
    mem.write(e[:2])  # two orthogonal keys
    q = np.stack([e[0], 0.6 * e[0] + 0.8 * e[2]]).astype(np.float32)  # cos 1 and cos 0.6 with e0
    res = mem.search(q, k=2)
    # ip: distance = 1 - cos -> 0 and 0.4 (hit), e1 at 1.0 (miss). l2: sqrt(2 - 2cos) -> 0 and 0.894 (miss).
    expected_hits = [[True, False], [True, False]] if metric == "ip" else [[True, False], [False, False]]
    assert res.hit.tolist() == expected_hits
    assert (res.ids[~res.hit] == -1).all() and torch.isinf(res.distances[~res.hit]).all()
    assert (res.values[~res.hit] == 0).all()
    assert res.distances[0, 0].item() == pytest.approx(0.0, abs=1e-6)


def test_empty_memory_search_misses():
    mem = _memory()
    res = mem.search(np.ones((3, 32), np.float32), k=4)
    assert not res.hit.any() and (res.ids == -1).all() and res.values.shape == (3, 4, 32)


def test_prune_keeps_capacity_and_removes_least_used():
    mem = _memory(memory_size=10, memory_max_size=10)
    rng = np.random.default_rng(0)
    ids = mem.write(rng.standard_normal((10, 32)).astype(np.float32), step=1)
    used = ids[[0, 2, 4, 6, 8]]
    mem.record_usage(used, np.full(5, 0.5), step=2)
    mem.record_usage(ids[[1]], np.array([0.9]), step=3)  # used once with more mass than nothing
    new = mem.write(rng.standard_normal((4, 32)).astype(np.float32), step=4)
    assert mem.num_entries == 10 and mem.index.ntotal == 10
    survivors = set(mem.entries()["ids"].tolist())
    # The 4 never-used entries (3, 5, 7, 9) are gone; their slots hold the new ones.
    assert survivors == set(used.tolist()) | {int(ids[1])} | set(new.tolist())
    assert mem.stats().prunes == 1 and mem.stats().pruned_entries == 4


def test_prune_tie_break_is_recency():
    mem = _memory(memory_size=4, memory_max_size=4)
    ids = mem.write(np.eye(32, dtype=np.float32)[:4], step=1)
    for i, step in zip(ids, [5, 3, 2, 4], strict=True):  # equal counts and mass, different recency
        mem.record_usage(np.array([i]), np.array([0.25]), step=step)
    assert mem.prune(1).tolist() == [int(ids[2])]  # the least recently used
    assert mem.prune(1).tolist() == [int(ids[1])]


def test_growth_multiplies_capacity_up_to_max():
    mem = _memory(memory_size=8, memory_max_size=20, memory_full_policy="grow", memory_growth_factor=2.0)
    rng = np.random.default_rng(0)
    mem.write(rng.standard_normal((8, 32)).astype(np.float32))
    assert mem.capacity == 8
    mem.write(rng.standard_normal((1, 32)).astype(np.float32))
    assert mem.capacity == 16 and mem.num_entries == 9
    mem.write(rng.standard_normal((8, 32)).astype(np.float32))
    assert mem.capacity == 20 and mem.num_entries == 17
    mem.write(rng.standard_normal((8, 32)).astype(np.float32))
    assert mem.capacity == 20 and mem.num_entries == 20 and mem.stats().growths == 2
    assert mem.stats().prunes == 1


def test_reset_empties_everything():
    mem = _memory(memory_size=8, memory_max_size=32, memory_full_policy="grow")
    mem.write(np.random.default_rng(0).standard_normal((20, 32)).astype(np.float32))
    mem.search(np.ones((2, 32), np.float32))
    mem.reset()
    stats = mem.stats()
    assert mem.num_entries == 0 and not mem.searchable and mem.capacity == 8
    assert stats.queries == 0 and stats.growths == 0 and stats.bytes_total == 0


def test_record_usage_counts_and_ignores_misses():
    mem = _memory()
    ids = mem.write(np.eye(32, dtype=np.float32)[:3], step=7)
    mem.record_usage(np.array([[ids[0], -1], [ids[0], ids[2]]]), np.array([[0.5, 0.3], [0.25, 0.75]]), step=9)
    e = mem.entries()
    assert e["usage"].tolist() == [2, 0, 1]
    np.testing.assert_allclose(e["mass"], [0.75, 0.0, 0.75])
    assert e["last_used"].tolist() == [9, 7, 9] and e["write_step"].tolist() == [7, 7, 7]


def test_write_stores_provenance_and_rejects_bad_input():
    mem = _memory()
    prov = Provenance(torch.arange(6).view(2, 3), torch.tensor([4, 9]), torch.tensor([0, 1]))
    mem.write(torch.randn(2, 32), prov, step=3)
    e = mem.entries()
    assert e["tokens"][0, -3:].tolist() == [0, 1, 2] and (e["tokens"][:, :-3] == -1).all()
    assert e["positions"].tolist() == [4, 9] and e["segments"].tolist() == [0, 1]
    with pytest.raises(ValueError, match="NaN"):
        mem.write(torch.full((1, 32), float("nan")))
    with pytest.raises(ValueError, match=r"\(M, 32\)"):
        mem.write(torch.randn(2, 16))
    with pytest.raises(ConfigError, match="memory_size = 0 is out of range"):
        MemorySettings(dim=32, memory_size=0)


def test_values_are_detached_copies():
    h = torch.randn(4, 32, requires_grad=True)
    mem = _memory()
    mem.write(h * 2)
    stored = mem.entries()["values"].copy()
    with torch.no_grad():
        h.add_(1.0)
    np.testing.assert_array_equal(mem.entries()["values"], stored)


def test_from_config_applies_layer_overrides():
    config = S3CMNConfig.from_preset("tiny", memory_layer_settings={"-1": {"memory_size": 2048, "memory_top_k": 4}})
    mem = FaissMemory.from_config(config, 1)  # tiny has 2 layers: -1 is layer 1
    s = mem.settings
    assert (s.memory_size, s.memory_top_k, s.dim) == (2048, 4, config.hidden_dim)
    assert s.memory_compression_dim == config.memory_compression_dim and s.num_clusters == config.num_clusters
    assert FaissMemory.from_config(config, 0).settings.memory_size == config.memory_size
    assert config.layer_memory_fields(1)["memory_top_k"] == 4
    with pytest.raises(ConfigError, match="memory_top_k"):  # the config is the one validator (issue 14 s3)
        S3CMNConfig.from_preset("tiny", memory_layer_settings={"1": {"memory_topk": 4}})


def test_exact_phase_is_logged_once_then_ivf(caplog, clustered_data):
    mem = _memory(num_clusters=4)  # IVF from 39 * 4 = 156 entries
    with caplog.at_level(logging.INFO, logger="s3cmn.memory.store"):
        for i in range(3):
            mem.write(clustered_data(50, 32, 5, seed=0, sample_seed=i))
        assert not mem.is_ivf
        mem.write(clustered_data(50, 32, 5, seed=0, sample_seed=9))
    messages = [r.getMessage() for r in caplog.records]
    assert sum("exact search until then" in m for m in messages) == 1
    assert any("trained IVFFlat (nlist=4" in m for m in messages) and mem.is_ivf


def test_to_gpu_without_gpu_raises_a_clear_error():
    # This machine has no GPU: the GPU path itself is untestable here.
    with pytest.raises(RuntimeError, match="faiss-gpu"):
        _memory().to_gpu()


def test_evaluation_writes_evict_saved_training_entries_first(tmp_path):
    # Issue 15: with retrieval counts first, saved training entries that were ever retrieved stayed forever and
    # evaluation (which records no usage) cycled its writes through the slots left. Recency first fixes it.
    mem = _memory(memory_size=8, memory_max_size=8)
    rng = np.random.default_rng(0)
    train = rng.standard_normal((8, 32)).astype(np.float32)
    ids = mem.write(train, step=500)
    mem.record_usage(ids, np.full(8, 0.5), step=598)  # every training entry was retrieved
    mem.save(tmp_path)
    loaded = FaissMemory.load(tmp_path)
    evaluated = rng.standard_normal((6, 32)).astype(np.float32)
    for i in range(3):  # slot ids are reused after pruning: compare the stored values
        loaded.write(evaluated[2 * i : 2 * i + 2], step=i)
    kept = {row.tobytes() for row in loaded.entries()["values"]}
    assert all(row.tobytes() in kept for row in evaluated)  # the text just read stays...
    assert sum(row.tobytes() in kept for row in train) == 2  # ...the oldest training entries made room for it
    assert loaded.step > 598  # the write clock never runs backwards after a load

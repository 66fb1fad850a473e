"""save -> load gives identical searches; a missing or corrupt file gives a clear MemoryLoadError."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from s3cmn.memory import FaissMemory, MemoryLoadError, Provenance
from s3cmn.memory.settings import MemorySettings


def _filled(clustered_data, n: int = 1200) -> FaissMemory:
    mem = FaissMemory(MemorySettings(dim=32, memory_size=2048, num_clusters=16, memory_compression_dim=8, layer_idx=3))
    data = clustered_data(n, 32, 40, seed=0)
    prov = Provenance(torch.arange(n * 2).view(n, 2), torch.arange(n), torch.zeros(n, dtype=torch.long))
    for i in range(0, n, 400):
        mem.write(data[i : i + 400], Provenance(*(t[i : i + 400] for t in prov.__dict__.values())), step=i)
    mem.record_usage(np.arange(0, 100), np.full(100, 0.1))
    return mem


def test_save_load_identical_searches(tmp_path, clustered_data):
    mem = _filled(clustered_data)
    assert mem.is_ivf
    queries = clustered_data(200, 32, 40, seed=0, sample_seed=5)
    before = mem.search(queries)
    mem.save(tmp_path / "mem")
    loaded = FaissMemory.load(tmp_path / "mem")
    after = loaded.search(queries)
    for a, b in zip(before, after, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert loaded.settings == mem.settings and loaded.step == mem.step
    for name, arr in mem.entries().items():
        np.testing.assert_array_equal(loaded.entries()[name], arr)
    np.testing.assert_array_equal(loaded.pca.components, mem.pca.components)
    # the loaded memory keeps working: writes, pruning
    loaded.write(clustered_data(1000, 32, 40, seed=0, sample_seed=6))
    assert loaded.num_entries == 2048 and loaded.index.ntotal == 2048


def test_save_replaces_and_cleans_previous_files(tmp_path, clustered_data):
    mem = _filled(clustered_data)
    mem.save(tmp_path)
    mem.write(clustered_data(10, 32, 40, seed=0, sample_seed=7))
    mem.save(tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 3 and names[-1] == "memory.json", names  # arrays-*, index-*, memory.json
    assert FaissMemory.load(tmp_path).num_entries == mem.num_entries


def test_unfitted_memory_round_trips(tmp_path):
    mem = FaissMemory(MemorySettings(dim=32, memory_size=64, num_clusters=2, memory_compression_dim=8))
    mem.write(torch.randn(5, 32))  # no PCA yet: exact search over raw keys (issue 15: searchable at once)
    mem.save(tmp_path)
    loaded = FaissMemory.load(tmp_path)
    assert loaded.num_entries == 5 and loaded.searchable and loaded.pca is None and loaded.key_dim == 32
    loaded.write(torch.randn(40, 32))
    assert loaded.searchable and loaded.pca is not None and loaded.key_dim == 8


def test_missing_and_corrupt_files_give_clear_errors(tmp_path, clustered_data):
    with pytest.raises(MemoryLoadError, match="memory.json not found"):
        FaissMemory.load(tmp_path / "nothing")
    mem = _filled(clustered_data, 400)
    mem.save(tmp_path)
    manifest = json.loads((tmp_path / "memory.json").read_text())
    index_file = tmp_path / manifest["files"]["index"]["name"]
    blob = bytearray(index_file.read_bytes())
    blob[100] ^= 0xFF
    index_file.write_bytes(bytes(blob))
    with pytest.raises(MemoryLoadError, match=rf"{index_file.name} is corrupt.*re-save"):
        FaissMemory.load(tmp_path)
    index_file.unlink()
    with pytest.raises(MemoryLoadError, match=rf"{index_file.name} is missing"):
        FaissMemory.load(tmp_path)
    (tmp_path / "memory.json").write_text("{not json")
    with pytest.raises(MemoryLoadError, match="memory.json is corrupt"):
        FaissMemory.load(tmp_path)
    assert issubclass(MemoryLoadError, ValueError)

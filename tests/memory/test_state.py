"""FaissMemory.state_arrays / load_state_arrays: the one persistence API; today's saved format still loads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from s3cmn.memory import FaissMemory, MemoryLoadError, Provenance
from s3cmn.memory.content import STATE_NAMES
from s3cmn.memory.settings import MemorySettings
from s3cmn.quantization.memory_int8 import Int8FaissMemory, quantize_memory

V1_FOLDER = Path(__file__).parent / "data" / "memory-v1"  # saved by the s3cmn of commit 1afd2e4 (format v1)


def _filled(cls=FaissMemory, n: int = 300, **kw) -> FaissMemory:
    settings = dict(memory_size=512, num_clusters=4, memory_compression_dim=8, layer_idx=1, max_retrieval_distance=2.0)
    mem = cls(MemorySettings(dim=16, **{**settings, **kw}))
    x = torch.randn(n, 16, generator=torch.Generator().manual_seed(0))
    prov = Provenance(torch.arange(n * 3).view(n, 3), torch.arange(n), torch.arange(n) // 10)
    for i in range(0, n, 100):
        mem.write(x[i : i + 100], Provenance(prov.token_ids[i : i + 100], prov.positions[i : i + 100],
                                             prov.segment_ids[i : i + 100]), step=i)  # fmt: skip
    mem.record_usage(np.arange(0, 20), np.full(20, 0.5))
    return mem


def _same(a: FaissMemory, b: FaissMemory) -> None:
    for name, arr in a.entries().items():
        np.testing.assert_array_equal(b.entries()[name], arr, err_msg=name)
    assert (a.step, a.capacity, a.counters, a.key_dim) == (b.step, b.capacity, b.counters, b.key_dim)
    queries = torch.randn(7, a.settings.dim, generator=torch.Generator().manual_seed(5))
    for x, y in zip(a.search(queries), b.search(queries), strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


@pytest.mark.parametrize(
    "kind, kw",
    [("flat", dict(memory_compression=False, num_clusters=64)),  # exact search over raw keys, no PCA
     ("ivf", dict(memory_compression=False)),  # IVFFlat over raw keys
     ("pca", dict())],  # PCA-compressed keys, IVF
)  # fmt: skip
def test_state_arrays_round_trip(kind, kw):
    mem = _filled(**kw)
    assert mem.is_ivf == (kind != "flat") and (mem.pca is not None) == (kind == "pca")
    arrays = mem.state_arrays()
    assert set(STATE_NAMES) <= set(arrays) and arrays["index"].dtype == np.uint8
    assert ("pca_components" in arrays) == (kind == "pca")
    copy = FaissMemory(mem.settings)
    copy.load_state_arrays(arrays, json.loads(json.dumps(mem.state())))  # the state is JSON-ready
    _same(mem, copy)
    arrays["values"][:] = 0  # copies: the memory does not share them
    assert np.abs(mem.entries()["values"]).sum() > 0
    copy.write(torch.randn(50, 16))  # and the copy goes on working
    assert copy.num_entries == mem.num_entries + 50


def test_int8_round_trip_and_quantize_through_the_state():
    mem = _filled()
    int8 = quantize_memory(mem)
    assert isinstance(int8, Int8FaissMemory) and type(int8.index).__name__ == "IndexIVFScalarQuantizer"
    assert type(mem.index).__name__ == "IndexIVFFlat"  # the original is untouched
    copy = Int8FaissMemory(int8.settings)
    copy.load_state_arrays(int8.state_arrays(), int8.state())
    assert type(copy.index).__name__ == "IndexIVFScalarQuantizer"
    _same(int8, copy)


def test_load_state_arrays_refuses_inconsistent_arrays():
    mem = _filled()
    state, fresh = mem.state(), FaissMemory(mem.settings)
    arrays = mem.state_arrays()
    del arrays["usage"]
    with pytest.raises(MemoryLoadError, match=r"\['usage'\] are missing"):
        fresh.load_state_arrays(arrays, state)
    arrays = mem.state_arrays()
    arrays["positions"] = arrays["positions"][:-1]
    with pytest.raises(MemoryLoadError, match="capacity 512"):
        fresh.load_state_arrays(arrays, state)
    arrays = mem.state_arrays()
    arrays["occupied"][np.flatnonzero(arrays["occupied"] == 0)[0]] = 1  # one entry more than the index holds
    with pytest.raises(MemoryLoadError, match="the index holds 300 keys"):
        fresh.load_state_arrays(arrays, state)
    arrays = mem.state_arrays()
    arrays["index"] = arrays["index"][:50]
    with pytest.raises(MemoryLoadError, match="not a readable FAISS index"):
        fresh.load_state_arrays(arrays, state)
    assert fresh.num_entries == 0  # nothing was half-loaded


def test_a_memory_saved_in_todays_format_loads():
    """The v1 folder (48 entries of width 8 in 3 writes, PCA to 4, IVF over one list) loads as it was saved."""
    mem = FaissMemory.load(V1_FOLDER)
    assert (mem.num_entries, mem.settings.dim, mem.key_dim, mem.step, mem.settings.layer_idx) == (48, 8, 4, 3, 3)
    assert mem.is_ivf and mem.pca is not None and mem.index.ntotal == 48
    rng = np.random.default_rng(0)  # the values were drawn so when the folder was written
    values = np.concatenate([rng.standard_normal((16, 8)).astype(np.float32) for _ in range(3)])
    entries = mem.entries()
    np.testing.assert_array_equal(entries["values"], values)
    assert entries["segments"].tolist() == [s for s in range(3) for _ in range(16)]
    assert entries["usage"][[0, 5]].tolist() == [1, 1] and entries["usage"].sum() == 2
    found = mem.search(values[:10], k=1)
    assert found.ids[:, 0].tolist() == list(range(10))  # each stored value finds itself


def test_a_manifest_of_another_version_names_the_format_change(tmp_path):
    folder = tmp_path / "mem"
    shutil.copytree(V1_FOLDER, folder)
    manifest = json.loads((folder / "memory.json").read_text())
    (folder / "memory.json").write_text(json.dumps({**manifest, "version": 3}))
    with pytest.raises(MemoryLoadError, match="version 3, but this s3cmn reads versions 1 to 2"):
        FaissMemory.load(folder)
    (folder / "memory.json").write_text(json.dumps({k: v for k, v in manifest.items() if k != "pca"}))
    with pytest.raises(MemoryLoadError, match=r"lacks the keys \['pca'\]"):
        FaissMemory.load(folder)

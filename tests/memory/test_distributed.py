"""Two gloo processes write different values and record different usage: both end with identical memories; a
non-finite loss on one rank discards the pass's writes on both."""

from __future__ import annotations

import datetime
import json
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from s3cmn.memory import FaissMemory, MemoryBank, Provenance, gather_writes, synced_write
from s3cmn.memory.settings import MemorySettings

pytestmark = pytest.mark.distributed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        rng = np.random.default_rng(100 + rank)  # every rank sees different data
        centers = np.random.default_rng(0).standard_normal((6, 16))
        mem = FaissMemory(MemorySettings(dim=16, memory_size=120, num_clusters=2, memory_compression_dim=4, seed=0))
        for step in range(1, 7):
            n = 20 + 7 * rank  # different counts per rank: exercises the padded gather
            values = centers[rng.integers(0, 6, n)] + 0.3 * rng.standard_normal((n, 16))
            values = torch.from_numpy(values.astype(np.float32))
            prov = Provenance(torch.full((n, 3), rank), torch.arange(n), torch.full((n,), rank, dtype=torch.long))
            if mem.searchable:  # each rank reads with its own queries: usage differs until synced
                res = mem.search(values)
                mem.record_usage(res.ids, torch.rand(res.ids.shape, generator=torch.Generator().manual_seed(rank)))
            synced_write(mem, values, prov, step=step)
        assert mem.is_ivf and mem.stats().prunes > 0
        mem.save(Path(out) / f"rank{rank}")
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_hold_identical_memories(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    manifests = [json.loads((tmp_path / f"rank{r}" / "memory.json").read_text()) for r in range(2)]
    # content-addressed files: identical hashes = bit-identical arrays (values, usage, provenance) and index
    assert manifests[0]["files"] == manifests[1]["files"]
    mems = [FaissMemory.load(tmp_path / f"rank{r}") for r in range(2)]
    a, b = (m.entries() for m in mems)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    assert set(np.unique(a["segments"]).tolist()) == {0, 1}  # both ranks' writes are in both memories
    assert a["usage"].sum() > 0


def _nan_worker(rank: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    # a short timeout: a rank left waiting in a collective the other never joins fails instead of hanging
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=60))  # fmt: skip
    try:
        settings = MemorySettings(dim=8, memory_size=64, num_clusters=2, memory_compression=False,
                                  memory_write_stride=1)
        bank = MemoryBank({0: FaissMemory(settings)})
        ids = torch.full((2, 4), rank)
        counts = []
        for finite in (rank == 0, True):  # pass 1: rank 1's loss is NaN; pass 2: both finite
            with bank.forward_pass(read=False, write=True):
                bank.stage(0, torch.randn(2, 4, 8, generator=torch.Generator().manual_seed(rank)))
                counts.append(bank.finish(ids, finite))
            counts.append(bank[0].num_entries)
        (Path(out) / f"rank{rank}.json").write_text(json.dumps(counts))
    finally:
        dist.destroy_process_group()


def test_a_nan_on_one_rank_discards_the_writes_on_every_rank(tmp_path):
    mp.spawn(_nan_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    counts = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    # (written, entries) after pass 1 and pass 2: nothing from the NaN pass, then both ranks' 2 x 4 positions each
    assert counts[0] == counts[1] == [0, 0, 16, 16]


def test_gather_is_a_no_op_without_distributed():
    values = torch.randn(3, 8)
    prov = Provenance.empty(3)
    out_values, out_prov = gather_writes(values, prov)
    assert out_values is values and out_prov is prov

"""The chunked datastore build: equal to the in-memory build, resumable after an interruption at any point,
sharded over two gloo ranks with the same neighbours as one index, and a dead rank stops the other."""

from __future__ import annotations

import datetime
import os
import random
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from s3cmn.nexttoken import build as chunked
from s3cmn.nexttoken.build import DatastoreBuildError, build_datastore_chunked
from s3cmn.nexttoken.datastore import NextTokenDatastore
from s3cmn.nexttoken.fit import build_datastore

CONTEXT, STRIDE, BATCH = 32, 16, 2
STREAM_TOKENS = 1500  # 92 windows in 46 batches: 12 chunks of 4 batches


def _stream(n: int = STREAM_TOKENS) -> torch.Tensor:
    return torch.randint(1, 97, (n,), generator=torch.Generator().manual_seed(3))


def _model() -> torch.nn.Module:
    from s3cmn import S3CMNConfig, S3CMNForCausalLM

    config = S3CMNConfig.from_preset("tiny", vocab_size=97, hidden_dim=32, embedding_dim=32, num_layers=1,
                                     use_memory=False, spiking_units=16, s4d_d_state=8, mamba_d_state=4,
                                     hyena_filter_dim=8, hyena_filter_length=32, dropout=0.0)  # fmt: skip
    torch.manual_seed(0)
    return S3CMNForCausalLM(config).eval()


def _build(out: Path, **kwargs) -> Path:
    settings = dict(chunk_batches=4, kind="flat")
    return build_datastore_chunked(_model(), _stream(), out, CONTEXT, STRIDE, BATCH, **{**settings, **kwargs})


def _same_search(a: NextTokenDatastore, b: NextTokenDatastore, k: int = 8) -> None:
    queries = np.random.default_rng(0).standard_normal((64, a.dim)).astype(np.float32)
    da, ia = a.index.search(queries, k)
    db, ib = b.index.search(queries, k)
    np.testing.assert_array_equal(ia, ib)
    np.testing.assert_allclose(da, db, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["flat", "ivfflat"])
def test_the_chunked_build_equals_the_in_memory_build(tmp_path: Path, kind: str) -> None:
    reference = build_datastore(_model(), _stream(), CONTEXT, STRIDE, BATCH, kind=kind)
    store = NextTokenDatastore.load(_build(tmp_path / "ds", kind=kind))
    assert store.description == reference.description and len(store) == len(reference) == STREAM_TOKENS - 1
    np.testing.assert_array_equal(store.values, reference.values)
    np.testing.assert_array_equal(store.positions, reference.positions)
    _same_search(store, reference)
    assert not (tmp_path / "ds" / chunked.BUILD_DIR).exists()  # the chunks are removed once the index is whole


def test_a_build_interrupted_five_times_at_random_points_resumes_to_the_same_index(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reference = NextTokenDatastore.load(_build(tmp_path / "reference", kind="ivfflat"))
    write_chunk, fill = chunked._write_chunk, chunked._fill
    writes = {"n": 0, "kill_at": sorted(random.Random(7).sample(range(1, 13), 4))}  # 4 kills while encoding

    def write_or_die(*args, **kwargs):
        writes["n"] += 1
        if writes["kill_at"] and writes["n"] == writes["kill_at"][0]:
            writes["kill_at"].pop(0)
            raise KeyboardInterrupt(f"killed at chunk write {writes['n']}")
        return write_chunk(*args, **kwargs)

    fills = []

    def fill_or_die(*args, **kwargs):  # the fifth kill: once every chunk is written, while filling the index
        fills.append(1)
        if len(fills) == 1:
            raise KeyboardInterrupt("killed while filling the index")
        return fill(*args, **kwargs)

    monkeypatch.setattr(chunked, "_write_chunk", write_or_die)
    monkeypatch.setattr(chunked, "_fill", fill_or_die)
    kills = 0
    for _ in range(10):
        try:
            _build(tmp_path / "ds", kind="ivfflat", resume=kills > 0)
            break
        except KeyboardInterrupt:
            kills += 1
    assert kills == 5 and not writes["kill_at"] and writes["n"] == 12 + 4 and len(fills) == 2
    store = NextTokenDatastore.load(tmp_path / "ds")
    np.testing.assert_array_equal(store.values, reference.values)
    np.testing.assert_array_equal(store.positions, reference.positions)
    _same_search(store, reference)


def test_resume_refuses_a_build_started_with_other_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(chunked, "_fill", killed)
    with pytest.raises(KeyboardInterrupt):
        _build(tmp_path / "ds")
    with pytest.raises(DatastoreBuildError, match=r"other settings \(chunk_batches differ\)"):
        _build(tmp_path / "ds", chunk_batches=5, resume=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, port: int, out: str, kind: str, die: bool) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=60))  # fmt: skip
    try:
        if die and rank == 1:
            os._exit(3)  # a rank killed before the build: rank 0 must not wait for it forever
        try:
            _build(Path(out), kind=kind, timeout_s=5.0)
        except DatastoreBuildError as err:
            Path(out, f"error-{rank}.txt").write_text(str(err))
    finally:
        if not die:
            dist.destroy_process_group()


@pytest.mark.distributed
@pytest.mark.parametrize("kind", ["flat", "ivfflat"])
def test_two_ranks_build_shards_with_the_neighbours_of_one_index(tmp_path: Path, kind: str) -> None:
    mp.spawn(_rank, args=(_free_port(), str(tmp_path / "sharded"), kind, False), nprocs=2, join=True)
    sharded = NextTokenDatastore.load(tmp_path / "sharded")
    single = NextTokenDatastore.load(_build(tmp_path / "single", kind=kind))
    assert len(sharded.shards) == 2 and sharded.description == single.description
    assert len(sharded) == len(single) and sharded.source["tokens"] == STREAM_TOKENS - 1
    np.testing.assert_array_equal(sharded.values, single.values)
    np.testing.assert_array_equal(sharded.positions, single.positions)
    _same_search(sharded, single)
    assert sorted(p.name for p in (tmp_path / "sharded").iterdir()) == ["datastore.json", "shard-00", "shard-01"]


@pytest.mark.distributed
def test_a_dead_rank_stops_the_other_with_an_error_instead_of_a_hang(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    out.mkdir()
    spawn, port = mp.get_context("spawn"), _free_port()
    ranks = [spawn.Process(target=_rank, args=(rank, port, str(out), "flat", True)) for rank in (0, 1)]
    start = time.monotonic()
    for process in ranks:
        process.start()
    for process in ranks:
        process.join(timeout=max(1.0, 120 - (time.monotonic() - start)))
    assert not any(p.is_alive() for p in ranks), "rank 0 is still waiting for the dead rank"
    assert [p.exitcode for p in ranks] == [0, 3]
    message = (out / "error-0.txt").read_text()
    assert message.startswith("rank 0: not every rank finished") and "--resume" in message


def test_bytes_per_entry_of_a_loaded_ivf_datastore_counts_its_codes(tmp_path: Path) -> None:
    built = build_datastore(_model(), _stream(), CONTEXT, STRIDE, BATCH, kind="ivfflat")
    loaded = NextTokenDatastore.load(built.save(tmp_path / "ds"))  # memory-mapped: faiss serialises no codes
    assert loaded.bytes_per_entry() == pytest.approx(built.bytes_per_entry(), rel=0.02)
    assert loaded.bytes_per_entry() > 4 * loaded.dim  # the fp32 keys of an IVFFlat index

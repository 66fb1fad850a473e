"""A datastore built in resumable chunks, in one process or sharded over torchrun ranks.

:func:`build_datastore_chunked` writes what :func:`s3cmn.nexttoken.fit.build_datastore` returns (the
same windows, keys, index and training rows), but keeps its progress on disk and splits the work over the
ranks of a ``torch.distributed`` group (gloo on CPUs). Every rank, in order:

1. **plan** the stream's windows in batches, as the evaluation does, and group the batches into chunks of
   ``chunk_batches``; rank r of W takes the contiguous chunks ``[r C / W, (r + 1) C / W)``;
2. **encode** each of its chunks that is not on disk yet into ``OUT/.build/chunk-000123.npz`` (keys, values,
   positions), written atomically;
3. rank 0 **trains** the index (when the index kind needs it: IVF) on the rows ``NextTokenDatastore.build``
   would pick, gathered from the chunks, and writes ``OUT/.build/trained.faiss``; every shard starts from this
   one trained index, so the shards share one coarse quantizer and an IVF search over all of them probes the
   lists one index would;
4. **fill** its shard: the trained index plus its chunks' keys, saved as a datastore in ``OUT/shard-0r``
   (written into a temporary folder, then renamed);
5. rank 0 writes ``OUT/datastore.json`` naming the shards, then removes ``OUT/.build``.

With one rank, step 4 writes the single datastore into ``OUT`` itself. Between the steps the ranks meet at a
barrier with a timeout, so a rank that dies stops the others with an error instead of leaving them waiting.

**Resume**: ``OUT/.build/plan.json`` holds everything the result depends on (the stream's and the model's
SHA-256, windows, chunking, index settings, ranks). A build run again with ``resume=True`` and the same plan
keeps every chunk, the trained index and every shard already written, and does the rest; each step is
deterministic, so the result equals an uninterrupted build's.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import resource
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from s3cmn.data.windows import Window, sliding_windows, window_batches
from s3cmn.memory.index import import_faiss
from s3cmn.memory.persist import atomic_write
from s3cmn.nexttoken.datastore import (
    ADD_BATCH,
    MANIFEST,
    NextTokenDatastore,
    choose_index,
    trained_index,
    write_manifest,
)
from s3cmn.nexttoken.provenance import TextFingerprint
from s3cmn.nexttoken.stream import lm_batches

logger = logging.getLogger(__name__)

BUILD_DIR = ".build"
PLAN_FILE = "plan.json"
TRAINED_FILE = "trained.faiss"
DONE_FILE = "done"
DEFAULT_CHUNK_BATCHES = 64
DEFAULT_TIMEOUT_S = 1800.0


class DatastoreBuildError(RuntimeError):
    """A build that cannot go on: another rank stopped, or ``--resume`` met a different plan."""


@dataclass(frozen=True)
class Ranks:
    """This process's place in the build: rank ``rank`` of ``world`` (0 of 1 without torch.distributed)."""

    rank: int = 0
    world: int = 1
    timeout_s: float = DEFAULT_TIMEOUT_S

    @classmethod
    def current(cls, timeout_s: float = DEFAULT_TIMEOUT_S) -> Ranks:
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size(), timeout_s)
        return cls(0, 1, timeout_s)

    def meet(self, step: str) -> None:
        """Wait for every rank to finish ``step``; a rank that died or hangs ends the wait after the timeout."""
        if self.world == 1:
            return
        try:
            if dist.get_backend() == "gloo":  # names the ranks that did not arrive
                dist.monitored_barrier(timeout=timedelta(seconds=self.timeout_s))
            else:
                dist.barrier()
        except RuntimeError as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise DatastoreBuildError(f"rank {self.rank}: not every rank finished {step} ({first}); what was "
                                      "written is kept: run the build again with --resume") from err


def chunk_plan(stream_length: int, context_length: int, stride: int, batch_size: int,
               chunk_batches: int) -> list[list[list[Window]]]:
    """The stream's window batches (those of the evaluation) grouped into chunks of ``chunk_batches``."""
    if chunk_batches < 1:
        raise ValueError(f"chunk_batches must be >= 1, got {chunk_batches}")
    batches = window_batches(sliding_windows(stream_length, context_length, stride), batch_size)
    return [batches[i : i + chunk_batches] for i in range(0, len(batches), chunk_batches)]


def chunk_entries(chunk: list[list[Window]]) -> int:
    """The datastore entries (scored positions) of a chunk."""
    return sum(w.num_scored for batch in chunk for w in batch)


def rank_slice(num_chunks: int, rank: int, world: int) -> range:
    """The contiguous chunks of ``rank`` of ``world`` (shard r holds the r-th slice of the stream)."""
    return range(rank * num_chunks // world, (rank + 1) * num_chunks // world)


def model_digest(model: torch.nn.Module) -> str:
    """SHA-256 of the model's parameters and buffers (names, dtypes, shapes, bytes): the keys depend on them."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def _chunk_path(build: Path, i: int) -> Path:
    return build / f"chunk-{i:06d}.npz"


def _write_chunk(path: Path, keys: np.ndarray, values: np.ndarray, positions: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, keys=keys, values=values, positions=positions)
    atomic_write(path, buffer.getvalue())


def read_chunk(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(keys (n, D) float32, values (n,) int32, positions (n,) int64) of a written chunk."""
    with np.load(path, allow_pickle=False) as data:
        return data["keys"], data["values"], data["positions"]


@torch.no_grad()
def encode_chunks(model: torch.nn.Module, stream: Tensor, plan: list[list[list[Window]]], chunks: range,
                  build: Path, progress: bool = False) -> int:
    """Encode each chunk of ``chunks`` not on disk yet (a chunk is written atomically: on disk means whole); the
    number encoded now."""
    from tqdm.auto import tqdm

    todo = [i for i in chunks if not _chunk_path(build, i).is_file()]
    bar = tqdm(total=sum(chunk_entries(plan[i]) for i in todo), desc="datastore", unit="tok", disable=not progress,
               dynamic_ncols=True)  # fmt: skip
    for i in todo:
        parts = list(lm_batches(model, stream, plan[i], logits=False))
        keys = torch.cat([p.hidden for p in parts]).numpy()
        values = torch.cat([p.targets for p in parts]).numpy().astype(np.int32)
        positions = torch.cat([p.pos for p in parts]).numpy().astype(np.int64)
        _write_chunk(_chunk_path(build, i), keys, values, positions)
        bar.update(len(positions))
    bar.close()
    return len(todo)


def _train(description: str, dim: int, plan: list[list[list[Window]]], build: Path, train_size: int,
           seed: int) -> Any:
    """The trained, empty index of the whole build, on the rows NextTokenDatastore.build would pick."""
    offsets = np.cumsum([0] + [chunk_entries(c) for c in plan])

    def rows_of(rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), dim), np.float32)
        chunk_of = np.searchsorted(offsets, rows, side="right") - 1
        for i in np.unique(chunk_of):
            keys, _, _ = read_chunk(_chunk_path(build, int(i)))
            mine = chunk_of == i
            out[mine] = keys[rows[mine] - offsets[i]]
        return out

    return trained_index(description, dim, rows_of, int(offsets[-1]), train_size, seed)


def _fill(trained: Any, chunks: range, build: Path) -> tuple[Any, np.ndarray, np.ndarray]:
    """A copy of the trained index holding the keys of ``chunks``; their values and positions."""
    faiss = import_faiss()
    index = faiss.clone_index(trained)
    values, positions = [], []
    for i in chunks:
        keys, v, p = read_chunk(_chunk_path(build, i))
        for j in range(0, len(keys), ADD_BATCH):
            index.add(keys[j : j + ADD_BATCH])
        values.append(v)
        positions.append(p)
    if not values:  # more ranks than chunks: this shard is empty
        return index, np.zeros(0, np.int32), np.zeros(0, np.int64)
    return index, np.concatenate(values), np.concatenate(positions)


def _replace_folder(tmp: Path, final: Path) -> None:
    """Move the finished folder ``tmp`` to ``final`` (an older ``final`` is removed first)."""
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


def _prepare(out: Path, plan_record: dict[str, Any], ranks: Ranks, resume: bool) -> Path:
    """Rank 0 readies ``OUT/.build`` (kept under ``resume`` when its plan matches, else started afresh); every
    rank checks the plan it finds is its own."""
    build = out / BUILD_DIR
    if ranks.rank == 0:
        saved = _read_plan(build)
        if saved is not None and resume and saved != plan_record:
            changed = sorted(k for k in {*saved, *plan_record} if saved.get(k) != plan_record.get(k))
            raise DatastoreBuildError(f"--resume: the build in {build} was started with other settings "
                                      f"({', '.join(changed)} differ); run it without --resume to start again")
        if saved is None or not resume:
            shutil.rmtree(build, ignore_errors=True)
            (out / MANIFEST).unlink(missing_ok=True)  # an older datastore here is no longer whole
            for old in out.glob("shard-*"):
                shutil.rmtree(old, ignore_errors=True)
            build.mkdir(parents=True, exist_ok=True)
            atomic_write(build / PLAN_FILE, (json.dumps(plan_record, indent=2) + "\n").encode())
        else:
            logger.info("datastore build: resuming %s", build)
    ranks.meet("preparing the build folder")
    if _read_plan(build) != plan_record:
        raise DatastoreBuildError(f"rank {ranks.rank}: the build plan in {build} differs from this rank's: start "
                                  "every rank with the same checkpoint, text and settings")
    return build


def _read_plan(build: Path) -> dict[str, Any] | None:
    try:
        return json.loads((build / PLAN_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def build_datastore_chunked(model: torch.nn.Module, stream: Tensor, out: str | os.PathLike, context_length: int,
                            stride: int, batch_size: int = 8, *, kind: str = "auto", pca_dim: int = 0,
                            nprobe: int = 32, train_size: int = 200_000, seed: int = 0,
                            chunk_batches: int = DEFAULT_CHUNK_BATCHES, source: dict[str, Any] | None = None,
                            fingerprint: TextFingerprint | None = None, resume: bool = False,
                            timeout_s: float = DEFAULT_TIMEOUT_S, progress: bool = False) -> Path:
    """Build the datastore of ``stream`` (N + 1,) into ``out`` (module docstring), on this process's rank of
    the torch.distributed group (or alone); the folder ``NextTokenDatastore.load`` reads."""
    ranks = Ranks.current(timeout_s)
    out = Path(out)
    n, dim = int(stream.numel()) - 1, int(model.config.hidden_dim)
    description = choose_index(n, dim, kind, pca_dim)
    stream_bytes = stream.to(torch.int64).contiguous().numpy().tobytes()
    plan_record = {"format": "s3cmn-datastore-build", "version": 1, "entries": n, "dim": dim,
                   "stream_sha256": hashlib.sha256(stream_bytes).hexdigest(), "model_sha256": model_digest(model),
                   "context_length": context_length, "stride": stride, "batch_size": batch_size,
                   "chunk_batches": chunk_batches, "description": description, "nprobe": nprobe,
                   "train_size": train_size, "seed": seed, "ranks": ranks.world}  # fmt: skip
    plan = chunk_plan(n + 1, context_length, stride, batch_size, chunk_batches)
    mine = rank_slice(len(plan), ranks.rank, ranks.world)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    build = _prepare(out, plan_record, ranks, resume)

    shard_dir = out if ranks.world == 1 else out / f"shard-{ranks.rank:02d}"
    shard_done = _shard_done(out, build, ranks.rank, ranks.world)
    t = time.perf_counter()
    encoded = 0 if shard_done else encode_chunks(model, stream, plan, mine, build, progress)
    timings["encode_s"] = time.perf_counter() - t
    ranks.meet("encoding its chunks")

    t = time.perf_counter()
    trained_path = build / TRAINED_FILE
    faiss = import_faiss()
    if ranks.rank == 0 and not trained_path.is_file() and not _all_shards_done(out, ranks.world, build):
        trained = _train(description, dim, plan, build, train_size, seed)
        atomic_write(trained_path, faiss.serialize_index(trained).tobytes())
    timings["train_s"] = time.perf_counter() - t
    ranks.meet("training the index")

    t = time.perf_counter()
    if not shard_done:
        trained = faiss.deserialize_index(np.fromfile(trained_path, dtype=np.uint8))
        index, values, positions = _fill(trained, mine, build)
        shard_source = {**(source or {}), "tokens": n, "context_length": context_length, "stride": stride}
        if ranks.world > 1:
            shard_source.update(shard=ranks.rank, shards=ranks.world)
        store = NextTokenDatastore(index, values, positions, description, nprobe, shard_source,
                                   fingerprint if ranks.world == 1 else None)  # fmt: skip
        if ranks.world == 1:
            store.save(out)  # its manifest is written last
            atomic_write(build / DONE_FILE, b"")
        else:
            tmp = out / f".{shard_dir.name}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            store.save(tmp)
            _replace_folder(tmp, shard_dir)
    timings["fill_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - start
    timings["chunks_encoded"] = float(encoded)
    timings["max_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    all_timings = _gather(timings, ranks)
    ranks.meet("writing its shard")

    if ranks.rank == 0:
        if ranks.world > 1:
            _write_sharded_manifest(out, ranks.world, description, nprobe, dim, n, source, fingerprint,
                                    context_length, stride, all_timings)  # fmt: skip
        else:
            _add_build_record(out, all_timings)
        shutil.rmtree(build, ignore_errors=True)
    ranks.meet("writing the manifest")
    logger.info("datastore build: %d entries (%s) in %s over %d rank(s); rank %d: %s", n, description, out,
                ranks.world, ranks.rank, {k: round(v, 2) for k, v in timings.items()})  # fmt: skip
    return out


def _shard_done(out: Path, build: Path, rank: int, world: int) -> bool:
    """Whether this build already wrote shard ``rank``: a shard folder is renamed into place whole (a fresh
    build removes the old ones); the single datastore, written into ``out``, is marked ``.build/done``."""
    return (build / DONE_FILE).is_file() if world == 1 else (out / f"shard-{rank:02d}" / MANIFEST).is_file()


def _all_shards_done(out: Path, world: int, build: Path) -> bool:
    return all(_shard_done(out, build, r, world) for r in range(world))


def _gather(timings: dict[str, float], ranks: Ranks) -> list[dict[str, float]]:
    if ranks.world == 1:
        return [timings]
    everyone: list[Any] = [None] * ranks.world
    dist.all_gather_object(everyone, timings)
    return everyone


def _add_build_record(out: Path, timings: list[dict[str, float]]) -> None:
    """Record the build's timings in the single datastore's manifest (not among its hashed files)."""
    path = out / MANIFEST
    manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest["build"] = {"ranks": 1, "per_rank": timings}
    atomic_write(path, (json.dumps(manifest, indent=2) + "\n").encode())


def _write_sharded_manifest(out: Path, world: int, description: str, nprobe: int, dim: int, entries: int,
                            source: dict[str, Any] | None, fingerprint: TextFingerprint | None,
                            context_length: int, stride: int, timings: list[dict[str, float]]) -> None:
    shards = [f"shard-{r:02d}" for r in range(world)]
    source = {**(source or {}), "tokens": entries, "context_length": context_length, "stride": stride}
    write_manifest(out, [f"{s}/{MANIFEST}" for s in shards], fingerprint, description=description, nprobe=nprobe,
                   dim=dim, entries=entries, source=source, shards=shards,
                   build={"ranks": world, "per_rank": timings})  # fmt: skip


def init_build_group(timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
    """Join torchrun's process group (gloo: the build runs on CPUs) with a collective timeout, when
    WORLD_SIZE > 1 and no group exists; whether this call created it (then destroy it after the build)."""
    if dist.is_initialized() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    die_with_the_launcher()
    dist.init_process_group(backend="gloo", timeout=timedelta(seconds=timeout_s))
    return True


def die_with_the_launcher() -> None:
    """Under torchrun, end this rank when the launcher dies (Linux: PR_SET_PDEATHSIG). torchrun starts each rank
    in a session of its own, so a SIGKILL of torchrun's process group leaves the ranks running, and a build
    started again in the same folder would meet them there (their end removes the build folder)."""
    if "TORCHELASTIC_RUN_ID" not in os.environ or not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0) != 0:
        logger.warning("datastore build: could not tie this rank to torchrun (prctl errno %d)", ctypes.get_errno())
    if os.getppid() == 1:  # the launcher died before the call above
        raise DatastoreBuildError("torchrun, which started this rank, has stopped: start the build again")

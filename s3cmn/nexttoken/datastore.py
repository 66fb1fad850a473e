"""NextTokenDatastore: the kNN-LM datastore, (final hidden state at t -> id of token t + 1) over a training text.

Built once from a text (``s3cmn-memory build``), saved beside the checkpoint, loaded read-only. The FAISS index
is chosen by size (:func:`choose_index`), optionally behind a PCA (``pca_dim``); distances are squared L2 in
the (PCA) key space. Every entry keeps its provenance: the position of its query token in the source stream,
and the manifest names the source text (path, SHA-256, tokens) and the checkpoint it was computed with, and
holds the text's content fingerprint (:mod:`.provenance`), which the evaluation checks the scored text against.

Layout of a saved datastore (a folder)::

    datastore.json    manifest: format, version, index description, nprobe, dim, entries, source, fingerprint
                      (its settings), files + SHA-256
    index.faiss       faiss.write_index
    values.npy        (N,) int32 next-token ids
    positions.npy     (N,) int64 position of each entry's query token in the source stream
    fingerprint.npy   (S,) uint64 the source text's sampled n-gram hashes (absent in datastores saved before)

A sharded datastore (built by :mod:`.build`, in one process or over torchrun ranks) has the same manifest
with ``shards``: the folders ``shard-00``, ``shard-01``, ... each a datastore of the layout above (its slice of
the source stream, in order) without a fingerprint; ``files`` then lists the shards' manifests and the
fingerprint. It loads as one datastore searching every shard (:meth:`NextTokenDatastore.from_shards`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from s3cmn.memory.index import import_faiss
from s3cmn.memory.records import MemoryLoadError
from s3cmn.nexttoken.provenance import TextFingerprint
from s3cmn.nexttoken.readout import Neighbours

logger = logging.getLogger(__name__)

FORMAT = "s3cmn-nexttoken-datastore"
VERSION = 1
MANIFEST = "datastore.json"
FINGERPRINT_FILE = "fingerprint.npy"
INDEX_KINDS = ("auto", "flat", "ivfflat", "sq8", "ivfpq")
# Sizes at which "auto" moves to a more compact index (entries): exact below FLAT_MAX, IVFFlat below
# IVFFLAT_MAX (4 B/dim), IVF + 8-bit scalar quantizer below SQ8_MAX (1 B/dim), IVFPQ above (d/4 bytes).
FLAT_MAX, IVFFLAT_MAX, SQ8_MAX = 50_000, 2_000_000, 20_000_000
ADD_BATCH = 100_000  # keys added to an index at a time


def ivf_lists(n: int) -> int:
    """IVF lists for ``n`` entries: the power of two nearest 4 sqrt(n), in [16, 65536] (faiss' guideline)."""
    return int(min(65536, max(16, 2 ** round(math.log2(4 * math.sqrt(max(n, 1)))))))


def choose_index(n: int, dim: int, kind: str = "auto", pca_dim: int = 0) -> str:
    """The faiss.index_factory description of a datastore of ``n`` keys of width ``dim``."""
    if kind not in INDEX_KINDS:
        raise ValueError(f"datastore index {kind!r} is not one of {INDEX_KINDS}")
    d = pca_dim or dim
    if kind == "auto":
        kind = "flat" if n < FLAT_MAX else "ivfflat" if n < IVFFLAT_MAX else "sq8" if n < SQ8_MAX else "ivfpq"
    nlist = ivf_lists(n)
    body = {"flat": "Flat", "ivfflat": f"IVF{nlist},Flat", "sq8": f"IVF{nlist},SQ8",
            "ivfpq": f"IVF{nlist},PQ{max(1, d // 4)}"}[kind]  # fmt: skip
    if kind == "ivfpq" and d % max(1, d // 4):
        raise ValueError(f"IVFPQ needs a key width divisible by {d // 4}; choose pca_dim divisible by 4")
    return (f"PCA{pca_dim}," if pca_dim else "") + body


def training_rows(n: int, train_size: int, seed: int) -> np.ndarray:
    """The sorted rows of ``n`` keys an index that needs training is trained on (all of them up to
    ``train_size``): the same rows whichever way the keys are stored (one array, or a build's chunks)."""
    return np.sort(np.random.default_rng(seed).choice(n, min(n, train_size), replace=False))


def trained_index(description: str, d: int, rows_of: Callable[[np.ndarray], np.ndarray], n: int,
                  train_size: int = 200_000, seed: int = 0) -> Any:
    """An empty faiss index ``description`` over width ``d``, trained (when it needs it) on the keys
    ``rows_of(training_rows(n, train_size, seed))`` of a datastore of ``n`` keys."""
    faiss = import_faiss()
    index = faiss.index_factory(d, description, faiss.METRIC_L2)
    if not index.is_trained:
        ivf = faiss.try_extract_index_ivf(index)
        if ivf is not None:
            ivf.cp.seed = seed
        index.train(np.ascontiguousarray(rows_of(training_rows(n, train_size, seed)), dtype=np.float32))
    return index


def write_manifest(root: Path, names: list[str], fingerprint: TextFingerprint | None, **fields: Any) -> None:
    """Write ``root``/datastore.json last: ``fields``, the fingerprint (its hashes into a file of their own: a big
    training text's are megabytes) and the SHA-256 of the files ``names`` (relative to ``root``) and of it."""
    if fingerprint is not None:
        np.save(root / FINGERPRINT_FILE, fingerprint.hashes)
        names = [*names, FINGERPRINT_FILE]
    files = {name: hashlib.sha256((root / name).read_bytes()).hexdigest() for name in names}
    manifest = {"format": FORMAT, "version": VERSION, **fields, "files": files,
                "fingerprint": fingerprint.to_dict(with_hashes=False) if fingerprint is not None else None}
    tmp = root / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, root / MANIFEST)


def file_source(path: str | os.PathLike) -> dict[str, Any]:
    """A text file's identity: its resolved path and SHA-256."""
    p = Path(path).resolve()
    return {"path": str(p), "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}


@dataclass
class NextTokenDatastore:
    """A FAISS index of keys with the next-token id and source position of every entry (module docstring);
    ``fingerprint``: the source text's content (None: built without its text, so unchecked)."""

    index: Any
    values: np.ndarray  # (N,) int32
    positions: np.ndarray  # (N,) int64
    description: str
    nprobe: int = 32
    source: dict[str, Any] = field(default_factory=dict)
    fingerprint: TextFingerprint | None = None
    shards: list[Any] = field(default_factory=list)  # a sharded datastore's shard indexes (``index`` searches all)
    stored_bytes: int = 0  # loaded from disk: the bytes of its index, values and positions files

    def __post_init__(self) -> None:
        if self.index.ntotal != len(self.values) or len(self.values) != len(self.positions):
            raise ValueError(f"NextTokenDatastore: {self.index.ntotal} keys, {len(self.values)} values, "
                             f"{len(self.positions)} positions: they must match")  # fmt: skip
        self.set_nprobe(self.nprobe)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def set_nprobe(self, nprobe: int) -> None:
        self.nprobe = int(nprobe)
        faiss = import_faiss()
        for index in self.shards or [self.index]:
            ivf = faiss.try_extract_index_ivf(index)
            if ivf is not None:
                ivf.nprobe = self.nprobe

    @classmethod
    def from_shards(cls, shards: list[NextTokenDatastore], source: dict[str, Any] | None = None,
                    fingerprint: TextFingerprint | None = None) -> NextTokenDatastore:
        """One datastore searching ``shards`` (in stream order, one index description) with faiss.IndexShards:
        entry ids run on from one shard to the next, so ids, values and positions are those of one index
        built over the shards' keys in order; with exact search (or IVF shards sharing one trained quantizer)
        the neighbours are the same."""
        faiss = import_faiss()
        if not shards or len({s.description for s in shards}) != 1 or len({s.dim for s in shards}) != 1:
            raise ValueError("NextTokenDatastore.from_shards: needs one or more shards of one index description")
        index = faiss.IndexShards(shards[0].dim, False, True)  # not threaded, successive ids
        for shard in shards:
            index.add_shard(shard.index)
        values = np.concatenate([np.asarray(s.values) for s in shards])
        positions = np.concatenate([np.asarray(s.positions) for s in shards])
        stored = sum(s.stored_bytes for s in shards) if all(s.stored_bytes for s in shards) else 0
        return cls(index, values, positions, shards[0].description, shards[0].nprobe, dict(source or {}),
                   fingerprint, [s.index for s in shards], stored)  # fmt: skip

    @classmethod
    def build(cls, keys: np.ndarray, values: np.ndarray, positions: np.ndarray, *, kind: str = "auto",
              pca_dim: int = 0, nprobe: int = 32, train_size: int = 200_000, seed: int = 0,
              source: dict[str, Any] | None = None, fingerprint: TextFingerprint | None = None
              ) -> NextTokenDatastore:
        """Index ``keys`` (N, D) float32 with next-token ``values`` (N,) and source ``positions`` (N,)."""
        keys = np.ascontiguousarray(keys, dtype=np.float32)
        n, d = keys.shape
        if n == 0:
            raise ValueError("NextTokenDatastore.build: no keys (the text has no scored tokens)")
        description = choose_index(n, d, kind, pca_dim)
        start = time.perf_counter()
        index = trained_index(description, d, lambda rows: keys[rows], n, train_size, seed)
        for i in range(0, n, ADD_BATCH):
            index.add(keys[i : i + ADD_BATCH])
        logger.info("datastore: %s over %d keys of width %d built in %.1f s", description, n, d,
                    time.perf_counter() - start)  # fmt: skip
        return cls(index, np.asarray(values, np.int32), np.asarray(positions, np.int64), description, nprobe,
                   dict(source or {}), fingerprint)  # fmt: skip

    def search(self, queries: torch.Tensor | np.ndarray, k: int) -> Neighbours:
        """The ``k`` nearest entries of each query (N, D): squared L2 distances and next-token ids (torch)."""
        q = queries.detach().cpu().float().numpy() if isinstance(queries, torch.Tensor) else queries
        dist, ids = self.index.search(np.ascontiguousarray(q, dtype=np.float32), k)  # (N, k), (N, k)
        values = np.where(ids >= 0, self.values[np.maximum(ids, 0)], -1).astype(np.int64)
        dist = np.where(ids >= 0, dist, np.inf).astype(np.float32)
        return Neighbours(torch.from_numpy(dist), torch.from_numpy(values))

    def bytes_per_entry(self) -> float:
        """Serialised index bytes + value and position bytes, per entry (a loaded datastore: its files' bytes,
        since faiss serialises a memory-mapped IVF index without its codes)."""
        if self.stored_bytes:
            return self.stored_bytes / max(len(self), 1)
        faiss = import_faiss()
        index_bytes = sum(int(faiss.serialize_index(index).size) for index in self.shards or [self.index])
        return (index_bytes + self.values.nbytes + self.positions.nbytes) / max(len(self), 1)

    # --- persistence ------------------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> Path:
        """Write the datastore into ``directory`` (created); the manifest is written last."""
        faiss = import_faiss()
        if self.shards:
            raise ValueError("a sharded datastore is written by its build (s3cmn-memory build), shard by shard")
        root = Path(directory)
        root.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self.index, str(root / "index.faiss"))
        np.save(root / "values.npy", self.values)
        np.save(root / "positions.npy", self.positions)
        write_manifest(root, ["index.faiss", "values.npy", "positions.npy"], self.fingerprint,
                       description=self.description, nprobe=self.nprobe, dim=self.dim, entries=len(self),
                       source=self.source)  # fmt: skip
        logger.info("saved a datastore of %d entries (%s) to %s", len(self), self.description, root)
        return root

    @classmethod
    def load(cls, directory: str | os.PathLike, verify: bool = True) -> NextTokenDatastore:
        """Read a datastore written by :meth:`save` (the index memory-mapped read-only where faiss can)."""
        faiss = import_faiss()
        root = Path(directory)
        path = root / MANIFEST
        if not path.is_file():
            raise MemoryLoadError(f"{path} not found: build a datastore with `s3cmn-memory build CKPT --text FILE`")
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise MemoryLoadError(f"{path} is not valid JSON ({err}); rebuild the datastore") from err
        if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
            raise MemoryLoadError(f"{path} is not a {FORMAT} v{VERSION} manifest; rebuild the datastore")
        for name, digest in manifest["files"].items():
            f = root / name
            if not f.is_file():
                raise MemoryLoadError(f"{f} is missing: the datastore in {root} is incomplete; rebuild it")
            if verify and hashlib.sha256(f.read_bytes()).hexdigest() != digest:
                raise MemoryLoadError(f"{f} is corrupt (SHA-256 differs from {MANIFEST}); rebuild the datastore")
        # Datastores saved before fingerprints were kept have none: the evaluation says it cannot check them.
        fingerprint = None
        if manifest.get("fingerprint"):
            fingerprint = TextFingerprint.from_dict(manifest["fingerprint"], np.load(root / FINGERPRINT_FILE))
        if manifest.get("shards"):  # a sharded build (s3cmn.nexttoken.build): one datastore per shard
            shards = [cls.load(root / name, verify) for name in manifest["shards"]]
            return cls.from_shards(shards, manifest["source"], fingerprint)
        try:
            index = faiss.read_index(str(root / "index.faiss"), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
        except RuntimeError:  # index types without mmap support are read into memory
            index = faiss.read_index(str(root / "index.faiss"), faiss.IO_FLAG_READ_ONLY)
        values = np.load(root / "values.npy", mmap_mode="r")
        positions = np.load(root / "positions.npy", mmap_mode="r")
        stored = sum((root / name).stat().st_size for name in ("index.faiss", "values.npy", "positions.npy"))
        return cls(index, values, positions, manifest["description"], int(manifest["nprobe"]), manifest["source"],
                   fingerprint, stored_bytes=stored)  # fmt: skip

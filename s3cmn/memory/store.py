"""FaissMemory: the external memory of one layer, a FAISS index over compressed keys of past hidden states.

Each entry holds a *value* (the detached hidden state, float32, width D), a *key* (the value compressed by
PCA to width d, then L2-normalised), its provenance (token-id window, position, segment, write step) and
usage statistics (times retrieved, attention mass received, last step used). Entry ids are slot indices in
the store's arrays: stable while the entry lives, reused after it is pruned.

Phases:
1. *Raw keys* (compression on, fewer than ``pca_min_samples`` entries stored; default D): searchable from
   the first write, exactly, over the normalised raw values (key width D); the write that brings the store to
   ``pca_min_samples`` entries fits the PCA on all of them and re-encodes every key (logged once). With
   compression off keys are always the normalised values.
2. *Exact search* (fewer than 39 * num_clusters entries): IndexIDMap(IndexFlat); logged once.
3. *IVF*: an IndexIVFFlat trained (seeded k-means) on the stored keys; ``nprobe`` lists searched.

Distances (``max_retrieval_distance``; a hit farther than it is a miss, id -1):
- ``metric="ip"``: distance = 1 - cosine(query, key), in [0, 2];
- ``metric="l2"``: distance = Euclidean distance between the normalised keys = sqrt(2 - 2 cos), in [0, 2].
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from s3cmn.memory import content
from s3cmn.memory import index as faiss_index
from s3cmn.memory.content import ENTRY_ARRAYS
from s3cmn.memory.pca import PCA
from s3cmn.memory.persist import load_memory, save_memory
from s3cmn.memory.records import PROVENANCE_WINDOW, MemoryStats, Provenance, SearchResult
from s3cmn.memory.settings import MemorySettings

if TYPE_CHECKING:
    from s3cmn.model_config import S3CMNConfig

logger = logging.getLogger(__name__)

_REFIT_ERROR_FLOOR = 1e-3
_LATENCY_WINDOW = 1024


def _to_numpy(x: Tensor | np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """A detached CPU numpy copy in ``dtype``; float tensors go through float32 (numpy has no bfloat16)."""
    if isinstance(x, Tensor):
        x = x.detach().cpu()
        x = (x.float() if x.is_floating_point() else x).numpy()
    return np.ascontiguousarray(x, dtype=dtype)


def _normalise(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


class FaissMemory:
    """An attention-readable FAISS memory of hidden states (module docstring: phases and distances).

    Entry points: ``search`` (batched, one FAISS call), ``write`` (after a segment's forward, detached),
    ``record_usage``, ``stats``, ``reset``, ``refit_pca``, ``save`` / ``load``, ``to_gpu``.
    Built from a :class:`~s3cmn.memory.settings.MemorySettings` (``FaissMemory(MemorySettings(dim=64))``), named
    as S3CMNConfig's fields. When a write does not fit, ``memory_full_policy="prune"`` removes the least recently
    used entries (then fewest retrievals, least attention mass); ``"grow"`` multiplies the capacity by
    ``memory_growth_factor`` up to ``memory_max_size``, and prunes once that is reached. ``memory_write_stride``
    is not used by the store: it is this layer's setting for :func:`~s3cmn.memory.reader.select_write`, kept here
    so that per-layer overrides travel with the memory. ``ivf_codec`` (a class attribute) is how the IVF phase stores
    keys: "flat" (float32) here, "sq8" in :class:`~s3cmn.quantization.memory_int8.Int8FaissMemory`.
    """

    ivf_codec = "flat"

    def __init__(self, settings: MemorySettings) -> None:
        self.settings = settings  # checked when built (by S3CMNConfig for a model's stores)
        self.count_reads = False  # True: readers record usage in evaluation too (s3cmn.evaluation.runs.count_reads)
        self._gpu: faiss_index.GpuReplica | None = None  # after to_gpu()
        self._logged: set[str] = set()
        self.reset()
        ivf_min = faiss_index.IVF_MIN_POINTS_PER_LIST * settings.num_clusters
        if self.max_capacity < ivf_min:
            self._log_once("never_ivf", "%s: at most %d entries < 39*nlist = %d: always exact search",
                           self._name, self.max_capacity, ivf_min)  # fmt: skip

    @classmethod
    def from_config(cls, config: S3CMNConfig, layer_idx: int) -> FaissMemory:
        """The memory of block ``layer_idx``: settings from :meth:`S3CMNConfig.memory_settings`."""
        return cls(config.memory_settings(layer_idx))

    # --- state ------------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Empty the memory: entries, index, PCA, counters; capacity back to its initial value."""
        c = self.capacity = self.settings.memory_size
        self._values = np.zeros((c, self.settings.dim), np.float32)  # (M, D)
        self._keys = np.zeros((c, self.settings.dim), np.float32)  # (M, d); raw (d = D) until the PCA is fitted
        self._occupied = np.zeros(c, bool)
        self._usage = np.zeros(c, np.int64)  # times retrieved as a hit
        self._mass = np.zeros(c, np.float64)  # attention weight received
        self._last_used = np.zeros(c, np.int64)  # step of the last retrieval (or the write)
        self._write_step = np.zeros(c, np.int64)
        self._positions = np.full(c, -1, np.int64)
        self._segments = np.full(c, -1, np.int64)
        self._tokens = np.full((c, PROVENANCE_WINDOW), -1, np.int64)
        self.clear_pending_usage()
        self.pca: PCA | None = None
        self.set_index(None)
        self.step = 0
        self.counters = {"prunes": 0, "pruned_entries": 0, "growths": 0, "refits": 0, "search_calls": 0}
        self.reset_search_stats()

    def clear_pending_usage(self) -> None:
        """Zero the usage recorded since the last :meth:`commit_usage` (sized to the current capacity)."""
        self._new_usage = np.zeros(self.capacity, np.int64)
        self._new_mass = np.zeros(self.capacity, np.float64)
        self._new_last_used = np.zeros(self.capacity, np.int64)

    def pending_usage(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The usage recorded since the last :meth:`commit_usage`, by slot: retrievals (int64), attention mass
        (float64), last-used step (int64). The live arrays: a data-parallel sync all-reduces them in place."""
        return self._new_usage, self._new_mass, self._new_last_used

    def commit_usage(self) -> None:
        """Fold the usage recorded since the last commit into the entries' statistics. Done by ``write``,
        ``prune``, ``entries`` and ``save``; kept apart so data-parallel ranks can all-reduce it first
        (:func:`s3cmn.memory.distributed.sync_usage`) and stay identical."""
        self._usage += self._new_usage
        self._mass += self._new_mass
        np.maximum(self._last_used, self._new_last_used, out=self._last_used)
        self.clear_pending_usage()

    def reset_search_stats(self) -> None:
        """Zero the search counters (hit rate, similarity, latency) without touching the entries."""
        self._search = {"queries": 0, "slots": 0, "hits": 0, "similarity": 0.0}
        self._latencies: deque[float] = deque(maxlen=_LATENCY_WINDOW)

    @property
    def _name(self) -> str:
        return "memory" if self.settings.layer_idx is None else f"memory layer {self.settings.layer_idx}"

    @property
    def max_capacity(self) -> int:
        s = self.settings
        return s.memory_max_size if s.memory_full_policy == "grow" else s.memory_size

    @property
    def num_entries(self) -> int:
        return int(self._occupied.sum())

    def __len__(self) -> int:
        return self.num_entries

    @property
    def key_dim(self) -> int:
        return int(self._keys.shape[1])

    @property
    def searchable(self) -> bool:
        return self._index is not None and self._index.ntotal > 0

    @property
    def index(self):
        """The FAISS index (CPU, the source of truth); None before the first keys are indexed."""
        return self._index

    @property
    def is_ivf(self) -> bool:
        return self._index is not None and faiss_index.is_ivf(self._index)

    @property
    def last_latency_ms(self) -> float:
        """Wall time of the most recent FAISS search, in ms (0 before any)."""
        return self._latencies[-1] if self._latencies else 0.0

    @property
    def search_totals(self) -> dict[str, float]:
        """Counts since construction: queries, slots searched, hits, summed cosine of the hits (a copy)."""
        return dict(self._search)

    @property
    def search_latencies_ms(self) -> tuple[float, ...]:
        """Wall times of the last searches (up to 1024), in ms, oldest first."""
        return tuple(self._latencies)

    def entries(self) -> dict[str, np.ndarray]:
        """Copies of the live entries' arrays (ids, values, keys, provenance, usage), in id order."""
        self.commit_usage()
        ids = np.flatnonzero(self._occupied)
        names = [attr for attr, (name, _) in ENTRY_ARRAYS.items() if name not in (None, "occupied")]
        out = {name.lstrip("_"): getattr(self, name)[ids] for name in names}
        return {"ids": ids, **out}

    def usage(self) -> np.ndarray:
        """Times each live entry was retrieved (recorded in training only), in id order: (M,) int64, a copy."""
        self.commit_usage()
        return self._usage[self._occupied].copy()

    def _log_once(self, tag: str, msg: str, *args: Any) -> None:
        if tag not in self._logged:
            self._logged.add(tag)
            logger.info(msg, *args)

    def __repr__(self) -> str:
        phase = "ivf" if self.is_ivf else ("exact" if self.searchable else "empty/buffering")
        s = self.settings
        return (f"FaissMemory(layer={s.layer_idx}, entries={self.num_entries}/{self.capacity}, dim={s.dim}, "
                f"key_dim={self.key_dim}, metric={s.memory_metric}, phase={phase}, gpu={self._gpu is not None})")

    # --- keys -------------------------------------------------------------------------------------------
    @property
    def _compressed(self) -> bool:
        """Keys are PCA codes (compression on and the PCA fitted); before the fit they are the raw values."""
        return self.settings.memory_compression and self.pca is not None

    def encode(self, values: np.ndarray) -> np.ndarray:
        """Keys of ``values`` (N, D): PCA-compressed (once fitted) and L2-normalised, (N, d) float32."""
        return _normalise(self.pca.encode(values) if self._compressed else values)

    def key_centre(self, like: Tensor) -> Tensor:
        """(D,) the point the keys are centred on before compression: the PCA's mean once fitted, else 0."""
        if not self._compressed:
            return like.new_zeros(like.shape[-1])
        return torch.from_numpy(self.pca.mean).to(device=like.device, dtype=like.dtype)

    def encode_queries(self, queries: Tensor) -> Tensor:
        """Differentiable twin of :meth:`encode` for torch queries (..., D) -> (..., d). The PCA is a
        constant linear map: gradients flow through it into whatever produced ``queries``."""
        queries = self.pca.encode_torch(queries) if self._compressed else queries
        return torch.nn.functional.normalize(queries, dim=-1, eps=1e-12)

    def _fit_pca(self) -> None:
        values = self._values[self._occupied]
        self.pca = PCA.fit(values, self.settings.memory_compression_dim, self.settings.memory_compression_variance)
        logger.info("%s: PCA fitted on %d entries: %d -> %d dims, explained variance %.4f", self._name,
                    len(values), self.settings.dim, self.pca.out_dim, self.pca.explained_variance)  # fmt: skip

    def _rebuild(self) -> None:
        """Re-encode every stored key and rebuild the index from scratch (after a PCA (re)fit)."""
        key_dim = self.pca.out_dim if self.settings.memory_compression else self.settings.dim
        self._keys = np.zeros((self.capacity, key_dim), np.float32)
        slots = np.flatnonzero(self._occupied)
        self._keys[slots] = self.encode(self._values[slots])
        self._build_index()

    def _build_index(self) -> None:
        s, slots = self.settings, np.flatnonzero(self._occupied)
        threshold = faiss_index.IVF_MIN_POINTS_PER_LIST * s.num_clusters
        if len(slots) >= threshold:
            self._index = faiss_index.build_ivf(self._keys[slots], slots, s.num_clusters, s.memory_nprobe,
                                                s.memory_metric, s.seed, codec=self.ivf_codec)  # fmt: skip
            kind = {"flat": "IVFFlat", "sq8": "IVF-SQ8"}[self.ivf_codec]
            logger.info("%s: trained %s (nlist=%d, nprobe=%d) on %d keys", self._name, kind, s.num_clusters,
                        s.memory_nprobe, len(slots))  # fmt: skip
        else:
            self._index = faiss_index.build_exact(self.key_dim, s.memory_metric)
            if len(slots):
                self._index.add_with_ids(self._keys[slots], slots.astype(np.int64))
            self._log_once("exact", "%s: %d entries < 39*nlist = %d, exact search until then", self._name,
                           len(slots), threshold)  # fmt: skip
        self._index_changed()

    def rebuild_index(self) -> None:
        """Rebuild the index from the stored keys (exact or IVF by the number of entries; IVF with ``ivf_codec``)."""
        self._build_index()

    def refit_pca(self) -> None:
        """Refit the PCA on every stored value, re-encode all keys and rebuild the index (no-op without
        compression). Called by ``write`` when a batch's relative reconstruction error exceeds
        ``max(held_out_error, 1e-3) * (1 + refit_drift)`` (see :class:`PCA`)."""
        if not self._can_refit():
            return
        self._fit_pca()
        self._rebuild()
        self.counters["refits"] += 1

    def _can_refit(self) -> bool:
        return self.settings.memory_compression and self.num_entries >= max(2, self.settings.memory_compression_dim)

    def _drifted(self, values: np.ndarray) -> bool:
        error = self.pca.reconstruction_error(values)
        limit = max(self.pca.held_out_error, _REFIT_ERROR_FLOOR) * (1 + self.settings.memory_refit_drift)
        if error > limit:
            logger.info("%s: PCA reconstruction error %.4f > %.4f (held-out %.4f): refitting", self._name,
                        error, limit, self.pca.held_out_error)  # fmt: skip
        return error > limit

    # --- write ------------------------------------------------------------------------------------------
    def write(
        self, values: Tensor | np.ndarray, provenance: Provenance | None = None, step: int | None = None
    ) -> np.ndarray:
        """Store ``values`` (M, D) (detached, copied to float32) with their provenance; return their ids.

        ``step``: the caller's global step (default: previous step + 1), the write step and the clock for
        recency. Call it after the forward pass of a segment, never before, so no segment reads itself.
        """
        x, prov = self._checked_write(values, provenance)
        # The clock never runs backwards: a model loaded with a saved memory counts its writes from 0 again, and
        # its new entries must still be the most recent ones, or least-recently-used pruning would evict them
        # before the saved ones.
        self.step = int(step) if step is not None and int(step) > self.step else self.step + 1
        if len(x) == 0:
            return np.zeros(0, np.int64)
        self.commit_usage()
        self._make_room(len(x))
        slots = self._place(x, prov)
        # The keys, by phase: raw keys until the PCA can be fitted, a (re)fit that re-encodes everything, or
        # the new keys added to the index (built anew when the IVF phase is due).
        compression, samples = self.settings.memory_compression, self.settings.pca_min_samples
        if compression and self.pca is None and self.num_entries < samples:
            msg = "%s: exact search over raw keys until %d entries can fit the PCA"
            self._log_once("buffer", msg, self._name, samples)
            self._add_keys(slots, x)  # searchable from the first write
        elif compression and self.pca is None:
            self._fit_pca()
            self._rebuild()
        elif compression and self._can_refit() and self._drifted(x):
            self.refit_pca()
        else:
            ivf_due = self.num_entries >= faiss_index.IVF_MIN_POINTS_PER_LIST * self.settings.num_clusters
            self._add_keys(slots, x, rebuild=ivf_due and not self.is_ivf)
        return slots

    def _checked_write(
        self, values: Tensor | np.ndarray, provenance: Provenance | None
    ) -> tuple[np.ndarray, Provenance]:
        """``values`` as (M, D) float32 and their provenance, checked; the last ``max_capacity`` if more."""
        x = _to_numpy(values)  # (M, D)
        if x.ndim != 2 or x.shape[1] != self.settings.dim:
            raise ValueError(f"{self._name}.write: values must be (M, {self.settings.dim}), got {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError(f"{self._name}.write: values contain NaN or inf")
        prov = provenance if provenance is not None else Provenance.empty(len(x))
        if len(prov) != len(x):
            raise ValueError(f"{self._name}.write: {len(x)} values but provenance for {len(prov)}")
        if len(x) > self.max_capacity:
            n = self.max_capacity
            logger.warning("%s: a write of %d entries exceeds the largest capacity %d; keeping the last %d",
                           self._name, len(x), n, n)  # fmt: skip
            x, prov = x[-n:], Provenance(prov.token_ids[-n:], prov.positions[-n:], prov.segment_ids[-n:])
        return x, prov

    def _place(self, x: np.ndarray, prov: Provenance) -> np.ndarray:
        """Put the values (M, D) and their provenance in the first M free slots (room is made); their ids."""
        slots = np.flatnonzero(~self._occupied)[: len(x)]
        self._values[slots] = x
        self._occupied[slots] = True
        self._usage[slots] = 0
        self._mass[slots] = 0.0
        self._last_used[slots] = self._write_step[slots] = self.step
        self._positions[slots] = _to_numpy(prov.positions, np.int64)
        self._segments[slots] = _to_numpy(prov.segment_ids, np.int64)
        tokens = _to_numpy(prov.token_ids, np.int64)[:, -PROVENANCE_WINDOW:]
        self._tokens[slots] = -1
        self._tokens[slots, PROVENANCE_WINDOW - tokens.shape[1] :] = tokens
        return slots

    def _add_keys(self, slots: np.ndarray, x: np.ndarray, rebuild: bool = False) -> None:
        """Encode ``x`` into the keys of ``slots`` and add them to the index (built first if there is none;
        rebuilt from every key with ``rebuild``)."""
        self._keys[slots] = keys = self.encode(x)
        if self._index is None and self.settings.memory_compression and self.pca is None:
            self._index = faiss_index.build_exact(self.key_dim, self.settings.memory_metric)  # raw-key phase: exact
        if self._index is None or rebuild:
            self._build_index()  # first keys, or enough entries to train the IVF quantizer
            return
        with faiss_index.single_threaded():
            self._index.add_with_ids(keys, slots.astype(np.int64))
        self._index_changed()

    def _make_room(self, m: int) -> None:
        def short() -> bool:
            return self.num_entries + m > self.capacity

        s = self.settings
        while s.memory_full_policy == "grow" and short() and self.capacity < s.memory_max_size:
            self._grow(min(max(int(self.capacity * s.memory_growth_factor), self.capacity + 1), s.memory_max_size))
        if short():
            self.prune(self.num_entries + m - self.capacity)

    def _grow(self, new_capacity: int) -> None:
        extra = new_capacity - self.capacity
        for attr, (_, fill) in ENTRY_ARRAYS.items():
            old = getattr(self, attr)
            setattr(self, attr, np.concatenate([old, np.full((extra, *old.shape[1:]), fill, old.dtype)]))
        logger.info("%s: capacity %d -> %d", self._name, self.capacity, new_capacity)
        self.capacity = new_capacity
        self.counters["growths"] += 1

    def prune(self, n: int) -> np.ndarray:
        """Remove the ``n`` least recently used entries (last retrieval, or the write; then fewest retrievals,
        least attention mass, lowest id) with the index's ``remove_ids``. Returns their ids.

        Recency first, not retrieval counts: evaluation and generation record no usage, and with counts first
        the saved training entries that were ever retrieved would never leave, while the text being read
        cycled through the few slots left. With recency first, what is not read is forgotten oldest-first.
        """
        self.commit_usage()
        slots = np.flatnonzero(self._occupied)
        order = np.lexsort((slots, self._mass[slots], self._usage[slots], self._last_used[slots]))
        victims = slots[order[:n]]
        if self._index is not None and len(victims):
            with faiss_index.single_threaded():
                self._index.remove_ids(victims.astype(np.int64))
            self._index_changed()
        self._occupied[victims] = False
        self._tokens[victims] = -1
        self._positions[victims] = self._segments[victims] = -1
        self.counters["prunes"] += 1
        self.counters["pruned_entries"] += len(victims)
        logger.debug("%s: pruned %d entries", self._name, len(victims))
        return victims

    # --- read -------------------------------------------------------------------------------------------
    def search(self, queries: Tensor | np.ndarray, k: int | None = None, *, encoded: bool = False) -> SearchResult:
        """Search all Q queries in one FAISS call (``k`` defaults to ``top_k``).

        ``queries``: (Q, D) raw hidden states (encoded here), or with ``encoded=True`` (Q, d) keys already
        passed through :meth:`encode` / :meth:`encode_queries`. Before anything is searchable: all misses.
        """
        k = self.settings.memory_top_k if k is None else k
        q = _to_numpy(queries)
        n = q.shape[0]
        self._search["queries"] += n
        self._search["slots"] += n * k
        if not self.searchable:
            return self._result(np.full((n, k), np.inf, np.float32), np.full((n, k), -1), np.zeros((n, k), bool))
        q = q if encoded else self.encode(q)  # (Q, d)
        if q.shape[1] != self.key_dim:
            raise ValueError(f"{self._name}.search: encoded queries must be (Q, {self.key_dim}), got {q.shape}")
        start = time.perf_counter()
        raw, ids = self._search_index().search(q, k)  # (Q, k), (Q, k)
        self.counters["search_calls"] += 1
        ip = self.settings.memory_metric == "ip"
        cosine = raw if ip else 1.0 - raw / 2.0  # raw = squared L2 for "l2"
        dist = 1.0 - raw if ip else np.sqrt(np.maximum(raw, 0.0))
        hit = (ids >= 0) & (dist <= self.settings.max_retrieval_distance)
        result = self._result(np.where(hit, dist, np.inf).astype(np.float32), np.where(hit, ids, -1), hit)
        self._latencies.append((time.perf_counter() - start) * 1e3)
        self._search["hits"] += int(hit.sum())
        self._search["similarity"] += float(cosine[hit].sum())
        return result

    def _result(self, dist: np.ndarray, ids: np.ndarray, hit: np.ndarray) -> SearchResult:
        safe, miss = np.where(hit, ids, 0), ~hit
        keys = self._keys[safe]  # (Q, k, d), a copy
        values = self._values[safe]  # (Q, k, D), a copy
        keys[miss] = 0.0
        values[miss] = 0.0
        arrays = (dist, ids.astype(np.int64), keys, values, hit)
        return SearchResult(*(torch.from_numpy(a) for a in arrays))

    def record_usage(self, ids: Tensor | np.ndarray, weights: Tensor | np.ndarray, step: int | None = None) -> None:
        """Credit the entries ``ids`` (any shape, -1 ignored) with one retrieval each and attention mass
        ``weights`` (same shape); mark them used at ``step`` (default: the current step). Recorded as
        pending usage, folded in by :meth:`commit_usage`."""
        ids = _to_numpy(ids, np.int64).reshape(-1)
        w = _to_numpy(weights, np.float64).reshape(-1)
        keep = (ids >= 0) & (ids < self.capacity)
        ids, w = ids[keep], w[keep]
        keep = self._occupied[ids]
        ids, w = ids[keep], w[keep]
        np.add.at(self._new_usage, ids, 1)
        np.add.at(self._new_mass, ids, w)
        self._new_last_used[ids] = self.step if step is None else step
        self.step = max(self.step, int(step)) if step is not None else self.step  # one clock for writes and reads

    # --- GPU --------------------------------------------------------------------------------------------
    def to_gpu(self, device: int = 0) -> FaissMemory:
        """Search on GPU ``device`` (faiss GPU build). The CPU index stays the source of truth (writes,
        pruning, saving); the GPU replica is re-copied at the first search after a change. Raises
        RuntimeError when faiss has no GPU support. Untestable on this CPU-only machine."""
        self._gpu = faiss_index.GpuReplica(device)
        logger.info("%s: searching on GPU %d", self._name, device)
        return self

    def to_cpu(self) -> FaissMemory:
        self._gpu = None
        return self

    def set_index(self, index) -> None:
        """Replace the CPU index (None: nothing indexed); any GPU replica is copied again at the next search."""
        self._index = index
        self._index_changed()

    def _index_changed(self) -> None:
        if self._gpu is not None:
            self._gpu.invalidate()

    def _search_index(self):
        return self._index if self._gpu is None else self._gpu.of(self._index)

    # --- statistics & persistence -----------------------------------------------------------------------
    def stats(self) -> MemoryStats:
        """Hit rate, similarity, latency, sizes, counters, PCA and IVF figures now (:func:`~.content.stats`)."""
        return content.stats(self)

    def state_arrays(self) -> dict[str, np.ndarray]:
        """The memory's content as named arrays (copies); with :meth:`state` all that :meth:`load_state_arrays`
        needs: the one persistence API (:func:`s3cmn.memory.content.state_arrays`; files: :mod:`~.persist`)."""
        return content.state_arrays(self)

    def state(self) -> dict[str, Any]:
        """The scalars beside :meth:`state_arrays` (JSON-ready): capacity, step, counters, PCA metadata or None."""
        return content.state(self)

    def load_state_arrays(self, arrays: dict[str, np.ndarray], state: dict[str, Any]) -> None:
        """Replace this memory's content by ``arrays`` and ``state`` (checked first; MemoryLoadError names what
        does not fit: :func:`s3cmn.memory.content.load_state_arrays`)."""
        content.load_state_arrays(self, arrays, state)

    def save(self, directory: str) -> None:
        """Write the memory to ``directory`` atomically (format: :mod:`s3cmn.memory.persist`)."""
        save_memory(self, directory)

    @classmethod
    def load(cls, directory: str) -> FaissMemory:
        """Read a memory written by :meth:`save`; MemoryLoadError names a missing or corrupt file."""
        return load_memory(cls, directory)

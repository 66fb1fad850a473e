"""The FAISS memory in 8 bits: an IndexIVFScalarQuantizer (SQ8) in place of the IndexIVFFlat.

SQ8 stores each key component as one byte (a per-dimension min/max range learnt when the index is trained;
by residual from the IVF centroid), so the index's keys take d bytes instead of 4d: 4x smaller. Distances
are computed from the decoded keys, so the ranking is approximate; :func:`measure_recall` measures recall@k
of the SQ8 and the float index against exact search on the same stored keys.

``Int8FaissMemory`` is a ``FaissMemory`` whose IVF phase builds the SQ8 index (the exact phase, fewer than
39 * nlist entries, stays an exact float index); everything else (writes, pruning, PCA, statistics,
``save`` / ``load``) is the store's own. The store keeps its float copies of keys and values, which the
reader attends over; only the searched index is 8-bit.
"""

from __future__ import annotations

import logging
import tempfile
from typing import TYPE_CHECKING

import numpy as np

from s3cmn.memory import index as faiss_index
from s3cmn.memory.store import FaissMemory

if TYPE_CHECKING:
    from s3cmn.memory.records import MemoryStats

logger = logging.getLogger(__name__)


def build_ivf_sq8(keys: np.ndarray, ids: np.ndarray, nlist: int, nprobe: int, metric: str, seed: int):
    """An IndexIVFScalarQuantizer (QT_8bit) trained on ``keys`` (N, d) (seeded k-means, spherical for "ip"),
    holding ``keys`` under ``ids``: the 8-bit twin of :func:`s3cmn.memory.index.build_ivf`."""
    import faiss

    d = keys.shape[1]
    keys = np.ascontiguousarray(keys, dtype=np.float32)
    quantizer = faiss.IndexFlatIP(d) if metric == "ip" else faiss.IndexFlatL2(d)
    index = faiss.IndexIVFScalarQuantizer(quantizer, d, nlist, faiss.ScalarQuantizer.QT_8bit,
                                          faiss_index.metric_type(metric))  # fmt: skip
    index.cp.seed = seed
    index.cp.spherical = metric == "ip"
    index.train(keys)
    index.add_with_ids(keys, np.ascontiguousarray(ids, dtype=np.int64))
    index.nprobe = nprobe
    return index


def index_nbytes(index) -> int:
    """Bytes of ``index`` as FAISS serialises it (codes, ids, centroids, SQ ranges); 0 for None."""
    if index is None:
        return 0
    import faiss

    return int(faiss.serialize_index(index).nbytes)


class Int8FaissMemory(FaissMemory):
    """A FaissMemory whose IVF index is SQ8 (module docstring). Same constructor, API and save format."""

    def _build_index(self) -> None:
        slots = np.flatnonzero(self._occupied)
        if len(slots) < faiss_index.IVF_MIN_POINTS_PER_LIST * self.num_clusters:
            super()._build_index()  # the exact phase: a float IndexFlat, small by definition
            return
        self._index = build_ivf_sq8(self._keys[slots], slots, self.num_clusters, self.nprobe, self.metric, self.seed)
        self._gpu_index = None
        logger.info("%s: trained IVF-SQ8 (nlist=%d, nprobe=%d) on %d keys", self._name, self.num_clusters,
                    self.nprobe, len(slots))  # fmt: skip

    def stats(self) -> MemoryStats:
        """The store's statistics, with ``bytes_index`` the SQ8 index's real size (1 byte a key component)."""
        stats = super().stats()
        stats.bytes_total += index_nbytes(self._index) - stats.bytes_index
        stats.bytes_index = index_nbytes(self._index)
        return stats

    def __repr__(self) -> str:
        return "Int8" + super().__repr__()


def quantize_memory(memory: FaissMemory) -> Int8FaissMemory:
    """An Int8FaissMemory with ``memory``'s settings, entries, provenance, statistics and PCA, its IVF index
    rebuilt as SQ8 (copied through the store's own save / load; ``memory`` is left unchanged)."""
    with tempfile.TemporaryDirectory(prefix="s3cmn-memory-") as tmp:
        memory.save(tmp)
        int8 = Int8FaissMemory.load(tmp)
    if int8.searchable:
        int8._build_index()
    return int8


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over queries of |found_q ∩ truth_q| / k for id arrays (Q, k) (-1 ids never count)."""
    hits = [len(set(f[f >= 0]) & set(t[t >= 0])) for f, t in zip(found, truth, strict=True)]
    return float(np.mean(hits) / truth.shape[1])


def measure_recall(memory: FaissMemory, queries: np.ndarray, k: int) -> dict[str, float]:
    """recall@k of ``memory``'s float index and of its SQ8 twin against exact search over the same stored keys,
    their overlap, and both index sizes. ``queries`` (Q, D) raw hidden states. Searches count in the
    memories' statistics; set ``max_retrieval_distance`` to 2.0 so that no neighbour is cut as a miss."""
    int8 = quantize_memory(memory)
    entries = memory.entries()
    q = memory.encode(np.ascontiguousarray(queries, dtype=np.float32))  # (Q, d) unit-norm
    scores = q @ entries["keys"].T  # (Q, M): cosine; the same ranking as L2 on unit-norm keys
    truth = entries["ids"][np.argsort(-scores, axis=1, kind="stable")[:, :k]]  # (Q, k)
    float_ids = memory.search(queries, k).ids.numpy()
    sq8_ids = int8.search(queries, k).ids.numpy()
    return {
        "recall_float": recall_at_k(float_ids, truth),
        "recall_sq8": recall_at_k(sq8_ids, truth),
        "sq8_vs_float": recall_at_k(sq8_ids, float_ids),
        "index_bytes_float": float(index_nbytes(memory._index)),
        "index_bytes_sq8": float(index_nbytes(int8._index)),
    }

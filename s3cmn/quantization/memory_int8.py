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

from typing import TYPE_CHECKING

import numpy as np

from s3cmn.memory.store import FaissMemory

if TYPE_CHECKING:
    from s3cmn.memory.records import MemoryStats


def index_nbytes(index) -> int:
    """Bytes of ``index`` as FAISS serialises it (codes, ids, centroids, SQ ranges); 0 for None."""
    if index is None:
        return 0
    import faiss

    return int(faiss.serialize_index(index).nbytes)


class Int8FaissMemory(FaissMemory):
    """A FaissMemory whose IVF index is SQ8 (module docstring). Same constructor, API and save format."""

    ivf_codec = "sq8"

    def stats(self) -> MemoryStats:
        """The store's statistics, with ``bytes_index`` the SQ8 index's real size (1 byte a key component)."""
        stats = super().stats()
        stats.bytes_total += index_nbytes(self.index) - stats.bytes_index
        stats.bytes_index = index_nbytes(self.index)
        return stats

    def __repr__(self) -> str:
        return "Int8" + super().__repr__()


def quantize_memory(memory: FaissMemory) -> Int8FaissMemory:
    """An Int8FaissMemory with ``memory``'s settings, entries, provenance, statistics and PCA, its IVF index
    rebuilt as SQ8 (copied through the store's state arrays; ``memory`` is left unchanged)."""
    int8 = Int8FaissMemory(memory.settings)
    int8.load_state_arrays(memory.state_arrays(), memory.state())
    if int8.searchable:
        int8.rebuild_index()
    return int8


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over queries of |found_q ∩ truth_q| / k for id arrays (Q, k) (-1 ids never count)."""
    hits = [len(set(f[f >= 0]) & set(t[t >= 0])) for f, t in zip(found, truth, strict=True)]
    return float(np.mean(hits) / truth.shape[1])


def measure_recall(memory: FaissMemory, queries: np.ndarray, k: int) -> dict[str, float]:
    """recall@k of ``memory``'s float index and of its SQ8 twin against exact search over the same stored keys,
    their overlap, and both index sizes. ``queries`` (Q, D) raw hidden states. Searches count in the
    memories' statistics; build it with ``max_retrieval_distance = 2.0`` so that no neighbour is cut as a miss."""
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
        "index_bytes_float": float(index_nbytes(memory.index)),
        "index_bytes_sq8": float(index_nbytes(int8.index)),
    }

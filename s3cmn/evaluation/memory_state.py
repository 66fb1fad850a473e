"""The external memory during evaluation: a stated starting content, fresh copies per run, read statistics,
and a check that the starting memory does not already hold the text to be scored.

A memory-on run starts from a deep copy of the starting bank (FAISS indexes are copied by serialisation), so
one run never sees another's writes, and the model is left holding the starting memory afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import Tensor

from s3cmn.memory.bank import MemoryBank


@dataclass
class MemorySnapshot:
    """A deep copy of a model's memory bank (its stores and write counter)."""

    bank: MemoryBank
    start: str  # "saved" (as loaded from the checkpoint) or "empty"


def snapshot_memories(model: Any, start: str) -> MemorySnapshot:
    """Copy ``model.memory_bank`` as the starting memory of every memory-on run."""
    return MemorySnapshot(model.memory_bank.copy(), start)


def restore_memories(model: Any, snapshot: MemorySnapshot) -> None:
    """Give ``model`` a fresh copy of the snapshot's bank (search statistics zeroed)."""
    model.memory_bank = snapshot.bank.copy()
    model.memory_bank.reset_search_stats()


def memory_content(bank: MemoryBank) -> dict[str, dict[str, Any]]:
    """Entries, capacity, index type and whether searchable, per memory layer of ``bank`` (str keys: for JSON)."""
    return {str(layer): {"entries": m.num_entries, "capacity": m.capacity, "searchable": m.searchable,
                    "index_type": "ivf" if m.is_ivf else ("exact" if m.index is not None else "none")}
            for layer, m in bank}  # fmt: skip


def provenance_overlap(model: Any, stream: Tensor) -> dict[str, int]:
    """Per memory layer: stored entries whose full provenance window (the PROVENANCE_WINDOW token ids ending at
    the written position) occurs somewhere in ``stream``: a sign that the memory already holds the scored text.
    Entries with a partial window (written near a sequence start) are not checked."""
    from s3cmn.memory.records import PROVENANCE_WINDOW

    ids = stream.numpy().astype(np.int64)
    if ids.size < PROVENANCE_WINDOW:
        return {str(layer): 0 for layer in model.memory_bank.layers}
    grams = np.lib.stride_tricks.sliding_window_view(ids, PROVENANCE_WINDOW)  # (N - W + 1, W)
    seen = {row.tobytes() for row in grams}
    overlap = {}
    for layer, memory in model.memory_bank:
        tokens = memory.entries()["tokens"].astype(np.int64)  # (M, W), -1 where unknown
        full = tokens[(tokens >= 0).all(axis=1)]
        overlap[str(layer)] = int(sum(row.tobytes() in seen for row in full))
    return overlap


def summarise_reads(reads: list[tuple[Any, int]]) -> dict[str, float]:
    """Aggregate one layer's per-forward ``MemoryReadStats`` (each with its number of query positions).

    hit_rate: hit slots / searched slots over all positions; mean_similarity: mean cosine over all hits;
    gate_mean: over all positions; latency_ms_mean / _max: per FAISS search (one per forward that searched);
    searched_fraction: positions whose forward found a searchable memory.
    """
    positions = sum(n for _, n in reads)
    searched = [(s, n) for s, n in reads if s.searched]
    hits = sum(s.hit_rate * n for s, n in reads)
    latencies = [s.latency_ms for s, _ in searched]
    return {
        "positions": positions,
        "searched_fraction": sum(n for _, n in searched) / positions if positions else 0.0,
        "hit_rate": hits / positions if positions else 0.0,
        "mean_similarity": sum(s.mean_similarity * s.hit_rate * n for s, n in reads) / hits if hits else 0.0,
        "gate_mean": sum(s.gate_mean * n for s, n in searched) / positions if positions else 0.0,
        "latency_ms_mean": float(np.mean(latencies)) if latencies else 0.0,
        "latency_ms_max": float(np.max(latencies)) if latencies else 0.0,
        "searches": len(latencies),
    }

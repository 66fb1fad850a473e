"""Plain records passed in and out of the memory: provenance of writes, search results, statistics, errors."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import Tensor

# Token ids kept per entry: the window of this many ids ending at the written position (left-padded with -1).
PROVENANCE_WINDOW = 16
# The name of the FAISS index (serialised, uint8) among a store's state arrays (FaissMemory.state_arrays).
INDEX_ARRAY = "index"


class MemoryLoadError(ValueError):
    """A saved memory is missing a file, has a corrupt file, or does not match its manifest."""


@dataclass
class Provenance:
    """Where each written entry came from; every tensor has M rows (one per written value), int64, CPU or not.

    Attributes:
        token_ids: (M, W) the W = PROVENANCE_WINDOW token ids ending at the position, left-padded with -1.
        positions: (M,) the position of the entry in its segment (plus any caller offset).
        segment_ids: (M,) an id of the segment / sequence it came from (caller defined).
    """

    token_ids: Tensor
    positions: Tensor
    segment_ids: Tensor

    def __post_init__(self) -> None:
        m = self.token_ids.shape[0]
        if self.token_ids.dim() != 2 or self.positions.shape != (m,) or self.segment_ids.shape != (m,):
            shapes = [tuple(t.shape) for t in (self.token_ids, self.positions, self.segment_ids)]
            raise ValueError(f"Provenance: expected token_ids (M, W), positions (M,), segment_ids (M,); got {shapes}")

    def __len__(self) -> int:
        return int(self.token_ids.shape[0])

    @classmethod
    def empty(cls, m: int, window: int = PROVENANCE_WINDOW) -> Provenance:
        """Provenance for ``m`` entries of unknown origin (token ids -1, positions -1, segments -1)."""
        minus = torch.full((m,), -1, dtype=torch.long)
        return cls(torch.full((m, window), -1, dtype=torch.long), minus, minus.clone())


class SearchResult(NamedTuple):
    """The result of a batched search of Q queries for k entries (torch, CPU).

    distances: (Q, k) float32 in the memory's distance (see FaissMemory); +inf for misses.
    ids: (Q, k) int64 entry ids, -1 for misses.
    keys: (Q, k, d) float32 the stored (compressed, unit-norm) keys of the hits, zeros for misses.
    values: (Q, k, D) float32 the stored values of the hits, zeros for misses.
    hit: (Q, k) bool, True where a stored entry was found within max_retrieval_distance.
    """

    distances: Tensor
    ids: Tensor
    keys: Tensor
    values: Tensor
    hit: Tensor


@dataclass
class MemoryStats:
    """A snapshot of a memory's health (see FaissMemory.stats). Search counters cover every search since the
    last reset()."""

    entries: int
    capacity: int
    max_size: int
    pending: int
    searchable: bool
    index_type: str
    key_dim: int
    value_dim: int
    queries: int
    hit_rate: float
    mean_similarity: float
    latency_ms_p50: float
    latency_ms_p95: float
    bytes_keys: int
    bytes_values: int
    bytes_index: int
    bytes_total: int
    prunes: int
    pruned_entries: int
    growths: int
    refits: int
    pca_explained_variance: float
    compression_ratio: float
    cluster_occupancy: list[int] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

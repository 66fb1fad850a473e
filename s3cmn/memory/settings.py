"""The settings of one FaissMemory, named as S3CMNConfig's fields, and their one validator.

A store's settings are a frozen :class:`MemorySettings`: the per-store memory fields of ``S3CMNConfig``
(:data:`MEMORY_LAYER_KEYS`, which ``memory_layer_settings`` may override per block), the width ``dim`` of the
stored values (the model's ``hidden_dim``), and the store's ``seed``, ``pca_min_samples`` and ``layer_idx``.

One set of names: the fields are ``config.json``'s keys, the store's constructor arguments and ``memory.json``'s
keys. One declaration: ``S3CMNConfig`` declares its memory fields with :func:`memory_field`, so their types'
defaults, bounds and help are the ones below. One validator: ``MemorySettings`` checks each field and the rules
between them when it is built; ``S3CMNConfig`` builds one per memory block while it validates itself
(:meth:`S3CMNConfig.memory_settings`), and a store built by hand or loaded from ``memory.json`` is built from
one. Memories saved with the store's older argument names are read by :mod:`s3cmn.memory.persist`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from s3cmn.utils.fields import MEMORY as MEM
from s3cmn.utils.fields import ConfigError, setting, validate_fields

__all__ = ["MEMORY_LAYER_KEYS", "MemorySettings", "MemorySettingsError", "memory_field"]


class MemorySettingsError(ConfigError):
    """Memory settings that do not go together; ``problem`` is the sentence without the owner's name."""

    def __init__(self, problem: str) -> None:
        super().__init__(f"MemorySettings: {problem}")
        self.problem = problem


@dataclass(frozen=True)
class MemorySettings:
    """The settings of one FaissMemory (module docstring), checked once, when built."""

    dim: int = setting(group=MEM, help="width D of the stored values (the model's hidden_dim)", ge=1)
    memory_size: int = setting(1024, group=MEM, help="memory capacity (entries)", ge=1)
    num_clusters: int = setting(128, group=MEM, help="IVF lists of the FAISS index", ge=1)
    memory_top_k: int = setting(8, group=MEM, help="entries retrieved per query", ge=1)
    memory_nprobe: int = setting(8, group=MEM, help="IVF lists searched per query", ge=1)
    memory_metric: Literal["ip", "l2"] = setting("ip", group=MEM, help="inner product (cosine) or L2 search")
    max_retrieval_distance: float = setting(
        0.5, group=MEM, gt=0,
        help="hits farther than this are misses (ip: 1 - cosine, so 0.5 keeps cosine >= 0.5; the old 1.0 kept "
             "every hit: on the WikiText-2 test split the tiny 10-minute model's reads had hit rate 1.0 at mean "
             "cosine 0.24)",
    )
    memory_compression: bool = setting(True, group=MEM, help="PCA-compress memory keys")
    memory_compression_dim: int = setting(64, group=MEM, help="PCA key dimension (0 = adaptive)", ge=0)
    memory_compression_variance: float = setting(
        0.95, group=MEM, help="variance kept by the adaptive PCA dimension", gt=0, le=1
    )
    memory_full_policy: Literal["prune", "grow"] = setting("prune", group=MEM, help="what to do when full")
    memory_growth_factor: float = setting(2.0, group=MEM, help="capacity multiplier when growing", gt=1)
    memory_max_size: int = setting(8192, group=MEM, help="largest capacity growth may reach", ge=1)
    memory_refit_drift: float = setting(0.25, group=MEM, help="relative PCA error increase that refits", gt=0)
    memory_write_stride: int = setting(16, group=MEM, help="write every k-th position of a segment", ge=1)
    seed: int = setting(0, group=MEM, help="seed of the IVF k-means (a model's store: its block index)")
    pca_min_samples: int | None = setting(
        None, group=MEM, ge=0, help="entries stored before the PCA is fitted (None: dim with compression, else 0)"
    )
    layer_idx: int | None = setting(None, group=MEM, help="the block the store belongs to (named in its logs)")

    def __post_init__(self) -> None:
        validate_fields(self)  # each field: its type, choices and bounds
        if self.pca_min_samples is None:  # the PCA needs as many entries as it has input dimensions
            object.__setattr__(self, "pca_min_samples", self.dim if self.memory_compression else 0)
        problem = self._combination_problem()
        if problem is not None:
            raise MemorySettingsError(problem)

    def _combination_problem(self) -> str | None:
        """The first rule between the fields that the settings break, as a sentence; None when they hold."""
        size, samples, key_dim = self.memory_size, self.pca_min_samples, self.memory_compression_dim
        if self.memory_max_size < size:
            return f"memory_max_size = {self.memory_max_size} must be >= memory_size = {size}"
        if not self.memory_compression:
            return None
        if samples < 2:
            return (f"memory_compression needs pca_min_samples >= 2 (the PCA is fitted on the first pca_min_samples "
                    f"entries; by default dim, the model's hidden_dim), got {samples}; set memory_compression = False")
        if key_dim > self.dim:
            return (f"memory_compression_dim = {key_dim} must be <= dim = {self.dim}, the model's hidden_dim (0 "
                    "chooses it by explained variance)")
        if size < samples:
            return (f"memory_size = {size} must be >= pca_min_samples = {samples} with memory_compression (the PCA is "
                    "fitted on the first pca_min_samples entries; by default dim, the model's hidden_dim); raise "
                    "memory_size or set memory_compression = False")
        if key_dim > samples:
            return f"memory_compression_dim = {key_dim} must be <= pca_min_samples = {samples}"
        return None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, keyed by field name (``memory.json``'s ``settings``)."""
        return dataclasses.asdict(self)


# The per-store settings that S3CMNConfig holds, globally and per block in memory_layer_settings.
MEMORY_LAYER_KEYS = tuple(
    f.name for f in dataclasses.fields(MemorySettings) if f.name not in ("dim", "seed", "pca_min_samples", "layer_idx")
)


def memory_field(name: str) -> Any:
    """A new dataclass field declared as MemorySettings' ``name`` (default, bounds, help), for S3CMNConfig."""
    declared = {f.name: f for f in dataclasses.fields(MemorySettings)}[name]
    return dataclasses.field(default=declared.default, metadata=dict(declared.metadata))

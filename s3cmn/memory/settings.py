"""The bridge between S3CMNConfig and FaissMemory: per-layer memory settings and argument checks.

The settings are validated once. A model's memories are built by :meth:`FaissMemory.from_config` from a
validated ``S3CMNConfig``, whose field rules cover every rule of :func:`check_memory_args` (a test keeps them
so), and are not checked again; :func:`check_memory_args` checks a store built by hand (``FaissMemory(...)``,
a saved memory's settings). The config's field names are checkpoint keys (``config.json``) and the
constructor's are those of a saved memory (``memory.json``), so :data:`CONFIG_TO_ARGUMENT` maps one to the
other: both name sets are stored formats.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from s3cmn.model_config import S3CMNConfig

# Config field -> FaissMemory constructor argument, for each per-block memory setting (the keys are
# s3cmn.model_config.MEMORY_LAYER_KEYS, the one list of what memory_layer_settings may set; a test keeps them equal).
CONFIG_TO_ARGUMENT = {
    "memory_size": "capacity",
    "num_clusters": "num_clusters",
    "memory_top_k": "top_k",
    "memory_nprobe": "nprobe",
    "memory_metric": "metric",
    "max_retrieval_distance": "max_retrieval_distance",
    "memory_compression": "compression",
    "memory_compression_dim": "compression_dim",
    "memory_compression_variance": "compression_variance",
    "memory_full_policy": "full_policy",
    "memory_growth_factor": "growth_factor",
    "memory_max_size": "max_size",
    "memory_refit_drift": "refit_drift",
    "memory_write_stride": "write_stride",
}


def layer_memory_settings(config: S3CMNConfig, layer_idx: int) -> dict[str, Any]:
    """The memory settings of block ``layer_idx``, keyed by config field name.

    The global ``memory_*`` fields (and num_clusters, max_retrieval_distance) with the overrides of
    ``config.memory_layer_settings[str(layer_idx)]`` (or of its negative alias) applied; the config has
    checked the overrides (keys, values, one entry per block).
    """
    return config.layer_memory_fields(layer_idx)


def default_pca_min_samples(dim: int, compression: bool) -> int:
    """Entries stored before the PCA is fitted: D with compression (the PCA needs as many), else 0."""
    return dim if compression else 0


def memory_arguments(config: S3CMNConfig, layer_idx: int) -> dict[str, Any]:
    """Every FaissMemory argument of block ``layer_idx`` (D = hidden_dim, the block's settings, its seed)."""
    settings = layer_memory_settings(config, layer_idx)
    layer = layer_idx % config.num_layers
    args = {arg: settings[field] for field, arg in CONFIG_TO_ARGUMENT.items()}
    pca_min_samples = default_pca_min_samples(config.hidden_dim, args["compression"])
    return {"dim": config.hidden_dim, **args, "seed": layer, "pca_min_samples": pca_min_samples, "layer_idx": layer}


def check_memory_args(args: dict[str, Any]) -> None:
    """Raise ValueError naming the first FaissMemory argument outside its allowed range."""
    dim, capacity = args["dim"], args["capacity"]
    checks = [
        (dim >= 1, "dim", ">= 1"),
        (capacity >= 1, "capacity", ">= 1"),
        (args["num_clusters"] >= 1, "num_clusters", ">= 1"),
        (args["top_k"] >= 1, "top_k", ">= 1"),
        (args["nprobe"] >= 1, "nprobe", ">= 1"),
        (args["metric"] in ("ip", "l2"), "metric", "'ip' or 'l2'"),
        (args["max_retrieval_distance"] > 0, "max_retrieval_distance", "> 0"),
        (0 < args["compression_variance"] <= 1, "compression_variance", "in (0, 1]"),
        (args["full_policy"] in ("prune", "grow"), "full_policy", "'prune' or 'grow'"),
        (args["growth_factor"] > 1, "growth_factor", "> 1"),
        (args["max_size"] >= capacity, "max_size", f">= capacity={capacity}"),
        (args["refit_drift"] > 0, "refit_drift", "> 0"),
        (args["write_stride"] >= 1, "write_stride", ">= 1"),
    ]
    if args["compression"]:
        checks += [
            (0 <= args["compression_dim"] <= dim, "compression_dim", f"in [0, dim={dim}] (0 = adaptive)"),
            (2 <= args["pca_min_samples"] <= capacity, "pca_min_samples", f"in [2, capacity={capacity}]"),
            (args["compression_dim"] <= args["pca_min_samples"], "compression_dim", "<= pca_min_samples"),
        ]
    for ok, name, allowed in checks:
        if not ok:
            raise ValueError(f"FaissMemory: {name} = {args[name]!r} must be {allowed}")

"""The bridge between S3CMNConfig and FaissMemory: per-layer memory settings and argument checks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from s3cmn.utils.fields import ConfigError, unknown_key_error

if TYPE_CHECKING:
    from s3cmn.config import S3CMNConfig

# Config field -> FaissMemory constructor argument.
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
# Keys a per-layer override (config.memory_layer_settings[str(layer)]) may set.
LAYER_SETTING_KEYS = tuple(CONFIG_TO_ARGUMENT)


def layer_memory_settings(config: S3CMNConfig, layer_idx: int) -> dict[str, Any]:
    """The memory settings of block ``layer_idx``, keyed by config field name.

    The global ``memory_*`` fields (and num_clusters, max_retrieval_distance) with the overrides of
    ``config.memory_layer_settings[str(layer_idx)]`` applied; the negative alias
    ``str(layer_idx - num_layers)`` is accepted too. An unknown override key raises ConfigError naming the
    closest valid key.
    """
    settings = {name: getattr(config, name) for name in LAYER_SETTING_KEYS}
    n = config.num_layers
    aliases = {str(layer_idx % n), str(layer_idx % n - n)}
    found = [key for key in config.memory_layer_settings if str(key) in aliases]
    if len(found) > 1:
        raise ConfigError(f"S3CMNConfig.memory_layer_settings: layer {layer_idx} is set twice, as {found}")
    overrides = config.memory_layer_settings[found[0]] if found else {}
    for key in overrides:
        if key not in LAYER_SETTING_KEYS:
            owner = f"S3CMNConfig.memory_layer_settings[{found[0]!r}]"
            raise unknown_key_error(owner, key, LAYER_SETTING_KEYS)
    settings.update(overrides)
    return settings


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

"""The memory settings are validated once: by S3CMNConfig for a model's memories, by FaissMemory for one built
by hand; every config the validator accepts gives store arguments the store's own check accepts."""

from __future__ import annotations

import pytest

from s3cmn.memory import settings as memory_settings
from s3cmn.memory import store as memory_store
from s3cmn.memory.settings import check_memory_args, memory_arguments
from s3cmn.memory.store import FaissMemory
from s3cmn.model_config import S3CMNConfig
from s3cmn.utils.fields import ConfigError

BASE = dict(hidden_dim=12, embedding_dim=12, num_layers=2, memory_layers=[0, -1], memory_size=16,
            memory_max_size=16, num_clusters=1, memory_compression_dim=4)
# boundary values of every setting the store checks (valid and invalid alike)
CANDIDATES = {
    "hidden_dim": [1, 2, 12, 20], "memory_size": [0, 1, 11, 12, 16], "num_clusters": [0, 1],
    "memory_top_k": [0, 1], "memory_nprobe": [0, 1], "memory_metric": ["ip", "l2", "cos"],
    "max_retrieval_distance": [0.0, 0.5], "memory_compression": [True, False],
    "memory_compression_dim": [0, 4, 12, 13], "memory_compression_variance": [0.0, 0.5, 1.0, 1.5],
    "memory_full_policy": ["prune", "grow", "evict"], "memory_growth_factor": [1.0, 2.0],
    "memory_max_size": [8, 16, 32], "memory_refit_drift": [0.0, 0.25], "memory_write_stride": [0, 1],
}


def _accepted(fields: dict) -> S3CMNConfig | None:
    try:
        return S3CMNConfig(**fields)
    except ConfigError:
        return None


@pytest.mark.parametrize("name", sorted(CANDIDATES))
def test_every_config_the_validator_accepts_passes_the_stores_check(name: str) -> None:
    cases = [{**BASE, name: value} for value in CANDIDATES[name]]
    cases += [{**BASE, "memory_layer_settings": {"-1": {name: value}}} for value in CANDIDATES[name]
              if name in memory_settings.CONFIG_TO_ARGUMENT]
    accepted = 0
    for fields in cases:
        config = _accepted(fields)
        if config is None:
            continue
        accepted += 1
        for layer in config.memory_layer_indices():
            check_memory_args(memory_arguments(config, layer))  # raises if the config let a bad value through
    assert accepted >= 1


def test_from_config_does_not_check_again(monkeypatch) -> None:
    def refuse(args: dict) -> None:
        raise AssertionError("checked again")

    monkeypatch.setattr(memory_store, "check_memory_args", refuse)
    config = S3CMNConfig(**BASE)
    memory = FaissMemory.from_config(config, -1)
    assert (memory.layer_idx, memory.seed, memory.initial_capacity, memory.compression_dim) == (1, 1, 16, 4)
    with pytest.raises(AssertionError, match="checked again"):
        FaissMemory(12, capacity=16)


def test_from_config_equals_the_store_built_by_hand() -> None:
    config = S3CMNConfig(**{**BASE, "memory_layer_settings": {"0": {"memory_top_k": 3}}})
    for layer in (0, 1):
        memory = FaissMemory.from_config(config, layer)
        assert memory.settings() == FaissMemory(**memory_arguments(config, layer)).settings()
    assert FaissMemory.from_config(config, 0).top_k == 3


def test_a_store_built_by_hand_is_checked() -> None:
    with pytest.raises(ValueError, match="FaissMemory: max_size = 8 must be >= capacity=16"):
        FaissMemory(12, capacity=16, max_size=8)

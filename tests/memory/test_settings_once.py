"""The memory settings have one set of names and one validator: MemorySettings, which S3CMNConfig runs for each
memory block and a store built by hand or loaded from memory.json is built from; memories saved under the older
names still load."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import pytest

from s3cmn.memory.persist import V1_NAMES
from s3cmn.memory.records import MemoryLoadError
from s3cmn.memory.settings import MEMORY_LAYER_KEYS, MemorySettings, MemorySettingsError
from s3cmn.memory.store import FaissMemory
from s3cmn.model_config import S3CMNConfig
from s3cmn.utils.fields import ConfigError, field_types

V1_FOLDER = Path(__file__).parent / "data" / "memory-v1"  # saved by the s3cmn of commit 1afd2e4 (format v1)
BASE = dict(hidden_dim=12, embedding_dim=12, num_layers=2, num_attention_heads=4, memory_layers=[0, -1],
            memory_size=16, memory_max_size=16, num_clusters=1, memory_compression_dim=4)
# boundary values of every rule between the memory settings (valid and invalid alike)
CANDIDATES = {
    "hidden_dim": [1, 2, 12, 20], "memory_size": [1, 11, 12, 16], "memory_compression": [True, False],
    "memory_compression_dim": [0, 4, 12, 13], "memory_max_size": [8, 16, 32],
}


def test_the_config_declares_its_memory_fields_as_the_store_does() -> None:
    config_fields = {f.name: f for f in dataclasses.fields(S3CMNConfig)}
    store_fields = {f.name: f for f in dataclasses.fields(MemorySettings)}
    config_types, store_types = field_types(S3CMNConfig), field_types(MemorySettings)
    for name in MEMORY_LAYER_KEYS:
        assert config_fields[name].default == store_fields[name].default, name
        assert dict(config_fields[name].metadata) == dict(store_fields[name].metadata), name
        assert config_types[name] == store_types[name], name


@pytest.mark.parametrize("name", sorted(CANDIDATES))
def test_the_config_refuses_what_the_store_settings_refuse(name: str) -> None:
    cases = [{**BASE, name: value} for value in CANDIDATES[name]]
    cases += [{**BASE, "memory_layer_settings": {"-1": {name: value}}} for value in CANDIDATES[name]
              if name in MEMORY_LAYER_KEYS]
    for fields in cases:
        block = {**{k: fields.get(k, getattr(S3CMNConfig, k)) for k in MEMORY_LAYER_KEYS},
                 **fields.get("memory_layer_settings", {}).get("-1", {})}
        try:
            MemorySettings(dim=fields["hidden_dim"], **block)
        except MemorySettingsError as err:
            with pytest.raises(ConfigError, match=re.escape(err.problem)):
                S3CMNConfig(**fields)
            continue
        try:
            config = S3CMNConfig(**fields)
        except ConfigError as err:  # another rule (hidden_dim and the heads): never a memory one
            assert "memory" not in str(err)
            continue
        for layer in config.memory_layer_indices():  # accepted: every memory block builds
            FaissMemory.from_config(config, layer)


def test_from_config_equals_the_store_built_by_hand() -> None:
    config = S3CMNConfig(**{**BASE, "memory_layer_settings": {"0": {"memory_top_k": 3}}})
    for layer in (0, 1):
        by_hand = MemorySettings(dim=12, **config.layer_memory_fields(layer), seed=layer, layer_idx=layer)
        assert FaissMemory.from_config(config, layer).settings == by_hand
    assert FaissMemory.from_config(config, 0).settings.memory_top_k == 3
    assert FaissMemory.from_config(config, -1).settings.pca_min_samples == 12  # hidden_dim, with compression


def test_a_store_built_by_hand_is_checked() -> None:
    with pytest.raises(MemorySettingsError, match="MemorySettings: memory_max_size = 8 must be >= memory_size = 16"):
        MemorySettings(dim=12, memory_size=16, memory_max_size=8)
    with pytest.raises(ConfigError, match=r"MemorySettings.memory_metric = 'cos' is not allowed"):
        MemorySettings(dim=12, memory_metric="cos")
    with pytest.raises(MemorySettingsError, match="memory_compression_dim = 4 must be <= pca_min_samples = 2"):
        MemorySettings(dim=12, memory_compression_dim=4, pca_min_samples=2)


def test_a_saved_memory_names_its_settings_as_the_config_does(tmp_path) -> None:
    memory = FaissMemory(MemorySettings(dim=8, memory_size=64, num_clusters=1, memory_compression_dim=4))
    memory.save(tmp_path)
    manifest = json.loads((tmp_path / "memory.json").read_text())
    assert manifest["version"] == 2 and manifest["settings"] == memory.settings.to_dict()
    assert FaissMemory.load(tmp_path).settings == memory.settings


def test_a_memory_saved_under_the_old_names_loads_with_the_same_settings(tmp_path) -> None:
    """Version 1 manifests (tests/memory/data/memory-v1) name the settings as the old constructor did."""
    saved = json.loads((V1_FOLDER / "memory.json").read_text())["settings"]
    assert "capacity" in saved and "memory_size" not in saved
    settings = FaissMemory.load(V1_FOLDER).settings
    assert settings == MemorySettings(**{V1_NAMES.get(name, name): value for name, value in saved.items()})
    assert (settings.memory_size, settings.memory_compression_dim, settings.seed, settings.pca_min_samples) == (
        64, 4, 3, 16)
    folder = tmp_path / "bad"
    shutil.copytree(V1_FOLDER, folder)
    manifest = json.loads((folder / "memory.json").read_text())
    manifest["settings"]["top_kk"] = 3
    (folder / "memory.json").write_text(json.dumps(manifest))
    with pytest.raises(MemoryLoadError, match="top_kk"):
        FaissMemory.load(folder)

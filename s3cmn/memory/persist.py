"""Saving and loading a FaissMemory: atomic, checksummed, no pickle.

A saved memory is a directory holding
- ``memory.json``: the manifest: format version, the store's settings (:class:`MemorySettings`, keyed by
  S3CMNConfig's field names), state (capacity, step, counters), PCA metadata, and the name + SHA-256 of every
  data file;
- ``arrays-<hash>.safetensors``: values, keys, provenance, usage statistics and the PCA matrices;
- ``index-<hash>.faiss``: the FAISS index (``faiss.serialize_index``), absent while nothing is indexed.

Data files are content-addressed and written first (to a temporary name, fsync, ``os.replace``); the
manifest is replaced last, so it is the commit point: a crash mid-save leaves the previous save loadable.
Files no longer named by the manifest are deleted afterwards.

This module knows only the state API (:class:`MemoryState`: ``settings``, ``state``, ``state_arrays``,
``load_state_arrays``), not the store class, so the store can import it.

Version 1 manifests (written before the settings took the config's names) name the settings as the store's
old constructor arguments (``capacity``, ``top_k``, ...); :func:`saved_settings` renames them, the one place
that knows the old names.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from s3cmn.memory.records import INDEX_ARRAY, MemoryLoadError
from s3cmn.memory.settings import MemorySettings
from s3cmn.utils.fields import ConfigError

logger = logging.getLogger(__name__)

MANIFEST = "memory.json"
FORMAT = "s3cmn-faiss-memory"
VERSION = 2
# Version 1's names of the settings that version 2 names as S3CMNConfig does (the others kept their names).
V1_NAMES = {
    "capacity": "memory_size", "top_k": "memory_top_k", "nprobe": "memory_nprobe", "metric": "memory_metric",
    "compression": "memory_compression", "compression_dim": "memory_compression_dim",
    "compression_variance": "memory_compression_variance", "full_policy": "memory_full_policy",
    "growth_factor": "memory_growth_factor", "max_size": "memory_max_size", "refit_drift": "memory_refit_drift",
    "write_stride": "memory_write_stride",
}


class MemoryState(Protocol):
    """What is saved and loaded: a memory built from ``settings``, its content as ``state_arrays()`` + ``state()``."""

    settings: MemorySettings

    @property
    def num_entries(self) -> int: ...

    def state(self) -> dict[str, Any]: ...

    def state_arrays(self) -> dict[str, np.ndarray]: ...

    def load_state_arrays(self, arrays: dict[str, np.ndarray], state: dict[str, Any]) -> None: ...


M = TypeVar("M", bound=MemoryState)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file; a failed write (a full disk) deletes the partial
    temporary file and raises an OSError that names ``path`` (Python's write errors name no file)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OSError(err.errno, err.strerror or str(err), str(path)) from err


def save_memory(memory: MemoryState, directory: str | os.PathLike) -> None:
    """Write ``memory`` to ``directory`` (created if needed), replacing any memory saved there before."""
    from safetensors.numpy import save as safetensors_save

    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    arrays = memory.state_arrays()
    index = arrays.pop(INDEX_ARRAY, None)
    blobs = {"arrays": ("safetensors", safetensors_save(arrays))}
    if index is not None:
        blobs["index"] = ("faiss", index.tobytes())
    files = {}
    for role, (ext, data) in blobs.items():
        digest = hashlib.sha256(data).hexdigest()
        name = f"{role}-{digest[:16]}.{ext}"
        atomic_write(root / name, data)
        files[role] = {"name": name, "sha256": digest}
    state = memory.state()
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "settings": memory.settings.to_dict(),
        "state": {key: state[key] for key in ("capacity", "step", "counters")},
        "pca": state["pca"],
        "files": files,
    }
    atomic_write(root / MANIFEST, json.dumps(manifest, indent=2).encode())
    keep = {f["name"] for f in files.values()}
    for stale in [*root.glob("arrays-*.safetensors"), *root.glob("index-*.faiss")]:
        if stale.name not in keep:
            stale.unlink()
    logger.info("saved %d memory entries to %s", memory.num_entries, root)


def _read_checked(root: Path, entry: dict, role: str) -> bytes:
    path = root / entry["name"]
    if not path.is_file():
        raise MemoryLoadError(
            f"{path} is missing ({role} of the memory saved in {root}): the save is incomplete; "
            "re-save the memory, or delete the folder to start from an empty memory"
        )
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise MemoryLoadError(
            f"{path} is corrupt (SHA-256 differs from {MANIFEST}): re-save the memory, or "
            "delete the folder to start from an empty memory"
        )
    return data


def _read_manifest(root: Path) -> dict:
    """The manifest of the memory saved in ``root``, checked for its format, version and keys."""
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise MemoryLoadError(
            f"{manifest_path} not found: {root} holds no saved FaissMemory (write one with FaissMemory.save)"
        )
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise MemoryLoadError(
            f"{manifest_path} is corrupt (not JSON: {err}); re-save the memory, or delete the "
            "folder to start from an empty memory"
        ) from err
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise MemoryLoadError(f"{manifest_path} is not a {FORMAT} manifest; re-save the memory")
    if manifest.get("version") not in (1, VERSION):
        raise MemoryLoadError(f"{manifest_path} is {FORMAT} version {manifest.get('version')!r}, but this s3cmn "
                              f"reads versions 1 to {VERSION}; re-save the memory with this version")  # fmt: skip
    missing = [key for key in ("files", "settings", "state", "pca") if key not in manifest]
    missing += ["files.arrays"] if "arrays" not in manifest.get("files", {}) else []
    if missing:
        raise MemoryLoadError(f"{manifest_path} lacks the keys {missing}; re-save the memory")
    return manifest


def saved_settings(manifest: dict, path: Path) -> MemorySettings:
    """The settings of a manifest, of either version; a MemoryLoadError names the file and what is wrong."""
    values = manifest["settings"]
    if manifest["version"] == 1:
        values = {V1_NAMES.get(name, name): value for name, value in values.items()}
    try:
        return MemorySettings(**values)
    except (TypeError, ConfigError) as err:  # TypeError: a name MemorySettings does not have
        raise MemoryLoadError(f"{path} holds settings that do not build a memory ({err}); re-save the memory") from err


def load_memory(build: Callable[[MemorySettings], M], directory: str | os.PathLike) -> M:
    """Read a memory written by :func:`save_memory`: ``build(settings)`` (the memory class) filled with the saved
    state; raise MemoryLoadError naming the bad file and the fix."""
    from safetensors import SafetensorError
    from safetensors.numpy import load as safetensors_load

    root = Path(directory)
    manifest = _read_manifest(root)
    files = manifest["files"]
    data = _read_checked(root, files["arrays"], "arrays")
    try:
        arrays = safetensors_load(data)
    except SafetensorError as err:
        raise MemoryLoadError(f"{root / files['arrays']['name']} cannot be read ({err}); re-save the memory") from err
    if "index" in files:
        arrays[INDEX_ARRAY] = np.frombuffer(_read_checked(root, files["index"], "FAISS index"), dtype=np.uint8)
    memory = build(saved_settings(manifest, root / MANIFEST))
    try:
        memory.load_state_arrays(arrays, {**manifest["state"], "pca": manifest["pca"]})
    except MemoryLoadError as err:
        raise MemoryLoadError(f"the memory saved in {root} does not load: {err}; re-save the memory") from err
    logger.info("loaded %d memory entries from %s", memory.num_entries, root)
    return memory

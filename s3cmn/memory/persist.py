"""Saving and loading a FaissMemory: atomic, checksummed, no pickle.

A saved memory is a directory holding
- ``memory.json``: the manifest: format version, constructor settings, state (capacity, step, counters), PCA
  metadata, and the name + SHA-256 of every data file;
- ``arrays-<hash>.safetensors``: values, keys, provenance, usage statistics and the PCA matrices;
- ``index-<hash>.faiss``: the FAISS index (``faiss.serialize_index``), absent while nothing is indexed.

Data files are content-addressed and written first (to a temporary name, fsync, ``os.replace``); the
manifest is replaced last, so it is the commit point: a crash mid-save leaves the previous save loadable.
Files no longer named by the manifest are deleted afterwards.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from s3cmn.memory.index import import_faiss
from s3cmn.memory.pca import PCA
from s3cmn.memory.records import MemoryLoadError

if TYPE_CHECKING:
    from s3cmn.memory.store import FaissMemory

logger = logging.getLogger(__name__)

MANIFEST = "memory.json"
FORMAT = "s3cmn-faiss-memory"
VERSION = 1
_STATE_ARRAYS = {
    "values": "_values",
    "keys": "_keys",
    "occupied": "_occupied",
    "usage": "_usage",
    "attention_mass": "_mass",
    "last_used": "_last_used",
    "write_step": "_write_step",
    "positions": "_positions",
    "segments": "_segments",
    "token_ids": "_tokens",
}


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_memory(memory: FaissMemory, directory: str | os.PathLike) -> None:
    """Write ``memory`` to ``directory`` (created if needed), replacing any memory saved there before."""
    faiss = import_faiss()
    from safetensors.numpy import save as safetensors_save

    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    memory.commit_usage()
    arrays = {name: getattr(memory, attr) for name, attr in _STATE_ARRAYS.items()}
    arrays["occupied"] = arrays["occupied"].astype(np.uint8)
    if memory.pca is not None:
        arrays.update(memory.pca.arrays())
    blobs = {"arrays": ("safetensors", safetensors_save({k: np.ascontiguousarray(v) for k, v in arrays.items()}))}
    if memory._index is not None:
        blobs["index"] = ("faiss", faiss.serialize_index(memory._index).tobytes())
    files = {}
    for role, (ext, data) in blobs.items():
        digest = hashlib.sha256(data).hexdigest()
        name = f"{role}-{digest[:16]}.{ext}"
        _atomic_write(root / name, data)
        files[role] = {"name": name, "sha256": digest}
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "settings": memory.settings(),
        "state": {"capacity": memory.capacity, "step": memory.step, "counters": memory.counters},
        "pca": memory.pca.meta() if memory.pca is not None else None,
        "files": files,
    }
    _atomic_write(root / MANIFEST, json.dumps(manifest, indent=2).encode())
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


def load_memory(cls: type[FaissMemory], directory: str | os.PathLike) -> FaissMemory:
    """Read a memory written by :func:`save_memory`; raise MemoryLoadError naming the bad file and the fix."""
    faiss = import_faiss()
    from safetensors import SafetensorError
    from safetensors.numpy import load as safetensors_load

    root = Path(directory)
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
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise MemoryLoadError(f"{manifest_path} is not a {FORMAT} v{VERSION} manifest; re-save the memory")
    try:
        files, settings, state = manifest["files"], manifest["settings"], manifest["state"]
        arrays_entry = files["arrays"]
    except KeyError as err:
        raise MemoryLoadError(f"{manifest_path} lacks the key {err}; re-save the memory") from err

    data = _read_checked(root, arrays_entry, "arrays")
    try:
        arrays = safetensors_load(data)
    except SafetensorError as err:
        raise MemoryLoadError(f"{root / arrays_entry['name']} cannot be read ({err}); re-save the memory") from err
    index = None
    if "index" in files:
        blob = _read_checked(root, files["index"], "FAISS index")
        try:
            index = faiss.deserialize_index(np.frombuffer(blob, dtype=np.uint8))
        except RuntimeError as err:
            raise MemoryLoadError(
                f"{root / files['index']['name']} is not a readable FAISS index ({err}); re-save the memory"
            ) from err

    memory = cls(**settings)
    missing = [name for name in _STATE_ARRAYS if name not in arrays]
    if missing:
        raise MemoryLoadError(f"{root / arrays_entry['name']} lacks the arrays {missing}; re-save the memory")
    for name, attr in _STATE_ARRAYS.items():
        setattr(memory, attr, arrays[name])
    memory._occupied = arrays["occupied"].astype(bool)
    memory.capacity = int(state["capacity"])
    memory.clear_pending_usage()
    memory.step = int(state["step"])
    memory.counters.update(state["counters"])
    if manifest["pca"] is not None:
        memory.pca = PCA.from_saved(arrays, manifest["pca"])
    memory._index = index
    indexed = index.ntotal if index is not None else 0
    if index is not None and (indexed != memory.num_entries or index.d != memory.key_dim):
        raise MemoryLoadError(
            f"{root}: the index holds {indexed} keys of dim {index.d} but the arrays hold "
            f"{memory.num_entries} entries of key dim {memory.key_dim}; re-save the memory"
        )
    logger.info("loaded %d memory entries from %s", memory.num_entries, root)
    return memory

"""A FaissMemory's content seen from outside: the one table of per-entry arrays, reading them out and loading
them back, and the statistics of what is stored.

``state_arrays`` / ``state`` give everything a memory holds beyond its settings; ``load_state_arrays`` puts it
back into a memory built from the same settings, checking every shape first. Saving to files is
:mod:`s3cmn.memory.persist`; the int8 copy (:mod:`s3cmn.quantization.memory_int8`) goes through the same pair.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from s3cmn.memory import index as faiss_index
from s3cmn.memory.pca import PCA
from s3cmn.memory.records import INDEX_ARRAY, MemoryLoadError, MemoryStats
from s3cmn.memory.settings import MemorySettings


class FaissMemory(Protocol):
    """What the functions below read of a :class:`s3cmn.memory.store.FaissMemory` (a Protocol: importing the
    store here, even for type checking only, would make an import cycle with the store, which delegates to this
    module). The per-entry arrays are reached through ``ENTRY_ARRAYS`` by attribute name."""

    capacity: int
    step: int
    settings: MemorySettings
    counters: dict[str, int]
    pca: PCA | None

    @property
    def index(self) -> Any: ...
    @property
    def num_entries(self) -> int: ...
    @property
    def max_capacity(self) -> int: ...
    @property
    def key_dim(self) -> int: ...
    @property
    def searchable(self) -> bool: ...
    @property
    def is_ivf(self) -> bool: ...
    @property
    def search_totals(self) -> dict[str, float]: ...
    @property
    def search_latencies_ms(self) -> tuple[float, ...]: ...
    def commit_usage(self) -> None: ...
    def clear_pending_usage(self) -> None: ...
    def set_index(self, index: Any) -> None: ...

# Per-entry arrays (dim 0 = slot): attribute -> (its name in state_arrays() and on disk, the fill of an empty
# slot). The usage pending since the last commit_usage (the _new_* arrays) is committed before the state is read,
# so it has no saved name. The one list of the store's arrays: growing, entries() and persistence all read it.
ENTRY_ARRAYS = {"_values": ("values", 0), "_keys": ("keys", 0), "_occupied": ("occupied", 0),
                "_usage": ("usage", 0), "_mass": ("attention_mass", 0), "_last_used": ("last_used", 0),
                "_write_step": ("write_step", 0), "_positions": ("positions", -1), "_segments": ("segments", -1),
                "_tokens": ("token_ids", -1), "_new_usage": (None, 0), "_new_mass": (None, 0),
                "_new_last_used": (None, 0)}  # fmt: skip
STATE_NAMES = tuple(name for name, _ in ENTRY_ARRAYS.values() if name is not None)


def state_arrays(memory: FaissMemory) -> dict[str, np.ndarray]:
    """Copies of ``memory``'s per-entry arrays (``STATE_NAMES``; ``occupied`` as uint8), its PCA's arrays once
    fitted, and ``"index"``: the FAISS index serialised (uint8) when there is one. Pending usage is committed
    first."""
    memory.commit_usage()
    arrays = {name: getattr(memory, attr).copy() for attr, (name, _) in ENTRY_ARRAYS.items() if name is not None}
    arrays["occupied"] = arrays["occupied"].astype(np.uint8)
    if memory.pca is not None:
        arrays.update({k: v.copy() for k, v in memory.pca.arrays().items()})
    if memory.index is not None:
        arrays[INDEX_ARRAY] = faiss_index.import_faiss().serialize_index(memory.index)
    return arrays


def state(memory: FaissMemory) -> dict[str, Any]:
    """The scalars beside :func:`state_arrays` (JSON-ready): capacity, step, counters, PCA metadata or None."""
    return {"capacity": memory.capacity, "step": memory.step, "counters": dict(memory.counters),
            "pca": memory.pca.meta() if memory.pca is not None else None}  # fmt: skip


def load_state_arrays(memory: FaissMemory, arrays: dict[str, np.ndarray], saved: dict[str, Any]) -> None:
    """Replace ``memory``'s content by ``arrays`` and ``saved`` (as :func:`state_arrays` / :func:`state` give
    them; the settings are the memory's own). Raises MemoryLoadError when an array is missing, the shapes
    disagree with each other or with the settings, or the index does not hold the stored keys; ``memory`` is
    untouched then."""
    missing = [name for name in STATE_NAMES if name not in arrays]
    if missing:
        raise MemoryLoadError(f"the arrays {missing} are missing")
    capacity, pca_meta = int(saved["capacity"]), saved.get("pca")
    try:
        pca = PCA.from_saved(arrays, pca_meta) if pca_meta is not None else None
    except KeyError as err:
        raise MemoryLoadError(f"the PCA is fitted but its array or field {err} is missing") from None
    dim = memory.settings.dim
    key_dim = pca.out_dim if pca is not None and memory.settings.memory_compression else dim
    wrong = [f"{name} {arrays[name].shape}" for name in STATE_NAMES if arrays[name].shape[0] != capacity]
    for name, width in (("values", dim), ("keys", key_dim)):
        if arrays[name].shape[1:] != (width,):
            wrong.append(f"{name} of width {arrays[name].shape[1:]}, not {width}")
    if wrong:
        raise MemoryLoadError(f"the arrays do not fit capacity {capacity}, dim {dim}: {', '.join(wrong)}")
    index = _deserialise(arrays.get(INDEX_ARRAY))
    occupied = arrays["occupied"].astype(bool)
    if index is not None and (index.ntotal != int(occupied.sum()) or index.d != key_dim):
        raise MemoryLoadError(f"the index holds {index.ntotal} keys of dim {index.d} but the arrays hold "
                              f"{int(occupied.sum())} entries of key dim {key_dim}")  # fmt: skip
    for attr, (name, _) in ENTRY_ARRAYS.items():
        if name is not None:
            setattr(memory, attr, np.array(arrays[name], dtype=getattr(memory, attr).dtype))
    memory.capacity, memory.step, memory.pca = capacity, int(saved["step"]), pca
    memory.set_index(index)
    memory.counters.update(saved["counters"])
    memory.clear_pending_usage()


def stats(memory: FaissMemory) -> MemoryStats:
    """Hit rate (hit slots / searched slots), mean cosine of hits, search latency p50/p95 (ms, last 1024
    searches), entries, bytes (keys + values + index estimate), IVF list occupancy, prune/growth/refit
    counts, PCA explained variance and compression ratio D / d."""
    s, lat, n = memory.search_totals, np.asarray(memory.search_latencies_ms, np.float64), memory.num_entries
    dim = memory.settings.dim
    bytes_keys, bytes_values = n * memory.key_dim * 4, n * dim * 4
    bytes_index = faiss_index.index_bytes(memory.index)
    explained = memory.pca.explained_variance if memory.pca else float(not memory.settings.memory_compression)
    return MemoryStats(
        entries=n, capacity=memory.capacity, max_size=memory.max_capacity,
        pending=n - (memory.index.ntotal if memory.index is not None else 0), searchable=memory.searchable,
        index_type="ivf" if memory.is_ivf else ("exact" if memory.index is not None else "none"),
        key_dim=memory.key_dim, value_dim=dim, queries=s["queries"],
        hit_rate=s["hits"] / s["slots"] if s["slots"] else 0.0,
        mean_similarity=s["similarity"] / s["hits"] if s["hits"] else 0.0,
        latency_ms_p50=float(np.percentile(lat, 50)) if len(lat) else 0.0,
        latency_ms_p95=float(np.percentile(lat, 95)) if len(lat) else 0.0,
        bytes_keys=bytes_keys, bytes_values=bytes_values, bytes_index=bytes_index,
        bytes_total=bytes_keys + bytes_values + bytes_index,
        prunes=memory.counters["prunes"], pruned_entries=memory.counters["pruned_entries"],
        growths=memory.counters["growths"], refits=memory.counters["refits"],
        pca_explained_variance=explained,
        compression_ratio=dim / memory.key_dim if memory.key_dim else 0.0,
        cluster_occupancy=faiss_index.cluster_occupancy(memory.index),
    )  # fmt: skip


def _deserialise(blob: np.ndarray | None) -> Any:
    if blob is None:
        return None
    try:
        return faiss_index.import_faiss().deserialize_index(np.ascontiguousarray(blob, dtype=np.uint8))
    except RuntimeError as err:
        raise MemoryLoadError(f"the index is not a readable FAISS index ({err})") from err

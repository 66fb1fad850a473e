"""FAISS index construction for the memory: an exact phase (flat, with ids) and the IVF phase.

FAISS k-means wants about 39 training points per list; below ``IVF_MIN_POINTS_PER_LIST * nlist`` stored keys
the memory searches exactly (IndexIDMap over IndexFlat); from then on it trains an IVF index and searches
``nprobe`` lists: IndexIVFFlat (float32 keys) or IndexIVFScalarQuantizer (SQ8: one byte a key component, by
residual from the list's centroid). Both keep the store's entry ids (``add_with_ids`` / ``remove_ids``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Literal

import numpy as np

IVF_MIN_POINTS_PER_LIST = 39


def import_faiss():
    """``import faiss``, lazily (keeps ``import s3cmn`` quick), with its loader's INFO lines silenced.

    faiss' loader logs at INFO that it "could not load library with AVX2 support due to
    ModuleNotFoundError(...)" before loading the generic build, which reads like an error but is not one.
    """
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    import faiss

    return faiss


_faiss = import_faiss


def metric_type(metric: str) -> int:
    faiss = _faiss()
    return faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2


def build_exact(key_dim: int, metric: str):
    """An empty exact index with id support: IndexIDMap(IndexFlatIP | IndexFlatL2)."""
    faiss = _faiss()
    flat = faiss.IndexFlatIP(key_dim) if metric == "ip" else faiss.IndexFlatL2(key_dim)
    return faiss.IndexIDMap(flat)


IVFCodec = Literal["flat", "sq8"]


def build_ivf(keys: np.ndarray, ids: np.ndarray, nlist: int, nprobe: int, metric: str, seed: int,
              codec: IVFCodec = "flat"):  # fmt: skip
    """An IVF index trained on ``keys`` (N, d) (seeded k-means; spherical for "ip") holding ``keys`` under ``ids``:
    IndexIVFFlat for ``codec="flat"``, IndexIVFScalarQuantizer (QT_8bit) for ``"sq8"``."""
    faiss = _faiss()
    d = keys.shape[1]
    quantizer = faiss.IndexFlatIP(d) if metric == "ip" else faiss.IndexFlatL2(d)
    if codec == "flat":
        index = faiss.IndexIVFFlat(quantizer, d, nlist, metric_type(metric))
    elif codec == "sq8":
        index = faiss.IndexIVFScalarQuantizer(quantizer, d, nlist, faiss.ScalarQuantizer.QT_8bit, metric_type(metric))
    else:
        raise ValueError(f"build_ivf: codec must be 'flat' or 'sq8', got {codec!r}")
    index.cp.seed = seed
    index.cp.spherical = metric == "ip"
    index.train(np.ascontiguousarray(keys, dtype=np.float32))
    index.add_with_ids(np.ascontiguousarray(keys, dtype=np.float32), np.ascontiguousarray(ids, dtype=np.int64))
    index.nprobe = nprobe
    return index


def is_ivf(index) -> bool:
    faiss = _faiss()
    return isinstance(index, faiss.IndexIVF)


def cluster_occupancy(index) -> list[int]:
    """Entries per IVF list (empty list for an exact index)."""
    if index is None or not is_ivf(index):
        return []
    invlists = index.invlists
    return [int(invlists.list_size(i)) for i in range(index.nlist)]


def index_bytes(index) -> int:
    """Estimated bytes held by the index: stored vectors + ids (+ centroids for IVF); no serialisation."""
    if index is None:
        return 0
    per_entry = index.d * 4 + 8
    centroids = index.nlist * index.d * 4 if is_ivf(index) else 0
    return int(index.ntotal * per_entry + centroids)


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """Run FAISS on one OpenMP thread inside the block (the calling thread's setting; restored after).

    Adding a few hundred keys or removing ids is too little work to share, and right after torch work the
    OpenMP workers compete with torch's threads: on the 2-core development machine, adding and removing 256
    keys in a 1,024-entry IVF index took a median 0.19 ms on one thread and 79 ms on two.
    """
    faiss = _faiss()
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(threads)


def gpu_available() -> bool:
    faiss = _faiss()
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


class GpuReplica:
    """A copy of a CPU index on GPU ``device`` (faiss GPU build) for searching; the CPU index stays the source
    of truth. :meth:`invalidate` after every change to it; the next :meth:`of` copies it again."""

    def __init__(self, device: int = 0) -> None:
        if not gpu_available():
            raise RuntimeError("faiss reports no GPU (faiss.get_num_gpus() == 0 or a CPU-only build); install "
                               "faiss-gpu on a CUDA machine or keep the memory on the CPU")  # fmt: skip
        self.resources, self.device, self._copy = _faiss().StandardGpuResources(), device, None

    def invalidate(self) -> None:
        self._copy = None

    def of(self, index):
        if self._copy is None:
            self._copy = _faiss().index_cpu_to_gpu(self.resources, self.device, index)
        return self._copy

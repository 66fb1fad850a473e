"""MemoryBank: the external memories of one model, looked up by layer, and the writes pending until the forward ends.

The bank plays the part a cache plays in transformers: the LM owns one, passes it to every block, and each
block looks up its own store by ``layer_idx``. One forward pass goes:

    with bank.forward_pass(read=True, write=True):          # what this pass may do
        ...  block i:  store = bank.store(i)                 # None: no store, or reading is off
                       delta = reader(h, store)              # read what earlier segments wrote
                       bank.stage(i, h)                      # remember what layer i will write
        bank.finish(input_ids, finite)                       # after the whole forward: select_write + write

Causality: ``stage`` only records the states; the stores change in ``commit``, after every block has read, so
no position of a segment can retrieve a state of its own segment. A pass with ``write=False`` (and any call
outside a pass) stages nothing; ``finish`` commits, or discards what was staged when the loss is not finite (on
every data-parallel rank if on any).
Reading and writing are independent: ``read=False, write=True`` fills the memory without using it.

Saved layout (``save`` / ``load``): one folder per store, ``<folder>/<layer>/`` (:mod:`s3cmn.memory.persist`).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    import torch.distributed as dist

    from s3cmn.memory.records import MemoryStats
    from s3cmn.memory.store import FaissMemory
    from s3cmn.model_config import S3CMNConfig


class MemoryBank:
    """The FAISS stores of a model by int layer index, and the states staged for writing after the forward.

    ``store(layer)`` and ``stage(layer, states)`` are what a block calls; ``forward_pass``, ``commit`` and
    ``discard`` are what the LM calls around its forward (module docstring). ``writes`` counts the commits:
    it is the write step passed to every store (their clock for recency).
    """

    def __init__(self, stores: dict[int, FaissMemory] | None = None, writes: int = 0) -> None:
        self._stores: dict[int, FaissMemory] = {}
        for layer, memory in (stores or {}).items():
            self[layer] = memory
        self._pending: dict[int, Tensor] = {}
        self.reading = True  # outside a forward_pass: the stores are read, nothing is staged
        self.writing = False
        self.writes = writes

    @classmethod
    def from_config(cls, config: S3CMNConfig) -> MemoryBank:
        """Empty stores for the blocks in ``config.memory_layer_indices()`` (none when ``use_memory`` is off)."""
        if not config.use_memory:
            return cls()
        from s3cmn.memory.store import FaissMemory

        return cls({i: FaissMemory.from_config(config, i) for i in config.memory_layer_indices()})

    # --- lookup -----------------------------------------------------------------------------------------
    @property
    def layers(self) -> list[int]:
        """The layer indices that have a store, ascending."""
        return sorted(self._stores)

    def items(self) -> list[tuple[int, FaissMemory]]:
        """(layer, store) pairs, by ascending layer."""
        return [(layer, self._stores[layer]) for layer in self.layers]

    def __iter__(self) -> Iterator[tuple[int, FaissMemory]]:
        return iter(self.items())

    def __len__(self) -> int:
        return len(self._stores)

    def __contains__(self, layer: object) -> bool:
        return layer in self._stores

    def __getitem__(self, layer: int) -> FaissMemory:
        """The store of ``layer`` whatever the pass's mode (for inspection, saving, quantising)."""
        if layer not in self._stores:
            raise KeyError(f"MemoryBank has no store for layer {layer!r}; its layers are {self.layers}")
        return self._stores[layer]

    def __setitem__(self, layer: int, memory: FaissMemory) -> None:
        """Put ``memory`` in place of (or as) the store of ``layer`` (e.g. a loaded or quantised copy)."""
        if isinstance(layer, bool) or not isinstance(layer, int):
            raise TypeError(f"MemoryBank layers are ints (block indices), got {layer!r}")
        self._stores[layer] = memory

    @property
    def searchable(self) -> bool:
        """Whether any store can be searched (a read from none of them is 0)."""
        return any(memory.searchable for memory in self._stores.values())

    def store(self, layer_idx: int) -> FaissMemory | None:
        """The store block ``layer_idx`` reads; None when it has none or this pass does not read."""
        return self._stores.get(layer_idx) if self.reading else None

    def __repr__(self) -> str:
        stores = ", ".join(f"{layer}: {m.num_entries} entries" for layer, m in self.items())
        return f"MemoryBank({{{stores}}}, writes={self.writes}, pending={sorted(self._pending)})"

    # --- one forward pass -------------------------------------------------------------------------------
    @contextmanager
    def forward_pass(self, read: bool = True, write: bool = False) -> Iterator[MemoryBank]:
        """Within the block: blocks read only if ``read`` and stage only if ``write``. Nothing staged before
        survives the entry; an exception inside discards what was staged; the previous mode comes back."""
        previous = self.reading, self.writing
        self._pending.clear()
        self.reading, self.writing = read, write
        try:
            yield self
        except BaseException:
            self.discard()
            raise
        finally:
            self.reading, self.writing = previous

    def stage(self, layer_idx: int, states: Tensor) -> None:
        """Record the (B, T, D) normed hidden states layer ``layer_idx`` writes at the next ``commit`` ((B, D)
        in step mode counts as T = 1). Detached; ignored for a layer without a store or a pass that does not
        write. Staging the same layer again in one pass replaces its states."""
        if not self.writing or layer_idx not in self._stores:
            return
        if states.dim() == 2:
            states = states[:, None]  # (B, 1, D)
        if states.dim() != 3:
            raise ValueError(f"MemoryBank.stage: layer {layer_idx} states must be (B, T, D), got {tuple(states.shape)}")
        self._pending[layer_idx] = states.detach()

    def staged(self, layer_idx: int) -> Tensor | None:
        """The (B, T, D) states ``layer_idx`` staged in this pass (None if none), e.g. to inspect its queries."""
        return self._pending.get(layer_idx)

    @property
    def pending(self) -> list[int]:
        """The layers whose states are staged and not yet committed."""
        return sorted(self._pending)

    def discard(self) -> None:
        """Drop the staged states: nothing is written."""
        self._pending.clear()

    def finish(self, input_ids: Tensor, finite: bool, group: dist.ProcessGroup | None = None) -> int:
        """End a pass that staged writes: :meth:`commit` them, or :meth:`discard` them when ``finite`` is False
        (a NaN/inf loss would poison the stores). Returns the entries written.

        Under torch.distributed the ranks agree first (any rank's non-finite loss discards on every rank):
        ``commit`` runs collectives, and a rank that discarded alone would leave the others waiting for it.
        """
        from s3cmn.memory.distributed import all_finite

        if not all_finite(finite, group):
            self.discard()
            return 0
        return self.commit(input_ids, group)

    @torch.no_grad()
    def commit(self, input_ids: Tensor, group: dist.ProcessGroup | None = None) -> int:
        """Write the staged states of every layer to its store (every ``write_stride``-th position, with the
        token-id provenance of ``input_ids`` (B, T)); return the number of entries written, then clear.

        Under torch.distributed every rank's writes and usage counts are gathered first (``synced_write``),
        so all replicas hold the same memory; every rank must call ``commit`` the same number of times.
        """
        from s3cmn.memory.distributed import synced_write
        from s3cmn.memory.reader import select_write

        written = 0
        for layer in sorted(self._pending):
            memory, states = self._stores[layer], self._pending[layer]
            if states.shape[:2] != input_ids.shape:
                raise ValueError(f"MemoryBank.commit: layer {layer} staged states {tuple(states.shape)} do not "
                                 f"match input_ids {tuple(input_ids.shape)}")  # fmt: skip
            values, provenance = select_write(states, input_ids, memory.settings.memory_write_stride)
            written += len(synced_write(memory, values, provenance, step=self.writes, group=group))
        self.writes += 1
        self._pending.clear()
        return written

    # --- the stores as a whole --------------------------------------------------------------------------
    def reset(self) -> None:
        """Empty every store and drop anything staged (the write counter keeps running)."""
        self._pending.clear()
        for _, memory in self:
            memory.reset()

    def reset_search_stats(self) -> None:
        """Zero every store's search counters (hit rate, similarity, latency), keeping the entries."""
        for _, memory in self:
            memory.reset_search_stats()

    def stats(self) -> dict[int, MemoryStats]:
        """``stats()`` of each store, by layer."""
        return {layer: memory.stats() for layer, memory in self}

    def copy(self) -> MemoryBank:
        """An independent deep copy of the stores and the write counter (nothing staged)."""
        return MemoryBank({layer: copy.deepcopy(memory) for layer, memory in self}, self.writes)

    def save(self, folder: str | os.PathLike) -> None:
        """Save every store to ``<folder>/<layer>/`` (each atomically, see :mod:`s3cmn.memory.persist`)."""
        for layer, memory in self:
            memory.save(os.path.join(folder, str(layer)))

    def load(self, folder: str | os.PathLike) -> None:
        """Replace every store by the one saved in ``<folder>/<layer>/``; a missing layer folder is an error."""
        from s3cmn.memory.store import FaissMemory

        for layer in self.layers:
            path = os.path.join(folder, str(layer))
            if not os.path.isdir(path):
                raise FileNotFoundError(
                    f"memory of block {layer} is missing: expected the folder {path} (saved by save_pretrained)"
                )
            self._stores[layer] = FaissMemory.load(path)
        self._pending.clear()

    def to_gpu(self, device: int = 0) -> MemoryBank:
        """Search every store on GPU ``device`` (see :meth:`FaissMemory.to_gpu`)."""
        for _, memory in self:
            memory.to_gpu(device)
        return self

"""The external FAISS memory: the stores of a model (MemoryBank), one store (FaissMemory), attention reader
(MemoryReader), write selection (select_write), data-parallel sync (synced_write) and inspection
(memory_report, query_report, plot_memory).

Names are imported lazily (PEP 562) so ``import s3cmn`` does not import faiss.

How the LM uses it (one store per block in ``config.memory_layer_indices()``):
    bank = MemoryBank.from_config(config)                      # FaissMemory.from_config(config, i) per layer
    with bank.forward_pass(read=use_memory, write=write_memory):
        # the memory sub-layer of block i:
        delta, stats = reader(h, bank.store(i))                # read: one FAISS search; h = h + delta
        bank.stage(i, h)                                       # kept aside, not written yet
        # after the whole forward of the segment, never before:
        bank.commit(input_ids)                                 # per layer: select_write(h, ids, stride), then
                                                               # synced_write (= store.write on one process;
                                                               # under DDP syncs usage + gathers writes)
    bank.save(dir); bank.load(dir)                             # with save_pretrained: dir/<layer>/
"""

from __future__ import annotations

from s3cmn.utils.lazy import lazy_exports

_EXPORTS = {
    "FaissMemory": "s3cmn.memory.store",
    "MemoryBank": "s3cmn.memory.bank",
    "MemorySettings": "s3cmn.memory.settings",
    "MemoryReader": "s3cmn.memory.reader",
    "MemoryReadStats": "s3cmn.memory.reader",
    "select_write": "s3cmn.memory.reader",
    "memory_attend": "s3cmn.memory.reader",
    "memory_attend_ref": "s3cmn.memory.reader",
    "gather_writes": "s3cmn.memory.distributed",
    "sync_usage": "s3cmn.memory.distributed",
    "synced_write": "s3cmn.memory.distributed",
    "Provenance": "s3cmn.memory.records",
    "SearchResult": "s3cmn.memory.records",
    "MemoryStats": "s3cmn.memory.records",
    "MemoryLoadError": "s3cmn.memory.records",
    "PROVENANCE_WINDOW": "s3cmn.memory.records",
    "PCA": "s3cmn.memory.pca",
    "memory_report": "s3cmn.memory.inspect",
    "plot_memory": "s3cmn.memory.inspect",
    "usage_spread": "s3cmn.memory.inspect",
    "query_report": "s3cmn.memory.inspect",
}
__all__ = list(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

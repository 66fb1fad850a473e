"""Next-token read-outs of the memory: the continuous cache and the kNN-LM datastore (issue 15).

    from s3cmn.memory.nexttoken import NextTokenDatastore, ReadoutSettings, build_datastore, fit_readouts
    store = build_datastore(model, train_stream, 128, 64)          # (final hidden state at t -> token t+1)
    settings = fit_readouts(model, heldout_stream, 128, 64, datastore=store, fitted_on=file_source(path))
    scores = score_readouts(model, test_stream, 128, 64, 8, ["off", "cache", "knn", "cache+knn"], settings, store)

Maths in :mod:`.readout`, the datastore in :mod:`.datastore`, fitted settings in :mod:`.fitted`, the scoring
pass in :mod:`.stream`, building and fitting in :mod:`.fit`, generation in :mod:`.generate`.
"""

from __future__ import annotations

from s3cmn.utils.lazy import lazy_exports

_EXPORTS = {
    "Neighbours": "s3cmn.memory.nexttoken.readout",
    "Component": "s3cmn.memory.nexttoken.readout",
    "StreamCache": "s3cmn.memory.nexttoken.readout",
    "mixture_log_probs": "s3cmn.memory.nexttoken.readout",
    "mixture_log_probs_ref": "s3cmn.memory.nexttoken.readout",
    "mixture_target_log_probs": "s3cmn.memory.nexttoken.readout",
    "cache_neighbours": "s3cmn.memory.nexttoken.readout",
    "cache_neighbours_ref": "s3cmn.memory.nexttoken.readout",
    "NextTokenDatastore": "s3cmn.memory.nexttoken.datastore",
    "choose_index": "s3cmn.memory.nexttoken.datastore",
    "file_source": "s3cmn.memory.nexttoken.datastore",
    "CacheSettings": "s3cmn.memory.nexttoken.fitted",
    "KnnSettings": "s3cmn.memory.nexttoken.fitted",
    "ReadoutSettings": "s3cmn.memory.nexttoken.fitted",
    "settings_path": "s3cmn.memory.nexttoken.fitted",
    "datastore_path": "s3cmn.memory.nexttoken.fitted",
    "score_readouts": "s3cmn.memory.nexttoken.stream",
    "lm_chunks": "s3cmn.memory.nexttoken.stream",
    "READOUT_MODES": "s3cmn.memory.nexttoken.stream",
    "build_datastore": "s3cmn.memory.nexttoken.fit",
    "fit_readouts": "s3cmn.memory.nexttoken.fit",
    "generate_with_readout": "s3cmn.memory.nexttoken.generate",
    "load_readouts": "s3cmn.memory.nexttoken.generate",
}
__all__ = list(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

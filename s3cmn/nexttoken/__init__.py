"""Next-token read-outs: the continuous cache, the kNN-LM datastore (issue 15) and dynamic evaluation.

They mix a distribution read from the LM's final hidden states into its own; the learned store and bank that
the blocks read are :mod:`s3cmn.memory`.

    from s3cmn.nexttoken import NextTokenDatastore, ReadoutSettings, build_datastore, fit_readouts
    store = build_datastore(model, train_stream, 128, 64)          # (final hidden state at t -> token t+1)
    settings = fit_readouts(model, heldout_stream, 128, 64, datastore=store, fitted_on=file_source(path))
    scores = score_readouts(model, test_stream, 128, 64, 8, ["off", "cache", "knn", "cache+knn"], settings, store)

Maths in :mod:`.readout`, the datastore in :mod:`.datastore`, fitted settings in :mod:`.fitted`, the scoring
pass in :mod:`.stream`, building and fitting in :mod:`.fit`, chunked and sharded builds in :mod:`.build`,
the texts' fingerprints in :mod:`.provenance`, dynamic evaluation in :mod:`.dynamic` and :mod:`.dynamic_fit`,
generation in :mod:`.generate`.
"""

from __future__ import annotations

from s3cmn.utils.lazy import lazy_exports

_EXPORTS = {
    "Neighbours": "s3cmn.nexttoken.readout",
    "Component": "s3cmn.nexttoken.readout",
    "StreamCache": "s3cmn.nexttoken.readout",
    "mixture_log_probs": "s3cmn.nexttoken.readout",
    "mixture_log_probs_ref": "s3cmn.nexttoken.readout",
    "mixture_target_log_probs": "s3cmn.nexttoken.readout",
    "cache_neighbours": "s3cmn.nexttoken.readout",
    "cache_neighbours_ref": "s3cmn.nexttoken.readout",
    "NextTokenDatastore": "s3cmn.nexttoken.datastore",
    "choose_index": "s3cmn.nexttoken.datastore",
    "file_source": "s3cmn.nexttoken.datastore",
    "CacheSettings": "s3cmn.nexttoken.fitted",
    "KnnSettings": "s3cmn.nexttoken.fitted",
    "ReadoutSettings": "s3cmn.nexttoken.fitted",
    "settings_path": "s3cmn.nexttoken.fitted",
    "datastore_path": "s3cmn.nexttoken.fitted",
    "score_readouts": "s3cmn.nexttoken.stream",
    "lm_chunks": "s3cmn.nexttoken.stream",
    "READOUT_MODES": "s3cmn.nexttoken.stream",
    "build_datastore": "s3cmn.nexttoken.fit",
    "fit_readouts": "s3cmn.nexttoken.fit",
    "generate_with_readout": "s3cmn.nexttoken.generate",
    "load_readouts": "s3cmn.nexttoken.generate",
}
__all__ = list(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

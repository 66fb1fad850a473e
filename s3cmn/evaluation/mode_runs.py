"""The record of one scored memory mode (a run of the evaluation report) and the read-out settings it used;
shared by the static read-outs (:mod:`s3cmn.evaluation.readouts`) and the adapting ones
(:mod:`s3cmn.evaluation.dynamic_runs`)."""

from __future__ import annotations

from typing import Any

import torch

from s3cmn.evaluation.perplexity import EvalText, nll_summary
from s3cmn.nexttoken.stream import mode_sources


def run_record(precision: str, mode: str, text: EvalText, nll: torch.Tensor, seconds: float, windows: int,
               forwards: int, processed: int, peak: dict[str, Any], state: dict[str, Any] | None,
               sparsity: list) -> dict[str, Any]:
    """One run of the report: the mode's perplexities over ``text`` and what scoring it took."""
    return {
        "precision": precision, "memory": mode,
        "perplexity": nll_summary(float(nll.sum()), text.num_tokens, text.words, text.bytes),
        "windows": windows, "forwards": forwards, "tokens_processed": processed, "seconds": seconds,
        "scored_tokens_per_s": text.num_tokens / max(seconds, 1e-9), "peak_memory": peak, "sparsity": sparsity,
        "memory_state": state,
    }  # fmt: skip


def mode_settings(settings: Any, datastore: Any, mode: str) -> dict[str, Any]:
    """The settings a read-out mode was scored with and where each came from."""
    out: dict[str, Any] = {"fitted_on": settings.fitted_on}
    sources = mode_sources(mode)
    if "cache" in sources:
        out["cache"] = vars(settings.cache).copy()
    if "knn" in sources:
        out["knn"] = vars(settings.knn).copy()
        out["datastore"] = {"entries": len(datastore), "description": datastore.description,
                            "built_from": datastore.source}  # fmt: skip
    if len(sources) == 2:
        out["cache"]["lam"], out["knn"]["lam"] = settings.combined
    return out

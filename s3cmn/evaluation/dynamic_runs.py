"""The dynamic-evaluation modes of ``s3cmn-eval --memory``: dynamic, cache+dynamic, knn+dynamic,
cache+knn+dynamic (:mod:`s3cmn.nexttoken.dynamic`), scored in one adapting LM pass.

Their settings come from ``CHECKPOINT/nexttoken/dynamic.json`` (``s3cmn-memory fit --dynamic``); the report
names the text they were fitted on and refuses to score that text. Each mode's seconds are the adapting pass
(forward, backward, update) plus its own read-outs. The model's weights are the trained ones afterwards.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from s3cmn.evaluation.perplexity import EvalText
from s3cmn.nexttoken.dynamic import (
    DYNAMIC_MODES,
    DynamicSettings,
    check_dynamic,
    document_starts,
    load_dynamic,
)
from s3cmn.nexttoken.provenance import MAX_OVERLAP

logger = logging.getLogger(__name__)


@dataclass
class DynamicInputs:
    """The fitted settings and, where they reset at documents, the scored stream's document starts."""

    settings: DynamicSettings
    document_starts: Tensor | None


def dynamic_inputs(folder: Path, modes: list[str], text: EvalText, tokenizer: Any,
                   notes: list[str], max_overlap: float = MAX_OVERLAP) -> DynamicInputs | None:
    """The settings for the dynamic modes (None when none is asked); refuse the text they were fitted on."""
    from s3cmn.evaluation.errors import EvaluationError

    if not any(m in DYNAMIC_MODES for m in modes):
        return None
    try:
        settings = load_dynamic(folder)
        check_dynamic(modes, settings)
    except (ValueError, OSError) as err:
        raise EvaluationError(str(err)) from None
    fitted = settings.fitted_on.get("sha256")
    if hashlib.sha256(text.text.encode("utf-8")).hexdigest() == fitted:
        raise EvaluationError("the scored text is the text dynamic evaluation was fitted on: fit on held-out text")
    _refuse_overlap(folder, settings, text, notes, max_overlap)
    starts = None
    if settings.reset_at_documents:
        starts = document_starts(text.text, tokenizer, text.num_tokens)
        notes.append(f"dynamic evaluation resets to the trained weights at {len(starts)} document starts")
    scales = settings.summary().get("lr_scale")
    steps = (f"meta-learned step sizes: lr {settings.lr:g} x a scale per tensor ({scales['tensors']} tensors, "
             f"{scales['min']:.3g} to {scales['max']:.3g}, median {scales['median']:.3g})" if scales
             else f"lr {settings.lr:g}")  # fmt: skip
    notes.append(f"dynamic evaluation ({steps}, decay {settings.decay:g}, subset {settings.subset}, "
                 f"reset at documents {settings.reset_at_documents}, {settings.windows_per_step} window(s) per step; "
                 f"lambdas with dynamic on: cache {settings.cache_lam}, knn {settings.knn_lam}, cache+knn "
                 f"{settings.combined}) fitted on {settings.fitted_on.get('path', '?')} (sha256 {str(fitted)[:12]}, "
                 f"{settings.fitted_on.get('tokens', '?')} tokens), not on the scored text")  # fmt: skip
    return DynamicInputs(settings, starts)


def _refuse_overlap(folder: Path, settings: DynamicSettings, text: EvalText, notes: list[str],
                    max_overlap: float = MAX_OVERLAP) -> None:
    """Refuse a scored text that shares more than ``max_overlap`` of its long word n-grams with the fit text,
    by the fingerprint ``s3cmn-memory fit`` recorded for that same text (sha256) in ``readout.json``."""
    from s3cmn.data.errors import DataError
    from s3cmn.evaluation.errors import EvaluationError
    from s3cmn.nexttoken.generate import load_readouts
    from s3cmn.nexttoken.provenance import refuse_overlap

    readouts, _ = load_readouts(folder)
    fingerprint = getattr(readouts, "fingerprint", None)
    named = f"the text dynamic evaluation was fitted on ({settings.fitted_on.get('path', 'path not recorded')})"
    if fingerprint is None or readouts.fitted_on.get("sha256") != settings.fitted_on.get("sha256"):
        notes.append(f"{named} has no content fingerprint: only an identical scored text could be refused")
        return
    try:
        overlap = refuse_overlap(text.text, fingerprint, "the scored text", named,
                                 "score a text disjoint from it, or refit dynamic evaluation on other text",
                                 max_overlap)
    except DataError as err:
        raise EvaluationError(str(err)) from None
    notes.append(f"the scored text shares {overlap.fraction:.2%} of its sampled {fingerprint.ngram}-word sequences "
                 f"with {named} (refused above {max_overlap:.0%})")


def score_dynamic_modes(model: Any, precision: str, modes: list[str], text: EvalText, window: dict[str, Any],
                        device: torch.device, progress: bool, readouts: Any, datastore: Any,
                        dynamic: DynamicInputs) -> dict[str, dict[str, Any]]:
    """One run per dynamic mode (the run dicts of :func:`s3cmn.evaluation.readouts.score_modes`); none for a
    quantized model, whose int8 weights cannot take gradient steps."""
    from s3cmn.evaluation.mode_runs import mode_settings, run_record
    from s3cmn.evaluation.sparsity import model_sparsity
    from s3cmn.evaluation.speed import PeakMemory
    from s3cmn.nexttoken.dynamic import base_mode
    from s3cmn.nexttoken.dynamic_fit import dynamic_readouts, score_dynamic

    if precision == "int8":
        logger.warning("dynamic evaluation is not scored for the int8 model (its weights take no gradient steps)")
        return {}
    s = dynamic.settings
    with PeakMemory(device) as peak:
        scores = score_dynamic(model, text.stream, window["context_length"], window["stride"], modes, s, readouts,
                               datastore, dynamic.document_starts, progress)  # fmt: skip
    from s3cmn.data.windows import sliding_windows

    windows = sliding_windows(text.stream.numel(), window["context_length"], window["stride"])
    processed = sum(w.length for w in windows)
    sparsity = [x.to_dict() for x in model_sparsity(model, scores.spike_stats, processed)]
    adapted = dynamic_readouts(readouts, s)
    out = {}
    for m in modes:
        base = base_mode(m)
        state: dict[str, Any] = {"dynamic": s.summary()}
        if base != "off":
            state["readout"] = mode_settings(adapted, datastore, base)
            state["retrieved_fraction"] = {src: scores.hit_rate[src] for src in base.split("+")}
        out[m] = run_record(precision, m, text, scores.nll[m], scores.seconds[m], len(windows), scores.forwards,
                            processed, peak.result, state, sparsity)  # fmt: skip
        ppl = out[m]["perplexity"]
        logger.info("%s memory %s: token ppl %.3f, word ppl %.3f, %.4f bits/byte (%.1f s)", precision, m,
                    ppl["token_perplexity"], ppl["word_perplexity"], ppl["bits_per_byte"], scores.seconds[m])
    return out

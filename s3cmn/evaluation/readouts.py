"""The memory modes of ``s3cmn-eval --memory``: off, learned (the attention reader), and the next-token read-outs
cache, knn and cache+knn (:mod:`s3cmn.nexttoken`), scored side by side.

The read-out modes share one memory-off LM pass (:func:`s3cmn.nexttoken.stream.score_readouts`); each
one's seconds are that pass plus its own read-outs. Their settings come from ``CHECKPOINT/nexttoken/readout.json``
(``s3cmn-memory fit``), the datastore from ``CHECKPOINT/nexttoken/datastore`` (``s3cmn-memory build``); the report
names the text every setting was fitted on and the text the datastore was built from, and how many of the
scored text's long word n-grams each shares with it (:mod:`s3cmn.nexttoken.provenance`); it refuses a
scored text that shares more than ``MAX_OVERLAP`` with either, whatever the bytes around them (a prefix, a
suffix, the text re-wrapped or minus a line).
"""

from __future__ import annotations

import hashlib
import logging
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from s3cmn.evaluation.mode_runs import mode_settings, run_record
from s3cmn.evaluation.perplexity import EvalText
from s3cmn.evaluation.speed import PeakMemory
from s3cmn.nexttoken.dynamic import DYNAMIC_MODES, base_mode
from s3cmn.nexttoken.provenance import MAX_OVERLAP
from s3cmn.nexttoken.stream import READOUT_MODES, mode_sources, score_readouts

logger = logging.getLogger(__name__)

MEMORY_MODES = ("off", "learned", "cache", "knn", "cache+knn", *DYNAMIC_MODES)  # dynamic: s3cmn.evaluation.dynamic_runs
LEGACY_MODES = {"on": ["learned"], "both": ["off", "learned"], "off": ["off"]}


def parse_memory_modes(text: str) -> list[str]:
    """``"off,cache"`` -> ["off", "cache"]; the old names ``on`` (= learned) and ``both`` (= off,learned) too."""
    modes: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        names = LEGACY_MODES.get(part, [part])
        for name in names:
            if name not in MEMORY_MODES:
                raise ValueError(f"memory mode {part!r} is not one of {', '.join(MEMORY_MODES)} (or on / both); "
                                 "give a comma list, e.g. --memory off,cache,knn")  # fmt: skip
            if name not in modes:
                modes.append(name)
    if not modes:
        raise ValueError("--memory needs at least one mode, e.g. --memory off,cache")
    return modes


def resolve_memory_modes(memory_modes: Sequence[str] | None, legacy: str) -> list[str]:
    return parse_memory_modes(",".join(memory_modes)) if memory_modes else list(LEGACY_MODES[legacy])


def readout_inputs(folder: Path, modes: list[str], text: EvalText, window: dict[str, Any],
                   notes: list[str], max_overlap: float = MAX_OVERLAP) -> tuple[Any, Any, dict[str, Any] | None]:
    """Settings and datastore for the read-out modes, and the scored text's overlap with their texts
    (:func:`scored_text_overlap`); refuse a scored text they were fitted on / built from."""
    from s3cmn.evaluation.errors import EvaluationError
    from s3cmn.nexttoken.generate import load_readouts
    from s3cmn.nexttoken.stream import check_settings

    modes = [base_mode(m) if m in DYNAMIC_MODES else m for m in modes]  # what a dynamic mode mixes in
    needs = {s for m in modes if m in READOUT_MODES for s in mode_sources(m)}
    if not needs:
        return None, None, None
    settings, datastore = load_readouts(folder)
    if "knn" not in needs:
        datastore = None
    try:
        check_settings([m for m in modes if m in READOUT_MODES], settings, datastore)
    except ValueError as err:
        raise EvaluationError(str(err)) from None
    overlap = scored_text_overlap(text.text, settings, datastore, notes, max_overlap)
    fitted = settings.fitted_on.get("sha256")
    built = datastore.source.get("sha256") if datastore is not None else None
    if (settings.context_length, settings.stride) != (window["context_length"], window["stride"]):
        notes.append(f"read-out settings were fitted with context {settings.context_length} / stride "
                     f"{settings.stride}, scored with {window['context_length']} / {window['stride']}")  # fmt: skip
    where = settings.fitted_on.get("path", "?")
    notes.append(f"read-out settings (lambda, temperature, k, window) fitted on {where} (sha256 "
                 f"{str(fitted)[:12]}, {settings.fitted_on.get('tokens', '?')} tokens), not on the scored text")
    if datastore is not None:
        notes.append(f"knn datastore: {len(datastore):,} entries ({datastore.description}) built from "
                     f"{datastore.source.get('path', '?')} (sha256 {str(built)[:12]})")  # fmt: skip
    return settings, datastore, overlap


def scored_text_overlap(text: str, settings: Any, datastore: Any, notes: list[str],
                        max_overlap: float = MAX_OVERLAP) -> dict[str, Any]:
    """Per read-out text ("fit_text", "datastore_text"): the share of long word n-grams the scored ``text``
    shares with it (None where no fingerprint was recorded: noted, only an identical text is refused).
    An :class:`EvaluationError` (one line, naming the share and the file) above ``max_overlap``."""
    from s3cmn.data.errors import DataError
    from s3cmn.evaluation.errors import EvaluationError
    from s3cmn.nexttoken.provenance import refuse_overlap

    sources = {"fit_text": ("the text the read-out settings were fitted on", settings.fitted_on,
                            settings.fingerprint)}  # fmt: skip
    if datastore is not None:
        sources["datastore_text"] = ("the text the kNN datastore was built from", datastore.source,
                                     datastore.fingerprint)  # fmt: skip
    scored = hashlib.sha256(text.encode("utf-8")).hexdigest()
    out: dict[str, Any] = {}
    for key, (what, source, fingerprint) in sources.items():
        named = f"{what} ({source.get('path', 'path not recorded')})"
        if fingerprint is None:
            if scored == source.get("sha256"):
                raise EvaluationError(f"the scored text is {named}: score held-out text, or refit on other text")
            out[key] = None
            msg = f"{named} has no content fingerprint (made before they were kept, or without its text): " \
                  "only an identical scored text could be refused; rebuild / refit it to check for overlap"
            logger.warning(msg)
            notes.append(msg)
            continue
        try:
            overlap = refuse_overlap(text, fingerprint, "the scored text", named,
                                     "score a text disjoint from it, or refit / rebuild the read-outs on other text "
                                     "(source code: see --readout-max-overlap)", max_overlap)
        except DataError as err:
            raise EvaluationError(str(err)) from None
        out[key] = overlap.to_dict()
        notes.append(f"the scored text shares {overlap.fraction:.2%} of its sampled {fingerprint.ngram}-word "
                     f"sequences with {named} (refused above {max_overlap:.0%})")
    return out


def score_modes(model: Any, precision: str, modes: list[str], text: EvalText, window: dict[str, Any],
                batch_size: int, snapshot: Any, device: torch.device, progress: bool, settings: Any,
                datastore: Any, write_memory: bool = False, dynamic: Any = None) -> list[dict[str, Any]]:
    """One run per mode, in the order asked: learned through :func:`~s3cmn.evaluation.runs.score_run`, the
    others in one shared LM pass."""
    from s3cmn.evaluation.perplexity import sliding_windows
    from s3cmn.evaluation.runs import score_run
    from s3cmn.evaluation.sparsity import model_sparsity

    shared = [m for m in modes if m in READOUT_MODES]
    by_mode: dict[str, dict[str, Any]] = {}
    if shared:
        with PeakMemory(device) as peak:
            scores = score_readouts(model, text.stream, window["context_length"], window["stride"], batch_size,
                                    shared, settings, datastore, progress)  # fmt: skip
        windows = len(sliding_windows(text.stream.numel(), window["context_length"], window["stride"]))
        processed = sum(min(window["context_length"], text.stream.numel() - i * window["stride"])
                        for i in range(windows))  # fmt: skip
        sparsity = [s.to_dict() for s in model_sparsity(model, scores.spike_stats, processed)]
        for m in shared:
            state = None if m == "off" else {"readout": mode_settings(settings, datastore, m),
                                             "retrieved_fraction": {s: scores.hit_rate[s] for s in mode_sources(m)}}
            by_mode[m] = run_record(precision, m, text, scores.nll[m], scores.seconds[m], windows, scores.forwards,
                                    processed, peak.result, state, sparsity)  # fmt: skip
            ppl = by_mode[m]["perplexity"]
            logger.info("%s memory %s: token ppl %.3f, word ppl %.3f, %.4f bits/byte (%.1f s)", precision, m,
                        ppl["token_perplexity"], ppl["word_perplexity"], ppl["bits_per_byte"], scores.seconds[m])
    if "learned" in modes:
        run = score_run(model, precision, "on", text, window, batch_size, snapshot, device, progress, write_memory)
        run["memory"] = "learned"
        by_mode["learned"] = run
    dynamic_modes = [m for m in modes if m in DYNAMIC_MODES]
    if dynamic_modes:  # one adapting pass (s3cmn.evaluation.dynamic_runs); none for int8
        from s3cmn.evaluation.dynamic_runs import score_dynamic_modes

        by_mode.update(score_dynamic_modes(model, precision, dynamic_modes, text, window, device, progress, settings,
                                           datastore, dynamic))  # fmt: skip
    return [by_mode[m] for m in modes if m in by_mode]


def readout_summary(settings: Any, datastore: Any, modes: list[str],
                    overlap: dict[str, Any] | None = None) -> dict[str, Any] | None:
    if settings is None:
        return None
    return {m: mode_settings(settings, datastore, m) for m in modes if m in READOUT_MODES and m != "off"} | {
        "held_out_fit": settings.fit, "scored_text_overlap": overlap}


@torch.no_grad()
def readout_generation_cost(model: Any, text: EvalText, modes: list[str], settings: Any, datastore: Any,
                            new_tokens: int, repeats: int, prompt_tokens: int = 128) -> dict[str, Any]:
    """ms per generated token of ``generate(memory=mode)`` against the same loop without a read-out (greedy,
    batch 1, a prompt of real text), medians of ``repeats`` after a warm-up."""
    from s3cmn.nexttoken.generate import generate_with_readout

    prompt = text.stream[1 : 1 + min(prompt_tokens, text.num_tokens)][None]  # (1, T)

    def timed(mode: str) -> float:
        kwargs = {"settings": settings, "datastore": datastore, "max_new_tokens": new_tokens}
        generate_with_readout(model, prompt, mode, **{**kwargs, "max_new_tokens": 2})  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            generate_with_readout(model, prompt, mode, **kwargs)
            times.append(time.perf_counter() - t0)
        return 1000 * statistics.median(times) / new_tokens

    out = {"prompt_tokens": int(prompt.shape[1]), "new_tokens": new_tokens, "repeats": repeats,
           "ms_per_token": {"off": timed("off")}}  # fmt: skip
    for m in modes:
        out["ms_per_token"][m] = timed(m)
    return out

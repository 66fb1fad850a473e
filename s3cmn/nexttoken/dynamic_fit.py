"""Scoring with dynamic evaluation (alone, or under the cache / kNN read-outs) and fitting its settings.

Scoring (:func:`score_dynamic`): the read-out modes of :func:`s3cmn.nexttoken.stream.score_readouts`
over dynamic evaluation's adapting LM pass (:func:`.dynamic.dynamic_chunks`) instead of the fixed one; every
``+dynamic`` mode shares that one pass. The cache reads the adapted model's hidden states; the kNN datastore
keeps the trained model's keys.

Fitting (:func:`fit_dynamic`, never on the scored text), a coordinate search of the held-out NLL per token:

1. MS: the mean squared chunk gradient of every parameter over the held-out text, at the trained weights;
2. windows per update x subset x lr (decay 0) on the first ``grid_tokens`` tokens of the held-out text (each
   point is one pass; the MS of step 1 is measured for each windows-per-update value, as its steps see it).
   With ``min_speed`` > 0 only points whose scored tokens/s is at least that fraction of the fixed-weights
   pass's (the ``off`` read-out, ``batch_size`` windows per forward, timed on the same text in the same fit)
   can be chosen: dynamic evaluation trades perplexity for speed as the user asks;
3. decay at the best subset and lr; 4. the document reset on / off at the best point (WikiText articles only);
5. with ``meta`` (:class:`.dynamic_meta.MetaOptions`): the held-out text is split, the grid (1-4) and the
   meta-learned per-tensor step sizes (:func:`.dynamic_meta.meta_fit`, from the grid's point) are both fitted on
   its first ``1 - compare_fraction``, and the one with the lower NLL on the last ``compare_fraction``, which
   neither saw, is kept; ``fit["meta"]`` reports both;
6. with read-out settings: one pass over the whole held-out text at the chosen point, where the read-outs'
   weights (lambda) are refitted with dynamic on (temperature, k and window kept from their static fit).

A step size chosen at the top or the bottom of the grid is logged as a warning and reported
(``fit["lr_at_grid_edge"]``): the grid was too narrow for this model.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

from torch import Tensor, nn

from s3cmn.nexttoken.datastore import NextTokenDatastore
from s3cmn.nexttoken.dynamic import DYNAMIC_MODES, DynamicSettings, base_mode, dynamic_chunks, gradient_ms
from s3cmn.nexttoken.dynamic_meta import MetaOptions, meta_fit
from s3cmn.nexttoken.fit import (
    KNN_K_MAX,
    FitData,
    best_lambda,
    collect_chunks,
    fit_combined,
    restrict,
    target_prob,
)
from s3cmn.nexttoken.fitted import ReadoutSettings
from s3cmn.nexttoken.readout import StreamCache
from s3cmn.nexttoken.stream import Chunk, ReadoutScores, lm_chunks, score_readouts

logger = logging.getLogger(__name__)

LRS = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
DECAYS = (1e-3, 1e-2)  # tried after decay 0
GRID_SUBSETS = ("all", "norms_biases", "head", "ssm")


# --------------------------------------------------------------------------------------------------
# scoring


def dynamic_readouts(readouts: ReadoutSettings | None, dynamic: DynamicSettings) -> ReadoutSettings | None:
    """The read-out settings with the lambdas refitted under dynamic evaluation (where it has them)."""
    if readouts is None:
        return None
    out = dataclasses.replace(readouts)
    if readouts.cache is not None and dynamic.cache_lam is not None:
        out.cache = dataclasses.replace(readouts.cache, lam=dynamic.cache_lam)
    if readouts.knn is not None and dynamic.knn_lam is not None:
        out.knn = dataclasses.replace(readouts.knn, lam=dynamic.knn_lam)
    if dynamic.combined is not None:
        out.combined = dynamic.combined
    return out


def score_dynamic(model: nn.Module, stream: Tensor, context_length: int, stride: int, modes: Sequence[str],
                  dynamic: DynamicSettings, readouts: ReadoutSettings | None = None,
                  datastore: NextTokenDatastore | None = None, document_starts: Tensor | None = None,
                  progress: bool = False) -> ReadoutScores:
    """Score every token of ``stream`` (N + 1,) once under each of ``modes`` (:data:`DYNAMIC_MODES`), in one
    adapting LM pass; the model's weights are the trained ones again afterwards."""
    bases = {m: base_mode(m) for m in modes}
    chunks = dynamic_chunks(model, stream, context_length, stride, dynamic, document_starts)
    scores = score_readouts(model, stream, context_length, stride, dynamic.windows_per_step, list(bases.values()),
                            dynamic_readouts(readouts, dynamic), datastore, progress, chunks=chunks)  # fmt: skip
    return ReadoutScores({m: scores.nll[b] for m, b in bases.items()}, {m: scores.seconds[b] for m, b in bases.items()},
                         scores.forwards, scores.hit_rate, scores.spike_stats)  # fmt: skip


def dynamic_nll(model: nn.Module, stream: Tensor, context_length: int, stride: int, settings: DynamicSettings,
                document_starts: Tensor | None = None) -> float:
    """Mean NLL per token of ``stream`` under dynamic evaluation with ``settings`` (the LM alone)."""
    total, count = 0.0, 0
    for chunk in dynamic_chunks(model, stream, context_length, stride, settings, document_starts):
        total -= float(chunk.lm_log_probs.sum())
        count += chunk.lm_log_probs.numel()
    return total / count


# --------------------------------------------------------------------------------------------------
# fitting


def _collect(chunks: Iterable[Chunk], readouts: ReadoutSettings, datastore: NextTokenDatastore | None) -> FitData:
    """:func:`s3cmn.nexttoken.fit.collect` over any LM pass: log p_LM(target) and each position's
    cache (within the fitted window) and kNN neighbours."""
    cache = StreamCache(readouts.cache.window, readouts.cache.k) if readouts.cache is not None else None
    if datastore is not None:
        datastore.set_nprobe(readouts.knn.nprobe)
    return collect_chunks(chunks, cache, datastore, min(readouts.knn.k, KNN_K_MAX) if datastore is not None else 0)


def _refit_lambdas(data: FitData, readouts: ReadoutSettings) -> tuple[dict[str, Any], dict[str, float]]:
    """The read-outs' weights refitted on dynamic evaluation's log-probabilities, and their held-out NLL."""
    lams: dict[str, Any] = {}
    nll = {"dynamic": float(-data.lm.mean())}
    if readouts.cache is not None:
        cache = restrict(data.cache, data.pos, readouts.cache.window, readouts.cache.k)
        lams["cache_lam"], ll = best_lambda(data.lm, *target_prob(cache, data.targets, readouts.cache.temperature))
        nll["cache+dynamic"] = -ll
    if readouts.knn is not None and data.knn is not None:
        knn = restrict(data.knn, data.pos, None, readouts.knn.k)
        lams["knn_lam"], ll = best_lambda(data.lm, *target_prob(knn, data.targets, readouts.knn.temperature))
        nll["knn+dynamic"] = -ll
        if readouts.cache is not None:
            lams["combined"], ll = fit_combined(data, readouts.cache, readouts.knn)
            nll["cache+knn+dynamic"] = -ll
    return lams, nll


def fit_dynamic(model: nn.Module, stream: Tensor, context_length: int, stride: int, *,
                readouts: ReadoutSettings | None = None, datastore: NextTokenDatastore | None = None,
                document_starts: Tensor | None = None, fitted_on: dict[str, Any] | None = None,
                grid_tokens: int = 8192, windows_per_step: int | Sequence[int] = 1, lrs: Sequence[float] = LRS,
                decays: Sequence[float] = DECAYS, subsets: Sequence[str] = GRID_SUBSETS,
                meta: MetaOptions | None = None, compare_fraction: float = 0.25, min_speed: float = 0.0,
                batch_size: int = 8) -> DynamicSettings:
    """Fit lr, decay, the subset, the windows per update and the document reset on the held-out ``stream``
    (N + 1,) (module docstring); ``windows_per_step``: one value or the values to try; ``min_speed``: the
    fraction of the fixed-weights pass's tokens/s (at ``batch_size`` windows per forward) a chosen point must
    reach (0 = any); ``meta``: also meta-learn per-tensor step sizes and keep whichever wins on the held-out
    tail; ``readouts`` / ``datastore``: the static read-outs, whose lambdas are refitted with dynamic on."""
    windows = [windows_per_step] if isinstance(windows_per_step, int) else list(windows_per_step)
    if not windows or min(windows) < 1:
        raise ValueError(f"windows_per_step = {windows_per_step}: give one or more counts >= 1")
    if not 0 <= min_speed < 1:
        raise ValueError(f"min_speed = {min_speed} must be in [0, 1): a fraction of the fixed-weights pass's speed")
    start = time.perf_counter()
    fit_stream, compare_stream = stream, None
    if meta is not None:
        if not 0 < compare_fraction < 1:
            raise ValueError(f"compare_fraction = {compare_fraction} must be in (0, 1)")
        cut = int((stream.numel() - 1) * (1 - compare_fraction))
        if min(cut, stream.numel() - 1 - cut) < context_length:
            raise ValueError(f"the held-out text ({stream.numel() - 1} tokens) is too short to split into a fit part "
                             f"and a comparison part of at least one window ({context_length} tokens) each")
        fit_stream, compare_stream = stream[: cut + 1], stream[cut:]
    chosen, fit = _grid(model, fit_stream, context_length, stride, document_starts, fitted_on, grid_tokens,
                        windows, lrs, decays, subsets, min_speed, batch_size)  # fmt: skip
    if meta is not None:
        needed = fit["speed_floor"]["needed_tokens_per_s"] if fit.get("speed_floor", {}).get("met") else 0.0
        chosen, fit["meta"] = _meta_or_grid(model, fit_stream, compare_stream, context_length, stride, chosen, meta,
                                            document_starts, needed)  # fmt: skip
        fit["meta"]["compare_fraction"] = compare_fraction
    if readouts is not None and readouts.cache is not None:  # 6. the read-outs' weights with dynamic on
        chunks = dynamic_chunks(model, stream, context_length, stride, chosen, document_starts)
        lams, fit["nll_per_token"] = _refit_lambdas(_collect(chunks, readouts, datastore), readouts)
        chosen = dataclasses.replace(chosen, **lams)
    fit["seconds"] = time.perf_counter() - start
    logger.info("dynamic evaluation fitted on %d tokens: %s", stream.numel() - 1, chosen.summary())
    return dataclasses.replace(chosen, fit=fit)


def static_tokens_per_s(model: nn.Module, stream: Tensor, context_length: int, stride: int,
                        batch_size: int) -> float:
    """Scored tokens/s of the fixed-weights LM pass (the ``off`` read-out) over ``stream``: the speed
    ``min_speed`` is a fraction of."""
    start, count = time.perf_counter(), 0
    for chunk in lm_chunks(model, stream, context_length, stride, batch_size):
        count += chunk.targets.numel()
    return count / (time.perf_counter() - start)


def _grid(model: nn.Module, stream: Tensor, context_length: int, stride: int, document_starts: Tensor | None,
          fitted_on: dict[str, Any] | None, grid_tokens: int, windows: Sequence[int], lrs: Sequence[float],
          decays: Sequence[float], subsets: Sequence[str], min_speed: float = 0.0,
          batch_size: int = 8) -> tuple[DynamicSettings, dict[str, Any]]:  # fmt: skip
    """Steps 1-4 of the module docstring: the MS over ``stream``, the grid on its first ``grid_tokens``."""
    grid_stream = stream[: grid_tokens + 1] if grid_tokens > 0 else stream
    bases = {k: DynamicSettings(windows_per_step=k, ms=gradient_ms(model, stream, context_length, stride, k),
                                fitted_on=dict(fitted_on or {}), context_length=context_length, stride=stride)
             for k in windows}  # fmt: skip
    static = [static_tokens_per_s(model, grid_stream, context_length, stride, batch_size)] if min_speed else []
    if static:
        logger.info("dynamic fit: the fixed-weights pass scores %.0f tokens/s (%d windows per forward): the floor "
                    "is %.0f", static[0], batch_size, min_speed * static[0])  # fmt: skip
    trials: list[dict[str, Any]] = []

    def trial(k: int, **change: Any) -> tuple[float, float]:
        """One pass at windows ``k`` with ``change``: (held-out NLL per token, scored tokens/s)."""
        settings = dataclasses.replace(bases[k], **change)
        t0 = time.perf_counter()
        nll = dynamic_nll(model, grid_stream, context_length, stride, settings, document_starts)
        seconds = time.perf_counter() - t0
        speed = (grid_stream.numel() - 1) / seconds
        trials.append({"windows_per_step": k, **change, "nll_per_token": nll, "seconds": seconds,
                       "tokens_per_s": speed})  # fmt: skip
        logger.info("dynamic fit: %s, %d window(s) per step -> held-out NLL/token %.4f (%.0f tokens/s)", change, k,
                    nll, speed)  # fmt: skip
        return nll, speed

    off, _ = trial(windows[0], lr=0.0)
    points = [(*trial(k, subset=s, lr=lr), {"windows": k, "subset": s, "lr": lr})
              for k in windows for s in subsets for lr in lrs]  # fmt: skip
    floor: dict[str, Any] = {}
    needed = 0.0
    if min_speed:
        static.append(static_tokens_per_s(model, grid_stream, context_length, stride, batch_size))
        needed = min_speed * max(static)  # the faster of two timings, before and after the grid: the stricter floor
        fast = [p for p in points if p[1] >= needed]
        floor = {"min_speed": min_speed, "off_tokens_per_s": static, "needed_tokens_per_s": needed,
                 "met": bool(fast)}  # fmt: skip
        if not fast:
            logger.warning("dynamic fit: no grid point reaches %.2fx the fixed-weights pass's %.0f tokens/s (the "
                           "fastest: %.0f): the best of all is kept; try more windows per step or a smaller "
                           "subset", min_speed, max(static), max(t["tokens_per_s"] for t in trials))  # fmt: skip
            needed = 0.0  # nothing is fast enough: the later steps are not held to the floor either
        points = fast or points
    nll, speed, point = min(points, key=lambda p: p[0])
    k = point.pop("windows")
    best = dict(point)

    def better(value: float, value_speed: float) -> bool:
        """A decay or reset trial replaces the best point only if it scores lower and meets the floor."""
        return value < nll and value_speed >= needed

    for decay in decays:  # every decay at the best windows, subset and lr (decay 0)
        value, value_speed = trial(k, **point, decay=decay)
        if better(value, value_speed):
            nll, speed, best = value, value_speed, {**point, "decay": decay}
    if document_starts is not None and len(document_starts) > 0 and bool((document_starts < grid_stream.numel()).any()):
        value, value_speed = trial(k, **best, reset_at_documents=True)
        if better(value, value_speed):
            nll, speed, best = value, value_speed, {**best, "reset_at_documents": True}
    edge = len(lrs) > 1 and best["lr"] in (min(lrs), max(lrs))
    if edge:
        logger.warning("dynamic fit: lr %g is at the edge of the grid %s: widen it (--dynamic-lrs)", best["lr"],
                       list(lrs))  # fmt: skip
    fit: dict[str, Any] = {"grid_tokens": int(grid_stream.numel() - 1), "tokens": int(stream.numel() - 1),
                           "grid_nll_per_token": {"off": off, "dynamic": nll}, "trials": trials,
                           "chosen_tokens_per_s": speed,
                           "grid": {"lr": list(lrs), "decay": [0.0, *decays], "subset": list(subsets),
                                    "windows_per_step": list(windows)},
                           "lr_at_grid_edge": edge, **({"speed_floor": floor} if floor else {})}  # fmt: skip
    return dataclasses.replace(bases[k], **best), fit


def _meta_or_grid(model: nn.Module, fit_stream: Tensor, compare_stream: Tensor, context_length: int, stride: int,
                  grid: DynamicSettings, options: MetaOptions, document_starts: Tensor | None,
                  needed_tokens_per_s: float = 0.0) -> tuple[DynamicSettings, dict[str, Any]]:  # fmt: skip
    """Step 5: meta-learn from the grid's point on ``fit_stream``, score off / grid / meta on ``compare_stream``
    (neither fit saw it; document resets as each setting says, the starts shifted to its positions) and keep
    the lower; under a speed floor (``needed_tokens_per_s``) the meta-learned steps, which adapt every tensor,
    are kept only if they score that fast."""
    learned = meta_fit(model, fit_stream, context_length, stride, grid, options)
    offset = fit_stream.numel() - 1
    starts = None if document_starts is None else document_starts[document_starts > offset] - offset
    scores, speed = {}, {}
    for name, settings in (("off", dataclasses.replace(grid, lr=0.0)), ("grid", grid), ("meta", learned)):
        t0 = time.perf_counter()
        scores[name] = dynamic_nll(model, compare_stream, context_length, stride, settings, starts)
        speed[name] = (compare_stream.numel() - 1) / (time.perf_counter() - t0)
    fast_enough = speed["meta"] >= needed_tokens_per_s
    kept = "meta" if scores["meta"] <= scores["grid"] and fast_enough else "grid"
    logger.info("dynamic fit, held-out comparison (%d tokens): off %.4f, grid %.4f, meta-learned %.4f (%.0f "
                "tokens/s%s) -> %s", compare_stream.numel() - 1, scores["off"], scores["grid"], scores["meta"],
                speed["meta"], "" if fast_enough else ", under the speed floor", kept)  # fmt: skip
    report = {**learned.fit["meta"], "compare_tokens": int(compare_stream.numel() - 1),
              "fit_tokens": int(fit_stream.numel() - 1), "compare_nll_per_token": scores,
              "compare_tokens_per_s": speed, "kept": kept,
              "learned": {"decay": learned.decay, "lr_scale": learned.lr_scale}}  # fmt: skip
    return (learned if kept == "meta" else grid), report


__all__ = ["DYNAMIC_MODES", "MetaOptions", "dynamic_nll", "dynamic_readouts", "fit_dynamic", "score_dynamic"]

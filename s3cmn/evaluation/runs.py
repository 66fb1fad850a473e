"""One scoring run of a checkpoint's evaluation: perplexity with the memory off or on, the context curve, and
speed and size; :mod:`s3cmn.evaluation.run` puts them together into the report."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from s3cmn.evaluation.memory_state import memory_content, restore_memories, summarise_reads
from s3cmn.evaluation.perplexity import EvalText, nll_summary, score_stream
from s3cmn.evaluation.sparsity import model_sparsity
from s3cmn.evaluation.speed import PeakMemory, measure_speed, parameter_count, serialized_size
from s3cmn.memory.inspect import usage_spread

logger = logging.getLogger(__name__)


def _layer_names(model: Any, count: int) -> list[str]:
    names = [str(layer) for layer in model.memory_bank.layers]
    return names if len(names) == count else [str(i) for i in range(count)]


def score_run(model: Any, precision: str, mode: str, text: EvalText, window: dict[str, Any], batch_size: int,
              snapshot: Any, device: torch.device, progress: bool, write: bool = False) -> dict[str, Any]:
    """One perplexity run: memory ``mode`` "off" (no reads, no writes) or "on" (a fresh starting copy, read;
    with ``write`` the scored windows are also stored, each forward's after it is scored)."""
    use = mode == "on"
    if use:
        restore_memories(model, snapshot)
    start = memory_content(model.memory_bank) if use else None
    # How the starting memory's recorded retrievals (counted in training) spread, and those of this scoring
    # (counted on the stores, which restore_memories puts back afterwards).
    spread = {str(layer): usage_spread(m.usage()) for layer, m in model.memory_bank} if use else None
    counted = {str(layer): m.usage() for layer, m in model.memory_bank} if use else {}
    with PeakMemory(device) as peak, count_reads(model.memory_bank, use):
        score = score_stream(model, text.stream, window["context_length"], window["stride"], batch_size,
                             use_memory=use, write_memory=use and write, progress=progress,
                             desc=f"{precision} memory {mode}")
    scoring_spread = {str(layer): usage_spread(_since(m.usage(), counted[str(layer)]))
                      for layer, m in model.memory_bank}  # fmt: skip
    run: dict[str, Any] = {
        "precision": precision,
        "memory": mode,
        "perplexity": nll_summary(score.nll_sum, text.num_tokens, text.words, text.bytes),
        "windows": score.windows,
        "forwards": score.forwards,
        "tokens_processed": score.tokens_processed,
        "seconds": score.seconds,
        "scored_tokens_per_s": text.num_tokens / max(score.seconds, 1e-9),
        "peak_memory": peak.result,
        "sparsity": [s.to_dict() for s in model_sparsity(model, score.spike_stats, score.tokens_processed)],
        "memory_state": None,
    }
    if use:
        reads = score.memory_reads or []
        names = _layer_names(model, len(reads))
        run["memory_state"] = {
            "start": start,
            "writes": write,
            "end": memory_content(model.memory_bank),
            "reads": {name: summarise_reads(r) for name, r in zip(names, reads, strict=True)},
            "store": {str(layer): m.stats().to_dict() for layer, m in model.memory_bank},
            "usage_spread": spread,
            "usage_spread_scoring": scoring_spread if use else None,
            "hit_rate_trace": score.hit_rate_trace,
        }
        restore_memories(model, snapshot)  # leave the model holding the starting memory
    ppl = run["perplexity"]
    logger.info("%s memory %s: token ppl %.3f, word ppl %.3f, %.4f bits/byte (%d tokens, %.1f s)", precision,
                mode, ppl["token_perplexity"], ppl["word_perplexity"], ppl["bits_per_byte"], text.num_tokens,
                score.seconds)  # fmt: skip
    return run


def _since(now: np.ndarray, before: np.ndarray) -> np.ndarray:
    """Retrievals per entry since ``before``: the counts of the entries that were there before (writes during
    scoring add entries at the end of the id order; a pruned slot reads as a new entry)."""
    n = min(len(now), len(before))
    return np.concatenate([np.maximum(now[:n] - before[:n], 0), now[n:]])


@contextlib.contextmanager
def count_reads(bank: Any, on: bool) -> Iterator[None]:
    """While the block is open, the learned readers credit their retrievals to the stores in evaluation too."""
    stores = [m for _, m in bank] if on else []
    for m in stores:
        m.count_reads = True
    try:
        yield
    finally:
        for m in stores:
            m.count_reads = False


def context_curve(model: Any, text: EvalText, contexts: Sequence[int], tokens: int, batch_size: int,
                  progress: bool) -> list[dict[str, Any]]:
    """Token perplexity (memory off) on the first ``tokens`` tokens, for each context (stride = context // 2)."""
    stream = text.stream[: tokens + 1]
    rows = []
    for c in contexts:
        score = score_stream(model, stream, c, max(1, c // 2), batch_size, progress=progress, desc=f"context {c}")
        n = stream.numel() - 1
        rows.append({"context_length": c, "stride": max(1, c // 2), "tokens": n,
                     "nll_per_token": score.nll_sum / n, "token_perplexity": nll_summary(
                         score.nll_sum, n, 1, 1)["token_perplexity"]})  # fmt: skip
    return rows


def speed_and_size(model: Any, text: EvalText, use_memory: bool, device: torch.device, prompt_tokens: int,
                   new_tokens: int, repeats: int) -> dict[str, Any]:
    """Parameters, serialised size, prefill / generation speed and the peak memory while timing."""
    limit = prompt_tokens
    if model.config.position_embedding == "learned":  # prompt + generated tokens must have positions
        limit = min(limit, model.config.max_position_embeddings - new_tokens)
    prompt = text.stream[1 : 1 + max(1, min(limit, text.num_tokens))][None]  # (1, T): real text
    with PeakMemory(device) as peak:
        speed = measure_speed(model, prompt, new_tokens, repeats, use_memory=use_memory)
    return {"parameters": parameter_count(model), "serialized_state_dict_bytes": serialized_size(model),
            "speed": speed.to_dict(), "speed_peak_memory": peak.result}  # fmt: skip

"""Scoring a token stream with the next-token read-outs: one LM pass, then cache / kNN / both per chunk.

The LM pass is the sliding-window pass of :func:`s3cmn.evaluation.perplexity.score_stream` with the memory off
(the final hidden states are the input of the LM head, ``model.model(...)["hidden"]``); a forward's scored
positions form one contiguous chunk of the stream, handed to the read-outs in stream order:

- ``cache``: :class:`StreamCache` over the stream itself: position t reads positions t - window .. t - 1
  (earlier chunks and earlier positions of its own chunk), never t or later;
- ``knn``: the datastore, built from another text, read-only.

Each mode's seconds = the LM pass + the read-outs it uses, timed separately, so tokens/s compare as if each
mode had run alone (the LM pass is shared, not repeated).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor

from s3cmn.data.windows import Window, sliding_windows, window_batches
from s3cmn.nexttoken.datastore import NextTokenDatastore
from s3cmn.nexttoken.fitted import ReadoutSettings
from s3cmn.nexttoken.readout import Component, Neighbours, StreamCache, mixture_target_log_probs
from s3cmn.ops.nll import model_device, nll_float64

READOUT_MODES = ("off", "cache", "knn", "cache+knn")


@dataclass
class Chunk:
    """The scored positions of one forward: ``pos`` (n,) stream positions (position i predicts token i + 1),
    ``hidden`` (n, E) float32 final hidden states, ``targets`` (n,), ``lm_log_probs`` (n,) float64
    log p_LM(target), ``seconds`` of the forward + head."""

    pos: Tensor
    hidden: Tensor
    targets: Tensor
    lm_log_probs: Tensor
    seconds: float
    spike_stats: list | None = None


def lm_chunks(model: torch.nn.Module, stream: Tensor, context_length: int, stride: int,
              batch_size: int = 8, *, logits: bool = True) -> Iterator[Chunk]:
    """The LM pass over ``stream`` (N + 1,), memory off; ``logits=False`` skips the head (datastore build)."""
    batches = window_batches(sliding_windows(stream.numel(), context_length, stride), batch_size)
    return lm_batches(model, stream, batches, logits=logits)


@torch.no_grad()
def lm_batches(model: torch.nn.Module, stream: Tensor, batches: Iterable[list[Window]], *,
               logits: bool = True) -> Iterator[Chunk]:
    """:func:`lm_chunks` over given window batches (a resumable build's slice of them), one Chunk each."""
    device = model_device(model)
    for batch in batches:
        start = time.perf_counter()
        ids = torch.stack([stream[w.begin : w.end] for w in batch]).to(device)  # (B, T)
        B, T = ids.shape
        n = batch[0].num_scored
        out = model.model(ids, use_cache=False, memory_bank=None)
        hidden = out["hidden"][:, T - n - 1 : T - 1]  # (B, n, E)
        spikes = [b.spike_stats for b in out["blocks"] if getattr(b, "spike_stats", None) is not None]
        targets = ids[:, T - n :].reshape(-1)  # (B*n,)
        hidden = hidden.reshape(B * n, -1)  # (B*n, E) in the model's dtype: the head's input
        lm = -nll_float64(model.lm_head(hidden), targets).cpu() if logits else torch.zeros(0, dtype=torch.float64)
        hidden = hidden.float()
        pos = torch.cat([torch.arange(w.first_target - 1, w.end - 1) for w in batch])  # (B*n,) contiguous
        yield Chunk(pos, hidden.cpu(), targets.cpu(), lm, time.perf_counter() - start, spikes or None)


def mode_sources(mode: str) -> tuple[str, ...]:
    if mode not in READOUT_MODES:
        raise ValueError(f"next-token read-out mode {mode!r} is not one of {READOUT_MODES}")
    return () if mode == "off" else tuple(mode.split("+"))


def components(mode: str, settings: ReadoutSettings, cache_nb: Neighbours | None,
               knn_nb: Neighbours | None) -> list[Component]:
    """The mixture components of ``mode`` from the fitted settings (``cache+knn`` uses the joint weights)."""
    sources = mode_sources(mode)
    lams = dict(zip(("cache", "knn"), settings.combined, strict=True)) if len(sources) == 2 else {}
    out = []
    if "cache" in sources:
        out.append(Component(cache_nb, lams.get("cache", settings.cache.lam), settings.cache.temperature))
    if "knn" in sources:
        out.append(Component(knn_nb, lams.get("knn", settings.knn.lam), settings.knn.temperature))
    return out


def check_settings(modes: list[str], settings: ReadoutSettings | None, datastore: NextTokenDatastore | None) -> None:
    """Raise ValueError naming what a requested mode lacks (fitted settings, a datastore)."""
    needs = {s for m in modes for s in mode_sources(m)}
    if needs and settings is None:
        raise ValueError(f"memory modes {modes} need fitted read-out settings: run `s3cmn-memory fit CKPT --text "
                         "HELDOUT` first")  # fmt: skip
    if "cache" in needs and settings.cache is None:
        raise ValueError("memory mode cache: the fitted settings hold no cache settings; refit")
    if "knn" in needs and (settings.knn is None or datastore is None):
        raise ValueError("memory mode knn needs a datastore and fitted knn settings: run `s3cmn-memory build CKPT "
                         "--text TRAIN` then `s3cmn-memory fit`")  # fmt: skip
    if "cache+knn" in modes and settings.combined is None:
        raise ValueError("memory mode cache+knn: the fitted settings hold no joint weights; refit with a datastore")


@dataclass
class ReadoutScores:
    """Per mode: NLL (N,) float64 of stream token i + 1 at index i, and seconds (LM pass + its read-outs)."""

    nll: dict[str, Tensor]
    seconds: dict[str, float]
    forwards: int = 0
    hit_rate: dict[str, float] = field(default_factory=dict)
    spike_stats: list | None = None


@torch.no_grad()
def score_readouts(model: torch.nn.Module, stream: Tensor, context_length: int, stride: int, batch_size: int,
                   modes: list[str], settings: ReadoutSettings | None = None,
                   datastore: NextTokenDatastore | None = None, progress: bool = False,
                   chunks: Iterable[Chunk] | None = None) -> ReadoutScores:
    """Score every token of ``stream`` once under each of ``modes`` (``READOUT_MODES``), in one LM pass.

    ``chunks``: the LM pass to read from instead of :func:`lm_chunks` (dynamic evaluation's adapting pass)."""
    from tqdm.auto import tqdm

    check_settings(modes, settings, datastore)
    needs = {s for m in modes for s in mode_sources(m)}
    n_tokens = stream.numel() - 1
    nll = {m: torch.full((n_tokens,), float("nan"), dtype=torch.float64) for m in modes}
    seconds = dict.fromkeys(modes, 0.0)
    hits = {"cache": 0, "knn": 0}
    cache = StreamCache(settings.cache.window, settings.cache.k) if "cache" in needs else None
    if "knn" in needs:
        datastore.set_nprobe(settings.knn.nprobe)
    bar = tqdm(total=n_tokens, desc="read-outs", unit="tok", disable=not progress, dynamic_ncols=True)
    forwards, spikes = 0, None
    for chunk in chunks if chunks is not None else lm_chunks(model, stream, context_length, stride, batch_size):
        forwards += 1
        if chunk.spike_stats:
            spikes = chunk.spike_stats if spikes is None else [a.merge(b) for a, b in zip(spikes, chunk.spike_stats,
                                                                                          strict=True)]
        cost = {"lm": chunk.seconds}
        nb: dict[str, Neighbours | None] = {"cache": None, "knn": None}
        if cache is not None:
            t0 = time.perf_counter()
            nb["cache"] = cache.read(chunk.hidden, chunk.pos, chunk.targets)
            cost["cache"] = time.perf_counter() - t0
        if "knn" in needs:
            t0 = time.perf_counter()
            nb["knn"] = datastore.search(chunk.hidden, settings.knn.k)
            cost["knn"] = time.perf_counter() - t0
        for source, neighbours in nb.items():
            if neighbours is not None:
                hits[source] += int(neighbours.hit.any(-1).sum())
        for m in modes:
            t0 = time.perf_counter()
            logp = mixture_target_log_probs(chunk.lm_log_probs, chunk.targets,
                                            components(m, settings, nb["cache"], nb["knn"]) if m != "off" else [])
            nll[m][chunk.pos] = -logp
            seconds[m] += time.perf_counter() - t0 + cost["lm"] + sum(cost[s] for s in mode_sources(m))
        bar.update(len(chunk.pos))
    bar.close()
    for m in modes:
        if bool(torch.isnan(nll[m]).any()):
            raise RuntimeError(f"read-out mode {m}: {int(torch.isnan(nll[m]).sum())} tokens were not scored")
    rates = {s: hits[s] / n_tokens for s in needs}
    return ReadoutScores(nll, seconds, forwards, rates, spikes)

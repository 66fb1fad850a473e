"""Building the datastore from a training text, and fitting the read-outs' settings on a held-out text.

Fitting (never on the scored text): one LM pass over the held-out stream collects log p_LM(target), the
``CACHE_K_MAX`` nearest cache entries of every position within the largest window (with their positions, so
any smaller window is a mask) and the ``KNN_K_MAX`` nearest datastore entries. Then a grid search maximises the
held-out log-likelihood: cache over window x k x temperature, kNN over k x temperature, each with the best
lambda on a 0.01 grid; then the two lambdas of cache+knn jointly on a 0.01 grid, the rest kept.
Temperatures are searched relative to the median distance to the nearest entry (2^-4 .. 2^4, 17 steps).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import Tensor

from s3cmn.nexttoken.datastore import NextTokenDatastore
from s3cmn.nexttoken.fitted import CacheSettings, KnnSettings, ReadoutSettings
from s3cmn.nexttoken.provenance import TextFingerprint, refuse_overlap, refuse_test_split, warn_unchecked
from s3cmn.nexttoken.readout import Neighbours, StreamCache, neighbour_weights
from s3cmn.nexttoken.stream import Chunk, lm_chunks

logger = logging.getLogger(__name__)

CACHE_WINDOWS = (128, 256, 512, 1024, 2048, 4096)
CACHE_KS = (8, 32, 128, 256)
KNN_KS = (8, 16, 32, 64, 128, 256, 512, 1024)  # every model chose 256 when the grid stopped there
CACHE_K_MAX, KNN_K_MAX = max(CACHE_KS), max(KNN_KS)
TEMPERATURE_FACTORS = tuple(2.0 ** (e / 2) for e in range(-8, 9))
LAMBDAS = torch.arange(0, 100, dtype=torch.float64) / 100  # 0.00 .. 0.99
S = TypeVar("S", CacheSettings, KnnSettings)


@torch.no_grad()
def build_datastore(model: torch.nn.Module, stream: Tensor, context_length: int, stride: int, batch_size: int = 8,
                    *, kind: str = "auto", pca_dim: int = 0, nprobe: int = 32, source: dict[str, Any] | None = None,
                    progress: bool = False, text: str | None = None) -> NextTokenDatastore:
    """Datastore of ``stream`` (N + 1,): one entry per scored position, key = final hidden state, value =
    the next token, position = the entry's stream position (the same windows as evaluation). ``text``: the text
    ``stream`` was tokenised from; its fingerprint is recorded (a test split is refused), without it a warning."""
    from tqdm.auto import tqdm

    fingerprint = _fingerprint(text, (source or {}).get("path"), "build", "build_datastore")

    keys, values, positions = [], [], []
    bar = tqdm(total=stream.numel() - 1, desc="datastore", unit="tok", disable=not progress, dynamic_ncols=True)
    start = time.perf_counter()
    for chunk in lm_chunks(model, stream, context_length, stride, batch_size, logits=False):
        keys.append(chunk.hidden)
        values.append(chunk.targets)
        positions.append(chunk.pos)
        bar.update(len(chunk.pos))
    bar.close()
    states = time.perf_counter() - start
    src = {**(source or {}), "tokens": int(stream.numel() - 1), "context_length": context_length, "stride": stride,
           "hidden_state_seconds": states}  # fmt: skip
    return NextTokenDatastore.build(torch.cat(keys).numpy(), torch.cat(values).numpy(), torch.cat(positions).numpy(),
                                    kind=kind, pca_dim=pca_dim, nprobe=nprobe, source=src,
                                    fingerprint=fingerprint)  # fmt: skip


def _fingerprint(text: str | None, name: str | None, role: str, what: str) -> TextFingerprint | None:
    """The fingerprint of the text a read-out is made from (a test split refused); None, warned once, without."""
    if text is None:
        warn_unchecked(what)
        return None
    refuse_test_split(name, text, role)
    return TextFingerprint.from_text(text)


@dataclass
class FitData:
    """What the grid search needs, per held-out position: ``lm`` (N,) log p_LM(target), ``targets`` (N,),
    ``pos`` (N,), ``cache`` / ``knn`` :class:`Neighbours` (N, CACHE_K_MAX / KNN_K_MAX), the cache's with entry
    positions."""

    lm: Tensor
    targets: Tensor
    pos: Tensor
    cache: Neighbours | None
    knn: Neighbours | None


@torch.no_grad()
def collect(model: torch.nn.Module, stream: Tensor, context_length: int, stride: int, batch_size: int,
            datastore: NextTokenDatastore | None, nprobe: int = 32) -> FitData:
    cache = StreamCache(max(CACHE_WINDOWS), CACHE_K_MAX)
    if datastore is not None:
        datastore.set_nprobe(nprobe)
    return collect_chunks(lm_chunks(model, stream, context_length, stride, batch_size), cache, datastore, KNN_K_MAX)


def collect_chunks(chunks: Iterable[Chunk], cache: StreamCache | None, datastore: NextTokenDatastore | None,
                   knn_k: int) -> FitData:
    """The :class:`FitData` of any LM pass: log p_LM(target) of each chunk and, when given, each position's
    cache neighbours and its ``knn_k`` datastore neighbours."""
    parts: dict[str, list[Any]] = {"lm": [], "targets": [], "pos": [], "cache": [], "knn": []}
    for chunk in chunks:
        parts["lm"].append(chunk.lm_log_probs)
        parts["targets"].append(chunk.targets)
        parts["pos"].append(chunk.pos)
        if cache is not None:
            parts["cache"].append(cache.read(chunk.hidden, chunk.pos, chunk.targets))
        if datastore is not None:
            parts["knn"].append(datastore.search(chunk.hidden, knn_k))

    def cat(nbs: list[Neighbours]) -> Neighbours | None:
        if not nbs:
            return None
        pos = torch.cat([n.positions for n in nbs]) if nbs[0].positions is not None else None
        return Neighbours(torch.cat([n.distances for n in nbs]), torch.cat([n.values for n in nbs]), pos)

    return FitData(torch.cat(parts["lm"]), torch.cat(parts["targets"]), torch.cat(parts["pos"]),
                   cat(parts["cache"]), cat(parts["knn"]))  # fmt: skip


def _kept(nb: Neighbours, pos: Tensor, window: int | None, k: int) -> Tensor:
    """(N, K) bool: the ``k`` nearest of the retrieved entries within ``window`` positions (lists are sorted by
    distance)."""
    keep = nb.hit
    if window is not None:
        keep = keep & (pos[:, None] - nb.positions <= window)
    rank = torch.cumsum(keep.long(), -1)  # 1-based rank among the kept entries
    return keep & (rank <= k)


def restrict_ref(nb: Neighbours, pos: Tensor, window: int | None, k: int) -> Neighbours:
    """:func:`restrict` at the full width K: the entries not kept are masked (distance inf, value -1) in place."""
    keep = _kept(nb, pos, window, k)
    return Neighbours(nb.distances.masked_fill(~keep, math.inf), nb.values.masked_fill(~keep, -1))


def restrict(nb: Neighbours, pos: Tensor, window: int | None, k: int) -> Neighbours:
    """The ``k`` nearest of the retrieved entries within ``window`` positions, in min(k, K) columns: each row's
    kept entries moved to its front in their order, the rest masked (distance inf, value -1). The same read-out
    as :func:`restrict_ref`; the grid search scores many small k, and each then costs k columns, not K."""
    keep = _kept(nb, pos, window, k)
    width = min(k, keep.shape[1])
    # a stable sort of "not kept" puts each row's kept columns first, in their (distance) order
    cols = torch.sort((~keep).to(torch.uint8), dim=-1, stable=True).indices[:, :width]  # (N, width)
    kept = keep.gather(1, cols)
    return Neighbours(nb.distances.gather(1, cols).masked_fill(~kept, math.inf),
                      nb.values.gather(1, cols).masked_fill(~kept, -1))  # fmt: skip


def nearest(compacted: Neighbours, k: int) -> Neighbours:
    """:func:`restrict` with ``k`` from the same rows restricted with every entry kept (k >= K): their kept
    entries are already first, in distance order, so the ``k`` nearest are the first ``k`` columns. The grid
    search restricts once per window, not once per (window, k)."""
    return Neighbours(compacted.distances[:, :k], compacted.values[:, :k])


def target_prob(nb: Neighbours, targets: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """p_mem(target) (N,) float64 and whether the row retrieved anything (N,)."""
    w = neighbour_weights(nb, temperature)
    return (w * (nb.values == targets[:, None])).sum(-1), nb.hit.any(-1)


def mixture_ll(lm: Tensor, probs: list[Tensor], hits: list[Tensor], lams: Tensor) -> Tensor:
    """Mean held-out log-likelihood for each row of ``lams`` (L, S) (one weight per source)."""
    lam = lams[:, :, None] * torch.stack(hits).double()[None]  # (L, S, N): weight given back without a hit
    lm_w = 1.0 - lam.sum(1)  # (L, N)
    p = lm_w * lm.exp()[None] + (lam * torch.stack(probs)[None]).sum(1)  # (L, N)
    return torch.log(p.clamp_min(1e-300)).mean(-1)  # (L,)


def best_lambda(lm: Tensor, prob: Tensor, hit: Tensor) -> tuple[float, float]:
    ll = mixture_ll(lm, [prob], [hit], LAMBDAS[:, None])
    i = int(ll.argmax())
    return float(LAMBDAS[i]), float(ll[i])


def _temperatures(nb: Neighbours) -> list[float]:
    first = nb.distances[:, 0]
    base = float(first[torch.isfinite(first)].median()) if bool(torch.isfinite(first).any()) else 1.0
    return [max(base, 1e-6) * f for f in TEMPERATURE_FACTORS]


def grid_search(data: FitData, neighbours: Neighbours, windows: Sequence[int | None], ks: Sequence[int],
                make: Callable[[float, float, int, int | None], S]) -> tuple[S, float]:  # fmt: skip
    """The settings of the best held-out log-likelihood over window x k x temperature (each with its best
    lambda); ``make(lam, temperature, k, window)`` builds them. The first of equal scores wins."""
    best: tuple[float, S] | None = None
    temps = _temperatures(neighbours)
    for window in windows:
        compacted = restrict(neighbours, data.pos, window, neighbours.distances.shape[1])  # one sort a window
        for k in ks:
            nb = nearest(compacted, k)
            for t in temps:
                lam, ll = best_lambda(data.lm, *target_prob(nb, data.targets, t))
                if best is None or ll > best[0]:
                    best = (ll, make(lam, t, k, window))
    return best[1], best[0]


def fit_cache(data: FitData) -> tuple[CacheSettings, float]:
    def make(lam: float, t: float, k: int, window: int | None) -> CacheSettings:
        return CacheSettings(lam=lam, temperature=t, k=k, window=window)

    return grid_search(data, data.cache, CACHE_WINDOWS, CACHE_KS, make)


def fit_knn(data: FitData, nprobe: int) -> tuple[KnnSettings, float]:
    def make(lam: float, t: float, k: int, window: int | None) -> KnnSettings:
        return KnnSettings(lam=lam, temperature=t, k=k, nprobe=nprobe)

    return grid_search(data, data.knn, (None,), KNN_KS, make)  # the datastore has no window


def fit_combined(data: FitData, cache: CacheSettings, knn: KnnSettings) -> tuple[tuple[float, float], float]:
    pc, hc = target_prob(restrict(data.cache, data.pos, cache.window, cache.k), data.targets, cache.temperature)
    pk, hk = target_prob(restrict(data.knn, data.pos, None, knn.k), data.targets, knn.temperature)
    grid = torch.cartesian_prod(LAMBDAS, LAMBDAS)
    grid = grid[grid.sum(-1) < 1.0]  # (L, 2)
    ll = torch.cat([mixture_ll(data.lm, [pc, pk], [hc, hk], g) for g in grid.split(256)])
    i = int(ll.argmax())
    return (float(grid[i, 0]), float(grid[i, 1])), float(ll[i])


def fit_readouts(model: torch.nn.Module, stream: Tensor, context_length: int, stride: int, batch_size: int = 8,
                 *, datastore: NextTokenDatastore | None = None, nprobe: int = 32,
                 fitted_on: dict[str, Any] | None = None, text: str | None = None) -> ReadoutSettings:
    """Fit cache (and, with a datastore, kNN and cache+knn) settings on the held-out ``stream`` (N + 1,).
    ``text``: the text ``stream`` was tokenised from; its fingerprint is recorded (a test split is refused),
    without it a warning."""
    fingerprint = _fingerprint(text, (fitted_on or {}).get("path"), "fit", "fit_readouts")
    if text is not None and datastore is not None and datastore.fingerprint is not None:
        refuse_overlap(text, datastore.fingerprint, (fitted_on or {}).get("path", "the fit text"),
                       f"the text the datastore was built from ({datastore.source.get('path', '?')})",
                       "fit the read-outs on held-out text")  # fmt: skip
    start = time.perf_counter()
    data = collect(model, stream, context_length, stride, batch_size, datastore, nprobe)
    lm_nll = float(-data.lm.mean())
    cache, cache_ll = fit_cache(data)
    fit: dict[str, Any] = {"tokens": int(data.lm.numel()), "nll_per_token": {"off": lm_nll, "cache": -cache_ll}}
    knn = combined = None
    if datastore is not None:
        knn, knn_ll = fit_knn(data, nprobe)
        combined, both_ll = fit_combined(data, cache, knn)
        fit["nll_per_token"].update({"knn": -knn_ll, "cache+knn": -both_ll})
        fit["datastore"] = {"entries": len(datastore), "description": datastore.description,
                            "source": datastore.source}  # fmt: skip
    fit["seconds"] = time.perf_counter() - start
    fit["grid"] = {"cache_windows": list(CACHE_WINDOWS), "cache_k": list(CACHE_KS), "knn_k": list(KNN_KS),
                   "temperature_factors": list(TEMPERATURE_FACTORS), "lambda_step": 0.01,
                   "k_max": {"cache": CACHE_K_MAX, "knn": KNN_K_MAX}}
    logger.info("fitted read-outs on %d tokens: held-out NLL/token %s", data.lm.numel(),
                {m: round(v, 4) for m, v in fit["nll_per_token"].items()})  # fmt: skip
    return ReadoutSettings(cache=cache, knn=knn, combined=combined, fitted_on=dict(fitted_on or {}),
                           context_length=context_length, stride=stride, fit=fit, fingerprint=fingerprint)  # fmt: skip

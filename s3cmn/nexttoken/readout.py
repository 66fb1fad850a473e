"""Next-token read-outs: the memory's distribution over the next token and its mixture with the LM.

For a query q_t (the model's final hidden state at position t) and its K nearest entries (k_i, v_i), v_i the
id of the token that followed k_i (Grave et al. 2017, continuous cache; Khandelwal et al. 2020, kNN-LM):

    w_i       = softmax_i(-d(q_t, k_i) / T)           d: squared Euclidean distance; misses get w_i = 0
    p_mem(w)  = sum_i w_i [v_i = w]
    p(w)      = (1 - sum_s lambda_s) p_LM(w) + sum_s lambda_s p_mem,s(w)      s: the memory sources used

computed in log space (logsumexp), so p is normalised to float precision. A source with no hit for a query
(an empty cache at the first token) gives its weight lambda_s back to the LM for that query.

``mixture_log_probs`` gives the whole (N, V) distribution (generation, tests); ``mixture_target_log_probs``
only log p(target) (scoring, fitting), without materialising (N, V). ``*_ref`` are the readable twins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Neighbours:
    """K retrieved entries per query: ``distances`` (N, K) float32 (+inf = miss), ``values`` (N, K) int64
    token ids (-1 = miss); ``positions`` (N, K) int64, where known, the stream position of each entry."""

    distances: Tensor
    values: Tensor
    positions: Tensor | None = None

    def __post_init__(self) -> None:
        if self.distances.shape != self.values.shape or self.distances.dim() != 2:
            raise ValueError(f"Neighbours: distances {tuple(self.distances.shape)} and values "
                             f"{tuple(self.values.shape)} must both be (N, K)")  # fmt: skip

    @property
    def hit(self) -> Tensor:
        return (self.values >= 0) & torch.isfinite(self.distances)  # (N, K)


@dataclass
class Component:
    """One memory source in the mixture: its neighbours, weight ``lam`` in [0, 1) and temperature ``T`` > 0."""

    neighbours: Neighbours
    lam: float
    temperature: float


def neighbour_weights(nb: Neighbours, temperature: float) -> Tensor:
    """softmax(-d / T) over the hits of each row (N, K) float64; rows without a hit are all 0."""
    hit = nb.hit
    logits = (-nb.distances.double() / temperature).masked_fill(~hit, -math.inf)  # (N, K)
    top = logits.max(-1, keepdim=True).values  # (N, 1)
    safe = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    e = torch.exp(logits - safe)  # (N, K), 0 on misses
    total = e.sum(-1, keepdim=True)
    return torch.where(total > 0, e / total.clamp_min(1e-300), torch.zeros_like(e))


def _log_weights(components: list[Component], any_hit: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
    """log of the LM's weight (N,) and of each source's weight (N,), sources without a hit given back."""
    lams = [torch.where(h, torch.full_like(h, c.lam, dtype=torch.float64), torch.zeros_like(h, dtype=torch.float64))
            for c, h in zip(components, any_hit, strict=True)]  # fmt: skip
    lm = 1.0 - torch.stack(lams).sum(0) if lams else None
    return torch.log(lm), [torch.log(x) for x in lams]


def check_lambdas(components: list[Component]) -> None:
    total = sum(c.lam for c in components)
    for c in components:
        if not 0.0 <= c.lam < 1.0 or not c.temperature > 0:
            raise ValueError(f"memory read-out: lambda must be in [0, 1) and temperature > 0, got lambda={c.lam}, "
                             f"temperature={c.temperature}")  # fmt: skip
    if total >= 1.0:
        raise ValueError(f"memory read-out: the lambdas sum to {total} >= 1: the LM would get no weight")


def mixture_target_log_probs(lm_target_log_probs: Tensor, targets: Tensor, components: list[Component]) -> Tensor:
    """log p(target) (N,) float64 of the mixture, from the LM's log p(target) (N,) and each source's neighbours."""
    check_lambdas(components)
    lm = lm_target_log_probs.double()
    if not components:
        return lm
    terms, any_hit = [], []
    for c in components:
        w = neighbour_weights(c.neighbours, c.temperature)  # (N, K)
        match = c.neighbours.values == targets[:, None]  # (N, K)
        terms.append(torch.log((w * match).sum(-1)))  # (N,) log p_mem(target), -inf if never retrieved
        any_hit.append(c.neighbours.hit.any(-1))
    log_lm, log_lams = _log_weights(components, any_hit)
    stacked = torch.stack([log_lm + lm] + [a + t for a, t in zip(log_lams, terms, strict=True)])  # (S+1, N)
    return torch.logsumexp(stacked, dim=0)


def mixture_log_probs(lm_log_probs: Tensor, components: list[Component]) -> Tensor:
    """The mixture's log p over the vocabulary, (N, V) float64, from the LM's log-probabilities (N, V)."""
    check_lambdas(components)
    lm = lm_log_probs.double()
    if not components:
        return lm
    terms, any_hit = [], []
    for c in components:
        w = neighbour_weights(c.neighbours, c.temperature)  # (N, K)
        p = torch.zeros_like(lm)  # (N, V)
        p.scatter_add_(1, c.neighbours.values.clamp_min(0), w)  # misses carry weight 0
        terms.append(torch.log(p))
        any_hit.append(c.neighbours.hit.any(-1))
    log_lm, log_lams = _log_weights(components, any_hit)
    stacked = torch.stack([log_lm[:, None] + lm] + [a[:, None] + t for a, t in zip(log_lams, terms, strict=True)])
    return torch.logsumexp(stacked, dim=0)  # (N, V)


def mixture_log_probs_ref(lm_log_probs: Tensor, components: list[Component]) -> Tensor:
    """Readable twin of :func:`mixture_log_probs`: one query at a time, in probability space (float64)."""
    n, v = lm_log_probs.shape
    out = torch.empty(n, v, dtype=torch.float64)
    for row in range(n):
        p_lm = lm_log_probs[row].double().exp()
        lm_weight, p_mem = 1.0, torch.zeros(v, dtype=torch.float64)
        for c in components:
            hits = [(float(d), int(t)) for d, t in zip(c.neighbours.distances[row], c.neighbours.values[row],
                                                        strict=True) if t >= 0 and math.isfinite(d)]  # fmt: skip
            if not hits:
                continue  # nothing retrieved: this source's weight stays with the LM
            best = min(d for d, _ in hits)
            scores = [math.exp(-(d - best) / c.temperature) for d, _ in hits]
            for (_, token), s in zip(hits, scores, strict=True):
                p_mem[token] += c.lam * s / sum(scores)
            lm_weight -= c.lam
        out[row] = torch.log(lm_weight * p_lm + p_mem)
    return out


# --------------------------------------------------------------------------------------------------
# the continuous cache: exact nearest neighbours among the recent positions of the stream itself


def squared_distances(q: Tensor, k: Tensor) -> Tensor:
    """||q_i - k_j||^2 (N, M) float32 through one matmul: |q|^2 + |k|^2 - 2 q.k, clamped at 0."""
    q, k = q.float(), k.float()
    d = (q * q).sum(-1, keepdim=True) + (k * k).sum(-1)[None, :] - 2.0 * (q @ k.T)  # (N, M)
    return d.clamp_min_(0.0)


def cache_neighbours(queries: Tensor, query_pos: Tensor, keys: Tensor, key_pos: Tensor, key_values: Tensor,
                     window: int, k: int) -> Neighbours:
    """The ``k`` nearest cache entries of each query among those of positions in [p - window, p - 1].

    queries (N, D) at stream positions query_pos (N,); entries keys (M, D) at key_pos (M,) with next-token ids
    key_values (M,). An entry of position j holds the token j + 1, which a query at p > j has already read, so
    no query ever sees its own next token or a later one. Misses (fewer than k entries in range): +inf / -1.
    """
    if keys.shape[0] == 0:
        n = queries.shape[0]
        return Neighbours(torch.full((n, k), math.inf), torch.full((n, k), -1, dtype=torch.long))
    d = squared_distances(queries, keys)  # (N, M)
    age = query_pos[:, None] - key_pos[None, :]  # (N, M)
    d = d.masked_fill((age < 1) | (age > window), math.inf)
    kk = min(k, keys.shape[0])
    dist, idx = torch.topk(d, kk, dim=-1, largest=False)  # (N, kk), ascending
    found = torch.isfinite(dist)
    values = torch.where(found, key_values[idx], torch.full_like(idx, -1))
    positions = torch.where(found, key_pos[idx], torch.full_like(idx, -1))
    if kk < k:
        pad = torch.full((dist.shape[0], k - kk), -1, dtype=torch.long)
        dist = torch.cat([dist, torch.full(pad.shape, math.inf)], -1)
        values, positions = torch.cat([values, pad], -1), torch.cat([positions, pad], -1)
    return Neighbours(dist, values, positions)


def cache_neighbours_ref(queries: Tensor, query_pos: Tensor, keys: Tensor, key_pos: Tensor, key_values: Tensor,
                         window: int, k: int) -> Neighbours:
    """Readable twin of :func:`cache_neighbours`: per query, sort the allowed entries by exact distance."""
    n = queries.shape[0]
    dist = torch.full((n, k), math.inf)
    values = torch.full((n, k), -1, dtype=torch.long)
    for i in range(n):
        p = int(query_pos[i])
        allowed = [j for j in range(keys.shape[0]) if 1 <= p - int(key_pos[j]) <= window]
        scored = sorted((float(((queries[i].double() - keys[j].double()) ** 2).sum()), j) for j in allowed)
        for r, (d, j) in enumerate(scored[:k]):
            dist[i, r], values[i, r] = d, key_values[j]
    return Neighbours(dist, values)


class StreamCache:
    """The continuous cache of one stream: the last ``window`` (hidden state, next token) pairs, fed in order.

    ``read(h, pos, next_ids)`` (scoring): the neighbours of the positions ``pos`` (n,) (consecutive, after
    everything read so far) among the earlier cached positions and the earlier positions of this same chunk;
    then the chunk's own entries are kept (their next tokens ``next_ids`` are only read by later positions).
    ``neighbours`` + ``append`` (generation): read with the history only, then add the chosen token.
    """

    def __init__(self, window: int, k: int) -> None:
        if window < 1 or k < 1:
            raise ValueError(f"StreamCache: window and k must be >= 1, got window={window}, k={k}")
        self.window, self.k = window, k
        self.keys = torch.zeros(0, 0)
        self.pos = torch.zeros(0, dtype=torch.long)
        self.values = torch.zeros(0, dtype=torch.long)

    def read(self, h: Tensor, pos: Tensor, next_ids: Tensor) -> Neighbours:
        h = h.detach().float()
        keys = torch.cat([self.keys.to(h.device), h]) if self.keys.numel() else h  # (M + n, D)
        key_pos = torch.cat([self.pos.to(pos.device), pos])
        key_values = torch.cat([self.values.to(next_ids.device), next_ids.long()])
        nb = cache_neighbours(h, pos, keys, key_pos, key_values, self.window, self.k)
        self._keep(keys, key_pos, key_values, int(pos.max()))
        return nb

    def neighbours(self, h: Tensor, pos: Tensor) -> Neighbours:
        keys = self.keys.to(h.device) if self.keys.numel() else h.new_zeros(0, h.shape[-1])
        return cache_neighbours(h.detach().float(), pos, keys, self.pos.to(pos.device),
                                self.values.to(pos.device), self.window, self.k)  # fmt: skip

    def append(self, h: Tensor, pos: Tensor, next_ids: Tensor) -> None:
        h = h.detach().float()
        keys = torch.cat([self.keys.to(h.device), h]) if self.keys.numel() else h
        self._keep(keys, torch.cat([self.pos.to(pos.device), pos]),
                   torch.cat([self.values.to(next_ids.device), next_ids.long()]), int(pos.max()))  # fmt: skip

    def _keep(self, keys: Tensor, key_pos: Tensor, key_values: Tensor, last: int) -> None:
        keep = key_pos >= last - self.window  # what a later position (> last) may still read
        self.keys, self.pos, self.values = keys[keep], key_pos[keep], key_values[keep]

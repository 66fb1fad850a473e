"""MemoryReader: attention over the top-k entries of a FaissMemory, gated into the residual stream; and
select_write, which picks the hidden states a segment writes after its forward pass.

Read, for every position (one FAISS search for all B*T queries):

    q   = normalise(PCA(W_q h - m + mu))            PCA: the memory's fixed linear map (no gradient into it)
    a_i = softmax_i(q . k_i / tau) over the hits    misses (farther than max_retrieval_distance) get a_i = 0;
                                                    a position with no hit reads 0
    r   = W_o sum_i a_i v_i                         v_i: stored values (float32 copies, never trained)
    g   = sigmoid(W_g [h; r])
    delta = g * r                                   returned; the block adds it to the residual stream

With ``memory_query_centering``, m is a running mean of the queries W_q h (an exponential average over the
training batches, updated after each read, fixed in evaluation: no position's query depends on a later token
of its batch) and mu the PCA's mean (the keys' centre), so the queries are centred where the keys are;
otherwise m = mu = 0. Without it the queries share one large common direction (mean cosine to the mean query
0.86 on a tiny checkpoint), the ranking follows each key's alignment with that direction, and 90% of the
reads' nearest entries were one entry (scripts/reader_probe.py, results/memory/reader-probe).

tau = exp(log_tau) is learned. Gradients reach W_q (through q . k_i), log_tau, W_o and W_g, never the entries.
Causality: the memory only holds what earlier segments wrote (FaissMemory.write is called after a forward), so
no position can see a later token of its own segment.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from s3cmn.memory.records import PROVENANCE_WINDOW, Provenance

if TYPE_CHECKING:
    from s3cmn.memory.store import FaissMemory
    from s3cmn.model_config import S3CMNConfig


@dataclass
class MemoryReadStats:
    """What one read did: hit_rate = hit slots / (B*T*k); mean_similarity = mean cosine(q, k) over hits;
    gate_mean = mean of g; latency_ms = the FAISS search time; searched = False if nothing was searchable."""

    hit_rate: float = 0.0
    mean_similarity: float = 0.0
    gate_mean: float = 0.0
    latency_ms: float = 0.0
    entries: int = 0
    searched: bool = False


def memory_attend(q: Tensor, keys: Tensor, values: Tensor, hit: Tensor, log_tau: Tensor) -> tuple[Tensor, Tensor]:
    """Batched masked attention over retrieved entries.

    q (N, d), keys (N, K, d), values (N, K, D), hit (N, K) bool -> out (N, D), attn (N, K) with
    attn = softmax(q . k / exp(log_tau)) over hits, 0 on misses, and rows without any hit all 0 (out = 0).
    """
    logits = torch.einsum("nd,nkd->nk", q, keys) / log_tau.exp()  # (N, K)
    # A finite fill (not -inf) keeps all-miss rows NaN-free: they softmax to uniform; the mask zeroes them.
    logits = logits.masked_fill(~hit, torch.finfo(logits.dtype).min)
    attn = torch.softmax(logits, dim=-1) * hit  # (N, K)
    return torch.einsum("nk,nkd->nd", attn, values), attn  # (N, D), (N, K)


def memory_attend_ref(q: Tensor, keys: Tensor, values: Tensor, hit: Tensor, log_tau: Tensor) -> tuple[Tensor, Tensor]:
    """Readable twin of :func:`memory_attend`: one query at a time, softmax over its hits only."""
    n, k = hit.shape
    outs, attns = [], []
    for i in range(n):
        idx = hit[i].nonzero().squeeze(-1)  # the hit slots of query i
        attn_i = q.new_zeros(k)
        if idx.numel() == 0:
            outs.append(q.new_zeros(values.shape[-1]))
        else:
            a = torch.softmax(keys[i, idx] @ q[i] / log_tau.exp(), dim=-1)  # (hits,)
            attn_i = attn_i.index_put((idx,), a)
            outs.append(a @ values[i, idx])
        attns.append(attn_i)
    return torch.stack(outs), torch.stack(attns)


QUERY_MEAN_MOMENTUM = 0.05  # weight of each training batch in the running query mean (the first sets it)


class MemoryReader(nn.Module):
    """The memory read of one block: ``forward(h, memory) -> (delta, stats)`` (see the module docstring)."""

    def __init__(self, config: S3CMNConfig, layer_idx: int) -> None:
        super().__init__()
        d = config.hidden_dim
        self.layer_idx = layer_idx
        self.q_proj = nn.Linear(d, d, bias=False)  # W_q
        self.o_proj = nn.Linear(d, d, bias=False)  # W_o; no bias so that "no hit" reads exactly 0
        self.gate = nn.Linear(2 * d, d)  # W_g
        self.log_tau = nn.Parameter(torch.tensor(math.log(0.1)))
        self.log_tau._no_weight_decay = True
        self.center_queries = bool(getattr(config, "memory_query_centering", False))
        if self.center_queries:  # the running mean of W_q h and how many batches it has seen
            self.register_buffer("query_mean", torch.zeros(d))
            self.register_buffer("query_batches", torch.zeros((), dtype=torch.long))
        for lin in (self.q_proj, self.o_proj, self.gate):
            nn.init.normal_(lin.weight, std=config.initializer_range)
        nn.init.zeros_(self.gate.bias)

    def forward(
        self, h: Tensor, memory: FaissMemory | None, record_usage: bool | None = None
    ) -> tuple[Tensor, MemoryReadStats]:
        """h (B, T, D) -> delta (B, T, D) to add to the residual stream, and the read statistics.

        With ``memory`` None or not yet searchable, delta is zeros. ``record_usage`` credits the retrieved
        entries with their attention weights, which steers pruning; default: only in training mode (so
        evaluation and generation leave the memory as it is), or while ``memory.count_reads`` is set (an
        evaluation counting how its reads spread, on a memory it restores afterwards). Turn it off for
        re-computation, e.g. activation checkpointing.
        """
        B, T, D = h.shape
        if memory is None or not memory.searchable:
            return torch.zeros_like(h), MemoryReadStats(entries=0 if memory is None else memory.num_entries)
        record_usage = (self.training or memory.count_reads) if record_usage is None else record_usage
        # 1. query, centred (memory_query_centering), compressed by the memory's PCA (a constant map) and
        #    normalised like the keys
        raw = self.q_proj(h).float().reshape(B * T, D)  # (BT, D)
        q = memory.encode_queries(self.centred(raw, memory))  # (BT, d)
        # 2. one FAISS search for the whole batch
        res = memory.search(q.detach(), encoded=True)  # (BT, K) ids/hit, (BT, K, d) keys, (BT, K, D) values
        keys, values, hit = (t.to(h.device) for t in (res.keys, res.values, res.hit))
        # 3. attention over the hits
        out, attn = memory_attend(q, keys, values, hit, self.log_tau)  # (BT, D), (BT, K)
        # 4. output projection and gate
        read = self.o_proj(out.to(h.dtype)).view(B, T, D)  # (B, T, D)
        g = torch.sigmoid(self.gate(torch.cat([h, read], dim=-1)))  # (B, T, D)
        delta = g * read  # (B, T, D)
        if record_usage:
            memory.record_usage(res.ids, attn.detach())
        if self.center_queries and self.training:  # after the read: this batch's queries used the earlier mean
            self._track_query_mean(raw.detach())
        with torch.no_grad():
            num_hits = int(hit.sum())
            similarity = torch.einsum("nd,nkd->nk", q, keys)[hit].sum().item() / num_hits if num_hits else 0.0
            stats = MemoryReadStats(
                hit_rate=num_hits / hit.numel(),
                mean_similarity=similarity,
                gate_mean=g.mean().item(),
                latency_ms=memory.last_latency_ms,
                entries=memory.num_entries,
                searched=True,
            )
        return delta, stats

    def centred(self, raw: Tensor, memory: FaissMemory) -> Tensor:
        """Queries W_q h (N, D) as the read searches with them, before compression: W_q h - m + mu (module
        docstring) with ``memory_query_centering``, else unchanged."""
        return raw - self.query_mean + memory.key_centre(raw) if self.center_queries else raw

    @torch.no_grad()
    def _track_query_mean(self, raw: Tensor) -> None:
        """Fold a training batch's queries (N, D) into the running mean (the first batch sets it)."""
        momentum = 1.0 if int(self.query_batches) == 0 else QUERY_MEAN_MOMENTUM
        self.query_mean.lerp_(raw.mean(0).to(self.query_mean.dtype), momentum)
        self.query_batches += 1


def select_write(
    h: Tensor, input_ids: Tensor, stride: int, segment_ids: Tensor | None = None, position_offset: int = 0
) -> tuple[Tensor, Provenance]:
    """What a segment writes after its forward: every ``stride``-th position of each sequence.

    h (B, T, D), input_ids (B, T) -> values (M, D) float32 detached, M = B * floor(T / stride), at positions
    stride-1, 2*stride-1, ... of row 0, then of row 1, ...; provenance: the PROVENANCE_WINDOW token ids
    ending at each position (left-padded with -1), positions (+ ``position_offset``) and ``segment_ids``
    (B,) (default: the row index).
    """
    B, T, D = h.shape
    if stride < 1:
        raise ValueError(f"select_write: stride must be >= 1, got {stride}")
    pos = torch.arange(stride - 1, max(T, stride - 1), stride, device=h.device)  # (P,), empty if T < stride
    P = pos.numel()
    values = h[:, pos].detach().float().reshape(B * P, D)  # (M, D)
    W = PROVENANCE_WINDOW
    windows = F.pad(input_ids, (W - 1, 0), value=-1).unfold(1, W, 1)  # (B, T, W): ids[t-W+1 .. t]
    tokens = windows[:, pos.to(input_ids.device)].reshape(B * P, W).long()  # (M, W)
    positions = (pos.to(input_ids.device) + position_offset).repeat(B).long()  # (M,)
    if segment_ids is None:
        segment_ids = torch.arange(B, device=input_ids.device)
    segments = segment_ids.to(input_ids.device).long().repeat_interleave(P)  # (M,)
    return values, Provenance(tokens, positions, segments)

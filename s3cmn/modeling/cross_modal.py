"""Causal cross-modal attention between two streams of the same tokens (the liquid path and the spiking path,
or the liquid path and Mamba), and the causal attention primitive shared with the reservoir block.

For streams a, b (B, T, D), H = ``config.cross_attention_heads`` heads of width hd = D / H::

    out_a[t] = W_o · softmax(q_a[t] · k_b[s]ᵀ / √hd, over s <= t) · v_b[s]          a queries b
    out_b[t] = W_o' · softmax(q_b[t] · k_a[s]ᵀ / √hd, over s <= t) · v_a[s]         b queries a ("bidirectional")

Causal means position t only attends to positions <= t of the other stream. ``mode``:

- ``single``: out_a only (out_b is None): the liquid path queries the spiking path.
- ``bidirectional``: both directions, separate projections.
- ``multiscale``: out_a only, head h sees a causal window of the last ``4^(h+1)`` positions (4, 16, 64, 256, ...):
  several temporal scales at once.

Two streams in, two out: this is not a one-stream :class:`~s3cmn.modeling.mixer.Mixer` but a part of the
integration mixer. It follows the contract otherwise: ``forward``/``step`` return a typed
:class:`CrossModalOutput` (``a``, ``b``, ``state``) and ``init_state(batch, like)`` gives the empty cache.

``step`` keeps the keys and values of the attended stream(s) in its state (``{"k_b", "v_b"[, "k_a", "v_a"]}``,
(B, H, t, hd), batch-first). For ``single`` and ``bidirectional`` this cache **grows with the context** (one
entry per token: decoding cost is linear in the tokens so far, like any attention); for ``multiscale`` it is
trimmed to the largest window − 1, so it is bounded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from s3cmn.model_config import S3CMNConfig
from s3cmn.modeling.mixer import MixerState

__all__ = [
    "CrossModalAttention", "CrossModalOutput", "causal_attention", "causal_attention_ref", "merge_heads",
    "multiscale_windows", "split_heads",
]

WINDOW_BASE = 4  # multiscale head h sees the last WINDOW_BASE ** (h + 1) positions


def multiscale_windows(num_heads: int) -> list[int]:
    """Causal window (positions, including the current one) of each head of the multi-scale variant."""
    return [WINDOW_BASE ** (h + 1) for h in range(num_heads)]


def _causal_mask(Tq: int, Tk: int, window: Sequence[int] | int, device: torch.device) -> Tensor:
    """Boolean mask (H or 1, Tq, Tk), True = may attend. The queries are the last Tq of the Tk key positions."""
    i = torch.arange(Tq, device=device)[:, None] + (Tk - Tq)  # absolute position of each query
    j = torch.arange(Tk, device=device)[None, :]
    mask = (j <= i)[None]  # (1, Tq, Tk)
    w = torch.as_tensor(window, device=device).reshape(-1, 1, 1)  # (H or 1, 1, 1); 0 = unbounded
    return mask & ((w == 0) | (j > i - w))


def causal_attention_ref(q: Tensor, k: Tensor, v: Tensor, window: Sequence[int] | int = 0) -> Tensor:
    """softmax(q kᵀ / √hd + causal mask) v written out: q (B, H, Tq, hd), k, v (B, H, Tk, hd), Tk >= Tq.

    The queries are the last Tq positions of the key sequence (the first Tk − Tq keys are a cache of the
    past). ``window`` (int or one per head, 0 = unbounded): a query at position i sees keys j with
    i − window < j <= i. Returns (B, H, Tq, hd).
    """
    Tq, Tk = q.shape[2], k.shape[2]
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, Tq, Tk)
    scores = scores.masked_fill(~_causal_mask(Tq, Tk, window, q.device), float("-inf"))
    return torch.softmax(scores, dim=-1) @ v  # (B, H, Tq, hd)


def causal_attention(
    q: Tensor, k: Tensor, v: Tensor, window: Sequence[int] | int = 0, dropout_p: float = 0.0
) -> Tensor:
    """Same contract as :func:`causal_attention_ref`, through ``F.scaled_dot_product_attention`` (the fast path),
    plus attention-weight dropout ``dropout_p``."""
    Tq, Tk = q.shape[2], k.shape[2]
    unbounded = isinstance(window, int) and window == 0
    if unbounded and Tq == Tk:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
    if unbounded and Tq == 1:  # one new token sees the whole cache
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
    mask = _causal_mask(Tq, Tk, window, q.device)  # (H or 1, Tq, Tk)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)


def split_heads(x: Tensor, H: int) -> Tensor:
    """(B, T, D) -> (B, H, T, D/H)."""
    B, T, D = x.shape
    return x.view(B, T, H, D // H).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """(B, H, T, hd) -> (B, T, H·hd)."""
    B, H, T, hd = x.shape
    return x.transpose(1, 2).reshape(B, T, H * hd)


@dataclass
class CrossModalOutput:
    """``a``: stream a's attention over b (B, T, D) or (B, D); ``b``: b's over a (bidirectional, else None);
    ``state``: the key/value cache."""

    a: Tensor
    b: Tensor | None
    state: MixerState


class _Direction(nn.Module):
    """One direction of cross attention: queries from one stream, keys/values from the other."""

    def __init__(self, D: int) -> None:
        super().__init__()
        self.q_proj = nn.Linear(D, D)
        self.kv_proj = nn.Linear(D, 2 * D)
        self.out_proj = nn.Linear(D, D)


class CrossModalAttention(nn.Module):
    """Causal multi-head attention of stream a over stream b (and b over a); module docstring."""

    def __init__(
        self, config: S3CMNConfig, layer_idx: int, mode: Literal["single", "bidirectional", "multiscale"] | None = None
    ) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.mode = config.cross_modal_mode if mode is None else mode
        D, H = config.hidden_dim, config.cross_attention_heads  # D % H == 0: checked by the config
        self.num_heads = H
        self.dropout_p = config.attention_dropout
        self.windows: list[int] | int = multiscale_windows(H) if self.mode == "multiscale" else 0
        self.a_from_b = _Direction(D)
        self.b_from_a = _Direction(D) if self.mode == "bidirectional" else None

    @property
    def max_cache(self) -> int | None:
        """Past positions the step cache keeps (None = unbounded, it grows with the context)."""
        return max(self.windows) - 1 if isinstance(self.windows, list) else None

    def init_state(self, batch: int, like: Tensor) -> MixerState:
        """The empty cache: no key or value seen yet."""
        return {}

    def _attend(
        self, proj: _Direction, queries: Tensor, source: Tensor, state: MixerState | None, tag: str
    ) -> tuple[Tensor, MixerState]:
        """queries, source (B, T, D) -> (out (B, T, D), {"k_<tag>", "v_<tag>"}): queries attend to [cache, source]."""
        H = self.num_heads
        q = split_heads(proj.q_proj(queries), H)  # (B, H, T, hd)
        k, v = (split_heads(t, H) for t in proj.kv_proj(source).chunk(2, dim=-1))  # (B, H, T, hd) each
        if state is not None and f"k_{tag}" in state:
            k = torch.cat([state[f"k_{tag}"], k], dim=2)  # (B, H, t+T, hd)
            v = torch.cat([state[f"v_{tag}"], v], dim=2)
        p = self.dropout_p if self.training else 0.0
        out = proj.out_proj(merge_heads(causal_attention(q, k, v, self.windows, p)))  # (B, T, D)
        keep = self.max_cache
        if keep is not None:
            k, v = k[:, :, max(0, k.shape[2] - keep) :], v[:, :, max(0, v.shape[2] - keep) :]
        return out, {f"k_{tag}": k, f"v_{tag}": v}

    def forward(self, a: Tensor, b: Tensor, state: MixerState | None = None) -> CrossModalOutput:
        """a, b (B, T, D) -> out_a (B, T, D), out_b (B, T, D) or None, state; continues from ``state``."""
        out_a, new_state = self._attend(self.a_from_b, a, b, state, "b")
        out_b = None
        if self.b_from_a is not None:
            out_b, sb = self._attend(self.b_from_a, b, a, state, "a")
            new_state.update(sb)
        return CrossModalOutput(out_a, out_b, new_state)

    def step(self, a: Tensor, b: Tensor, state: MixerState | None) -> CrossModalOutput:
        """a, b (B, D) -> out_a (B, D), out_b (B, D) or None, state: one token, attending to the cache."""
        out = self.forward(a[:, None], b[:, None], state)
        return CrossModalOutput(out.a[:, 0], None if out.b is None else out.b[:, 0], out.state)

    def extra_repr(self) -> str:
        return f"mode={self.mode}, heads={self.num_heads}, windows={self.windows}"

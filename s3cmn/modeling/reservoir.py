"""The LiquidLM block: causal multi-head attention → time-aware reservoir → MLP, each pre-norm + residual.

The time-aware reservoir (an echo-state network with a trained read-out, Jaeger 2001), for x (B, T, D) and
R = ``config.reservoir_size`` neurons, at absolute position p = p0 + t::

    u[t] = W_in x[t] + b                                       (B, R) frozen random input weights
    h[t] = (1 − a) ⊙ h[t-1] + a ⊙ tanh(u[t] + W h[t-1])         leaky-tanh recurrence, frozen sparse W
    z[t] = h[t] + Σ_k A_k · sin(ω_k p + φ_k)                   K = reservoir_num_ripples time "ripples"
    y[t] = dropout(W_out z[t] + b_out)                         (B, D) trained read-out

- W (R, R): a fraction ``reservoir_sparsity`` of its entries is zero, the rest standard normal; it is scaled
  once at construction so that its spectral radius (largest |eigenvalue|, ``torch.linalg.eigvals`` of the
  dense matrix) equals ``reservoir_spectral_radius``. W, W_in, b and the leak rates a (per neuron,
  log-uniform in [0.1, 1]: several time scales) are *buffers*: saved with the model, never trained.
- Ripples: periods geometric from 4 to ``max_position_embeddings`` tokens (ω_k = 2π / period_k), frozen
  random phases φ_k (R,) per neuron, trained amplitudes A_k (init 0.1).
- Only the read-out (W_out, b_out) and the ripple amplitudes of the reservoir are trained; gradients still
  flow *through* the frozen weights to the layers below.

The recurrence is a per-token loop (``reservoir_scan``); its input projection for all T is one matmul.
``reservoir_scan_ref`` is the readable twin (projection inside the loop). ``CausalSelfAttention`` and
``TimeAwareReservoir`` are mixers (:mod:`s3cmn.modeling.mixer`, registry names "attention" and
"reservoir"); the LiquidLM block (``block_type = "reservoir"``) is an ``S3CMNBlock`` over attention →
reservoir → MLP. Its state is ``{"attention": {"k", "v"} (B, H, t, hd), "reservoir": {"h": (B, R), "pos": (B,)
int64}}``; the attention cache grows with the context (standard attention), the reservoir state does not.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import Tensor, nn

from s3cmn.model_config import S3CMNConfig
from s3cmn.modeling.cross_modal import causal_attention, merge_heads, split_heads
from s3cmn.modeling.mixer import MixerOutput, MixerState
from s3cmn.ops.dropout import Dropout

logger = logging.getLogger(__name__)

__all__ = ["CausalSelfAttention", "TimeAwareReservoir", "reservoir_scan", "reservoir_scan_ref"]

LEAK_MIN, LEAK_MAX = 0.1, 1.0  # leak rates a, log-uniform: time constants from 1 to 10 tokens
RIPPLE_MIN_PERIOD = 4.0  # tokens
RIPPLE_INIT_AMPLITUDE = 0.1


def reservoir_scan(u: Tensor, W: Tensor, leak: Tensor, h0: Tensor) -> tuple[Tensor, Tensor]:
    """Leaky-tanh recurrence over precomputed input drives u (B, T, R); W (R, R), leak (R,), h0 (B, R).

    Returns (h for every token (B, T, R), last h (B, R)).
    """
    Wt = W.t()  # h @ Wᵀ = (W h)ᵀ
    h, hs = h0, []
    for u_t in u.unbind(1):  # unbind: its backward stacks the T gradients once (indexing u[:, t] costs O(T²))
        h = (1 - leak) * h + leak * torch.tanh(u_t + h @ Wt)  # (B, R)
        hs.append(h)
    states = torch.stack(hs, dim=1) if hs else u.new_zeros(u.shape[0], 0, u.shape[2])  # (B, T, R)
    return states, h


def reservoir_scan_ref(
    x: Tensor, W_in: Tensor, bias: Tensor, W: Tensor, leak: Tensor, h0: Tensor
) -> tuple[Tensor, Tensor]:
    """The recurrence as written in the module docstring, one token at a time: x (B, T, D) -> (B, T, R), (B, R)."""
    h, hs = h0, []
    for t in range(x.shape[1]):
        pre = x[:, t] @ W_in.t() + bias + h @ W.t()  # (B, R)
        h = (1 - leak) * h + leak * torch.tanh(pre)
        hs.append(h)
    return torch.stack(hs, dim=1), h


def scaled_sparse_reservoir(size: int, sparsity: float, spectral_radius: float) -> Tensor:
    """A (size, size) random matrix with a fraction ``sparsity`` of zeros and the given spectral radius."""
    W = torch.randn(size, size) * (torch.rand(size, size) >= sparsity)
    radius = torch.linalg.eigvals(W).abs().max()  # once, dense
    if W.is_meta:  # transformers builds the model on the meta device before loading the saved buffers
        return W
    if radius.item() == 0:  # all-zero (tiny, very sparse): nothing to scale
        logger.warning("reservoir of %d neurons with sparsity %.2f has spectral radius 0", size, sparsity)
        return W
    return W * (spectral_radius / radius)


class TimeAwareReservoir(nn.Module):
    """The time-aware reservoir (module docstring): x (B, T, D) -> y (B, T, D), state {"h", "pos"}."""

    def __init__(self, config: S3CMNConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        D, R, K = config.hidden_dim, config.reservoir_size, config.reservoir_num_ripples
        self.size, self.num_ripples = R, K
        self.register_buffer("W", scaled_sparse_reservoir(R, config.reservoir_sparsity,
                                                          config.reservoir_spectral_radius))
        # input weights U(±√(3/D)): unit-variance drive for a unit-variance (normed) input
        self.register_buffer("W_in", (torch.rand(R, D) * 2 - 1) * math.sqrt(3.0 / D))
        self.register_buffer("bias", (torch.rand(R) * 2 - 1) * 0.1)
        leak = torch.exp(torch.empty(R).uniform_(math.log(LEAK_MIN), math.log(LEAK_MAX)))
        self.register_buffer("leak", leak)
        periods = torch.logspace(
            math.log10(RIPPLE_MIN_PERIOD), math.log10(max(RIPPLE_MIN_PERIOD, config.max_position_embeddings)), K
        ) if K > 1 else torch.full((K,), RIPPLE_MIN_PERIOD)
        self.register_buffer("ripple_freq", 2 * math.pi / periods)  # (K,) radians per token
        self.register_buffer("ripple_phase", torch.rand(K, R) * 2 * math.pi)  # (K, R)
        self.ripple_amplitude = nn.Parameter(torch.full((K,), RIPPLE_INIT_AMPLITUDE))
        self.ripple_amplitude._no_weight_decay = True
        self.readout = nn.Linear(R, D)
        self.dropout = Dropout(config.dropout)

    def ripples(self, positions: Tensor) -> Tensor:
        """Σ_k A_k sin(ω_k p + φ_k): positions (B, T) -> (B, T, R)."""
        angles = positions.to(self.ripple_freq.dtype)[..., None, None] * self.ripple_freq[:, None]  # (B, T, K, 1)
        waves = torch.sin(angles + self.ripple_phase)  # (B, T, K, R)
        return torch.einsum("k,btkr->btr", self.ripple_amplitude, waves)  # (B, T, R)

    def init_state(self, batch: int, like: Tensor) -> MixerState:
        """Reservoir at rest, at position 0."""
        return {"h": like.new_zeros(batch, self.size), "pos": torch.zeros(batch, dtype=torch.long, device=like.device)}

    def forward(self, x: Tensor, state: MixerState | None = None) -> MixerOutput:
        """x (B, T, D) -> y (B, T, D), state {"h": (B, R), "pos": (B,)}; continues from ``state``."""
        B, T, _ = x.shape
        state = self.init_state(B, x) if state is None else state
        h0, pos0 = state["h"], state["pos"]  # (B, R), (B,)
        u = x @ self.W_in.t() + self.bias  # (B, T, R) all tokens in one matmul
        hs, h = reservoir_scan(u, self.W, self.leak, h0)  # (B, T, R), (B, R)
        positions = pos0[:, None] + torch.arange(T, device=x.device)  # (B, T)
        z = hs + self.ripples(positions) if self.num_ripples else hs  # (B, T, R)
        return MixerOutput(self.dropout(self.readout(z)), {"h": h, "pos": pos0 + T})

    def step(self, x: Tensor, state: MixerState | None) -> MixerOutput:
        """x (B, D) -> y (B, D): one token."""
        out = self.forward(x[:, None], state)
        return MixerOutput(out.y[:, 0], out.state)

    def extra_repr(self) -> str:
        return f"size={self.size}, num_ripples={self.num_ripples}"


class CausalSelfAttention(nn.Module):
    """Causal multi-head self-attention (``num_attention_heads``) with a key/value cache for ``step``."""

    def __init__(self, config: S3CMNConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        D = config.hidden_dim
        self.num_heads = config.num_attention_heads  # divides D: checked by the config
        self.dropout_p = config.attention_dropout
        self.qkv = nn.Linear(D, 3 * D)
        self.proj = nn.Linear(D, D)
        self.resid_dropout = Dropout(config.dropout)

    def init_state(self, batch: int, like: Tensor) -> MixerState:
        """The empty key/value cache."""
        hd = self.qkv.in_features // self.num_heads
        empty = like.new_zeros(batch, self.num_heads, 0, hd)
        return {"k": empty, "v": empty}

    def forward(self, x: Tensor, state: MixerState | None = None) -> MixerOutput:
        """x (B, T, D) -> y (B, T, D), state {"k", "v": (B, H, t+T, hd)}; attends to the cached keys too."""
        q, k, v = (split_heads(t, self.num_heads) for t in self.qkv(x).chunk(3, dim=-1))  # (B, H, T, hd)
        if state is not None:
            k, v = torch.cat([state["k"], k], dim=2), torch.cat([state["v"], v], dim=2)  # (B, H, t+T, hd)
        y = causal_attention(q, k, v, 0, self.dropout_p if self.training else 0.0)  # (B, H, T, hd)
        return MixerOutput(self.resid_dropout(self.proj(merge_heads(y))), {"k": k, "v": v})

    def step(self, x: Tensor, state: MixerState | None) -> MixerOutput:
        """x (B, D) -> y (B, D): one token attending to the cache (which grows by one entry)."""
        out = self.forward(x[:, None], state)
        return MixerOutput(out.y[:, 0], out.state)

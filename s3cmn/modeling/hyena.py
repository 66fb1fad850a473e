"""The Hyena operator (Poli et al. 2023, "Hyena Hierarchy", safari ``standalone_hyena.py``).

For an input x (B, T, D) and order N::

    x_0, ..., x_{N-1}, v = split(short_conv(in_proj(x)))      N+1 projections of width D, short causal conv
    for i = N-1, ..., 1:                                       N-1 long convolutions with gating
        v = h_i * dropout(v · x_i) + b_i · dropout(v · x_i)     h_i: implicit filter of L taps, b_i: skip
    y = out_proj(v · x_0)

The long filters h are *implicit*: ``HyenaFilter`` maps sinusoidal features of the tap index t to
(N-1)·D channels with a small MLP with sine activations, times an exponential decay window
(``ExponentialModulation``), so the parameter count does not grow with the filter length L
(``config.hyena_filter_length``). The long convolutions run by FFT in O(T log T) (``fft_causal_conv``).

Decoding (``step``) keeps the last (kernel − 1) inputs of the short conv and the last L − 1 inputs of each
long convolution: a token costs O((N-1)·L·D), whatever the context length. The forward uses exactly the same
L taps (a T > L forward truncates the filter), so ``forward`` and ``step`` give the same numbers, and a
forward continued from a state prepends the kept history.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from s3cmn.model_config import S3CMNConfig
from s3cmn.modeling.decode import derived, linear, module_tensors
from s3cmn.modeling.mixer import MixerOutput, MixerState
from s3cmn.ops.decode_step import window_step
from s3cmn.ops.dropout import Dropout
from s3cmn.ops.fftconv import fft_causal_conv

__all__ = ["ExponentialModulation", "HyenaFilter", "HyenaOperator", "PositionalEmbedding", "Sin"]

FILTER_EMB_DIM = 33  # features of t fed to the filter MLP: t, 16 cosines, 16 sines (safari's wt103 setting)
FILTER_INNER_LAYERS = 2  # hidden Linear + Sin layers after the first (safari num_inner_mlps)
SIN_FREQ_INIT = 14.0  # initial frequency of the Sin activations (HyenaDNA / safari configs: w = 14)


class Sin(nn.Module):
    """sin(ω ⊙ x) with a learnable frequency ω per feature."""

    def __init__(self, dim: int, w: float = SIN_FREQ_INIT) -> None:
        super().__init__()
        self.freq = nn.Parameter(torch.full((dim,), float(w)))

    def forward(self, x: Tensor) -> Tensor:
        return torch.sin(self.freq * x)


class PositionalEmbedding(nn.Module):
    """Features of the tap index t = 0..L-1: z[t] = [t / (L-1), cos(f_j ω_t), −sin(f_j ω_t)], ω_t = 2πt/L.

    Derived from (L, emb_dim) alone, so they are non-persistent buffers, not checkpoint entries.
    """

    def __init__(self, emb_dim: int, seq_len: int) -> None:
        super().__init__()
        if emb_dim < 3 or emb_dim % 2 == 0:
            raise ValueError(f"emb_dim must be odd and >= 3 (time, cosines, sines), got {emb_dim}")
        bands = (emb_dim - 1) // 2
        t = torch.linspace(0, 1, seq_len)[:, None]  # (L, 1) normalised time
        w = 2 * math.pi * torch.arange(seq_len, dtype=torch.float32)[:, None] / seq_len  # (L, 1)
        f = torch.linspace(1e-4, bands - 1, bands)[None, :]  # (1, bands)
        z = torch.cat([t, torch.cos(f * w), -torch.sin(f * w)], dim=-1)  # (L, emb_dim)
        self.register_buffer("z", z, persistent=False)
        self.register_buffer("t", t, persistent=False)

    def forward(self) -> tuple[Tensor, Tensor]:
        return self.z, self.t


class ExponentialModulation(nn.Module):
    """h[t, c] · exp(−t · |δ_c|), t in [0, 1]: channels decay to ``target`` at t from fast_ to slow_decay_pct.

    The decay rates δ are fixed (safari trains them with lr 0), so they are a non-persistent buffer.
    """

    def __init__(
        self, channels: int, fast_decay_pct: float = 0.3, slow_decay_pct: float = 1.5, target: float = 1e-2
    ) -> None:
        super().__init__()
        max_decay = math.log(target) / fast_decay_pct
        min_decay = math.log(target) / slow_decay_pct
        self.register_buffer("deltas", torch.linspace(min_decay, max_decay, channels), persistent=False)

    def forward(self, t: Tensor, h: Tensor) -> Tensor:
        return h * torch.exp(-t * self.deltas.abs())  # (L, C)


class HyenaFilter(nn.Module):
    """The implicit long filter: ``filter_taps()`` -> (C, L), plus a per-channel skip ``bias`` (C,).

    Taps are a pure function of the parameters, recomputed by every call of :meth:`filter_taps` (once per
    segment). The one-token decode path (:meth:`HyenaOperator.step`) instead reuses its reversed taps while the
    parameters keep their version (:func:`~s3cmn.modeling.derived.derived`).
    """

    def __init__(self, channels: int, width: int, seq_len: int, emb_dim: int = FILTER_EMB_DIM) -> None:
        super().__init__()
        self.channels, self.seq_len = channels, seq_len
        self.pos_emb = PositionalEmbedding(emb_dim, seq_len)
        layers: list[nn.Module] = [nn.Linear(emb_dim, width), Sin(width)]
        for _ in range(FILTER_INNER_LAYERS):
            layers += [nn.Linear(width, width), Sin(width)]  # one Sin a layer: no shared tensors
        layers.append(nn.Linear(width, channels, bias=False))
        self.implicit_filter = nn.Sequential(*layers)
        for p in self.implicit_filter.parameters():
            p._no_weight_decay = True  # safari trains the implicit filter without weight decay
        self.modulation = ExponentialModulation(channels)
        self.bias = nn.Parameter(torch.randn(channels))  # the skip term b · u of each long convolution

    def _compute_taps(self) -> Tensor:
        z, t = self.pos_emb()  # (L, emb_dim), (L, 1)
        h = self.implicit_filter(z)  # (L, C)
        h = self.modulation(t, h)  # (L, C)
        return h.transpose(0, 1)  # (C, L)

    def sources(self) -> list[Tensor]:
        """Every tensor the taps depend on (the filter MLP, the modulation, the positional embedding)."""
        return module_tensors(self.pos_emb, self.implicit_filter, self.modulation)

    def filter_taps(self) -> Tensor:
        """(C, L) taps of the long filters."""
        return self._compute_taps()

    def extra_repr(self) -> str:
        return f"channels={self.channels}, seq_len={self.seq_len}"


class HyenaOperator(nn.Module):
    """Hyena sequence mixer (module docstring), a :class:`~s3cmn.modeling.mixer.Mixer`.

    State: ``short_conv`` (B, (N+1)·D, kernel − 1) and ``long_conv`` (B, N − 1, D, L − 1), the last inputs of
    the short and of each long convolution (zeros before the first token).
    """

    def __init__(self, config: S3CMNConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.d_model = D = config.hidden_dim
        self.order = config.hyena_order
        self.filter_length = config.hyena_filter_length
        self.short_kernel = config.hyena_short_conv
        inner = D * (self.order + 1)
        self.in_proj = nn.Linear(D, inner)
        # depthwise, causal: applied to [history, u] without padding (see _short_conv)
        self.short_filter = nn.Conv1d(inner, inner, self.short_kernel, groups=inner)
        self.filter_fn = HyenaFilter(D * (self.order - 1), config.hyena_filter_dim, self.filter_length)
        self.dropout = Dropout(config.dropout)
        self.out_proj = nn.Linear(D, D)

    def init_state(self, batch: int, like: Tensor) -> MixerState:
        """The zero state (no token seen yet), on ``like``'s device and dtype."""
        D, N = self.d_model, self.order
        return {
            "short_conv": like.new_zeros(batch, (N + 1) * D, self.short_kernel - 1),
            "long_conv": like.new_zeros(batch, N - 1, D, self.filter_length - 1),
        }

    def filter_taps(self) -> Tensor:
        """(N − 1, D, L) taps of the long filters, the first one applied first."""
        return self.filter_fn.filter_taps().view(self.order - 1, self.d_model, self.filter_length)

    def forward(self, x: Tensor, state: MixerState | None = None) -> MixerOutput:
        """x (B, T, D) -> y (B, T, D), causal, parallel over T; continues from ``state`` when given."""
        B, T, D = x.shape
        if state is None:
            state = self.init_state(B, x)
        # 1. projections and the short depthwise causal conv over [history, u]
        u = self.in_proj(x).transpose(1, 2)  # (B, (N+1)D, T)
        u = torch.cat([state["short_conv"], u], dim=-1)  # (B, (N+1)D, K-1+T)
        w, b = self.short_filter.weight, self.short_filter.bias
        uc = F.conv1d(u, w, b, groups=u.shape[1])  # (B, (N+1)D, T)
        *xs, v = uc.split(D, dim=1)  # N gates x_i (B, D, T) and the value v (B, D, T)
        # 2. the gated long convolutions, each over [history, input] with exactly L taps
        k = self.filter_taps()  # (N-1, D, L)
        bias = self.filter_fn.bias.view(self.order - 1, D)  # (N-1, D)
        history = []
        for o, x_i in enumerate(reversed(xs[1:])):
            v = self.dropout(v * x_i)  # (B, D, T)
            v_full = torch.cat([state["long_conv"][:, o], v], dim=-1)  # (B, D, L-1+T)
            history.append(_tail(v_full, self.filter_length - 1))  # (B, D, L-1)
            v = fft_causal_conv(v_full, k[o])[..., -T:] + v * bias[o][:, None]  # (B, D, T)
        # 3. the last gate and the output projection
        y = self.out_proj((v * xs[0]).transpose(1, 2))  # (B, T, D)
        new_state = {
            "short_conv": _tail(u, self.short_kernel - 1),  # (B, (N+1)D, K-1)
            "long_conv": torch.stack(history, dim=1),  # (B, N-1, D, L-1)
        }
        return MixerOutput(y, new_state)

    def step(self, x: Tensor, state: MixerState | None) -> MixerOutput:
        """x (B, D) -> y (B, D): one token; O((N-1)·L·D) whatever the context length.

        The decode path (no gradients, eval mode): :meth:`step_ref`'s numbered steps with the reversed taps
        computed once per weights version, the filters applied as functions (no module-call overhead) and one
        copy of each window. Otherwise :meth:`step_ref` itself.
        """
        if torch.is_grad_enabled() or self.training or state is None:
            return self.step_ref(x, state)
        D, f = self.d_model, self.filter_fn
        # 1. projections and the short conv: a dot product with the last K inputs
        u = linear(self.in_proj, x)  # (B, (N+1)D)
        uc, short_conv = window_step(state["short_conv"], u, self.short_filter.weight[:, 0], add=self.short_filter.bias)
        *xs, v = uc.split(D, dim=1)  # (B, D) each
        # 2. each long convolution: a dot product of the last L inputs with the reversed taps, plus the skip b·v
        k_rev = derived(self, "taps_reversed", f.sources(), lambda: self.filter_taps().flip(-1).contiguous())
        bias = f.bias.view(self.order - 1, D)  # (N-1, D)
        history = []
        for o, x_i in enumerate(reversed(xs[1:])):
            v, window = window_step(state["long_conv"][:, o], v * x_i, k_rev[o], skip=bias[o])  # (B, D), (B, D, L-1)
            history.append(window)
        # 3. the last gate and the output projection
        y = linear(self.out_proj, v * xs[0])  # (B, D)
        long_conv = history[0][:, None] if len(history) == 1 else torch.stack(history, dim=1)  # (B, N-1, D, L-1)
        return MixerOutput(y, {"short_conv": short_conv, "long_conv": long_conv})

    def step_ref(self, x: Tensor, state: MixerState | None) -> MixerOutput:
        """The readable one-token step (any mode): what :meth:`step` computes, op by op."""
        B, D = x.shape
        if state is None:
            state = self.init_state(B, x)
        # 1. projections and the short conv: a dot product with the last K inputs
        u = torch.cat([state["short_conv"], self.in_proj(x)[..., None]], dim=-1)  # (B, (N+1)D, K)
        uc = (u * self.short_filter.weight[:, 0]).sum(-1) + self.short_filter.bias  # (B, (N+1)D)
        *xs, v = uc.split(D, dim=1)  # (B, D) each
        # 2. each long convolution: a dot product of the last L inputs with the reversed taps
        k_rev = self.filter_taps().flip(-1)  # (N-1, D, L), k_rev[..., -1] = k[..., 0] meets the newest input
        bias = self.filter_fn.bias.view(self.order - 1, D)  # (N-1, D)
        history = []
        for o, x_i in enumerate(reversed(xs[1:])):
            v = self.dropout(v * x_i)  # (B, D)
            window = torch.cat([state["long_conv"][:, o], v[..., None]], dim=-1)  # (B, D, L)
            history.append(window[..., 1:])  # (B, D, L-1)
            v = (window * k_rev[o]).sum(-1) + v * bias[o]  # (B, D)
        # 3. the last gate and the output projection
        y = self.out_proj(v * xs[0])  # (B, D)
        return MixerOutput(y, {"short_conv": u[..., 1:], "long_conv": torch.stack(history, dim=1)})


def _tail(x: Tensor, n: int) -> Tensor:
    """The last n entries of the last dimension (n may be 0)."""
    return x[..., x.shape[-1] - n :]

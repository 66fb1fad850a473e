"""Population-coded LIF layer: a drop-in replacement for :class:`s3cmn.modeling.spiking.LIFLayer`.

Each of the N = ``config.spiking_units`` input currents is encoded by P = ``config.population_size`` LIF
neurons that receive the same current but have different thresholds (a "thermometer" code, as in population
coding of place / direction cells)::

    I[t]        = W_in x[t] + b_in                                (B, T, N)
    θ[n, p]     = s[n] · spread[p]                                thresholds around config.spike_threshold
    U = β[n] V + I[n];  S = H(U − θ[n, p]);  V = reset(U, S, θ)    per neuron (n, p), num_spike_steps micro-steps
    y[t]        = dropout(W_out · decode(S[t]))                    (B, T, D)

``population_threshold_spread`` (multipliers of the threshold, P values): ``uniform`` linspace(0.5, 1.5),
``gaussian`` 1 + 0.5·z_p / max|z| with z_p the normal quantiles at (p + ½)/P (denser near θ), ``log``
2^linspace(−1, 1) (geometric, 0.5θ to 2θ).

``population_decoding`` (features read out by W_out, per neuron):

- ``rate``: spike count / micro-steps (in [0, 1]);
- ``timing``: soft first-spike latency over the S = num_spike_steps micro-steps of a token,
  Σ_k first_k · (S − k)/S with first_k = S_k Π_{j<k}(1 − S_j): 1 for a spike at the first micro-step, 1/S at
  the last, 0 for silence; differentiable through the spike surrogate (with S = 1 it equals the rate);
- ``hybrid``: both, concatenated.

β is per input (shared by its population), parameterised as in ``LIFLayer``. The threshold scale s (N,) is
a learned parameter, or with ``adaptive_threshold`` a buffer moved by homeostasis toward
``target_spike_rate`` from the population's mean rate (the spread is kept: it *is* the code).
``forward``/``step`` return ``MixerOutput(y, {"v": (B, N·P)}, PopulationSpikeStats)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from s3cmn.model_config import S3CMNConfig
from s3cmn.modeling.mixer import MixerOutput, MixerState
from s3cmn.modeling.spiking import DETACH_RESET, MIN_THRESHOLD, LIFLayer, SpikeStats
from s3cmn.ops.lif import lif_scan, lif_scan_ref

__all__ = ["PopulationLIFLayer", "PopulationSpikeStats", "population_scan", "threshold_spread", "decode_population"]

SPREADS = ("uniform", "gaussian", "log")
DECODINGS = ("rate", "timing", "hybrid")


def threshold_spread(size: int, kind: str) -> Tensor:
    """Threshold multipliers (size,), increasing, of the population (module docstring)."""
    if kind == "uniform":
        return torch.linspace(0.5, 1.5, size)
    if kind == "gaussian":
        z = torch.special.ndtri((torch.arange(size, dtype=torch.float64) + 0.5) / size)
        return (1 + 0.5 * z / z.abs().max()).float()
    if kind == "log":
        return torch.pow(2.0, torch.linspace(-1.0, 1.0, size))
    raise ValueError(f"unknown population_threshold_spread {kind!r}: choose one of {SPREADS}")


@dataclass
class PopulationSpikeStats(SpikeStats):
    """``SpikeStats`` plus population statistics (detached).

    ``population_sparsity`` () fraction of (token, neuron) pairs with no spike in the token;
    ``active_fraction`` () fraction of (token, input) populations with at least one spike;
    ``rate_by_rank`` (P,) firing rate of the p-th lowest threshold of every population.
    """

    population_sparsity: Tensor
    active_fraction: Tensor
    rate_by_rank: Tensor

    def merge(self, other: SpikeStats) -> PopulationSpikeStats:
        base = super().merge(other)
        if not isinstance(other, PopulationSpikeStats):
            raise TypeError("can only merge PopulationSpikeStats with PopulationSpikeStats")
        n1, n2 = self.num_steps, other.num_steps  # the same micro-steps per token: weights by tokens

        def pool(a: Tensor, b: Tensor) -> Tensor:
            return (n1 * a + n2 * b) / (n1 + n2)

        return PopulationSpikeStats(
            **{f: getattr(base, f) for f in ("spike_count", "num_steps", "firing_rate", "membrane_mean",
                                             "membrane_std")},
            population_sparsity=pool(self.population_sparsity, other.population_sparsity),
            active_fraction=pool(self.active_fraction, other.active_fraction),
            rate_by_rank=pool(self.rate_by_rank, other.rate_by_rank),
        )


class PopulationScan(NamedTuple):
    spikes: Tensor  # (B, T, S, N, P) spikes of every micro-step
    v: Tensor  # (B, N·P) membrane after the last micro-step
    membrane_mean: Tensor  # ()
    membrane_std: Tensor  # ()


def population_scan(
    current: Tensor,
    beta: Tensor,
    threshold: Tensor,
    v0: Tensor,
    reset: str = "subtract",
    surrogate: str = "atan",
    alpha: float = 2.0,
    num_steps: int = 1,
    ref: bool = False,
) -> PopulationScan:
    """LIF populations: current (B, T, N), beta (N,), threshold (N, P), v0 (B, N·P) -> PopulationScan.

    The token's current is repeated for its ``num_steps`` micro-steps and scanned with one micro-step per
    position, which is the same recurrence as ``lif_scan(..., num_steps)`` but keeps every micro-step's
    spike (needed for the timing code). ``ref`` uses ``lif_scan_ref`` (the loop over ``lif_step``).
    """
    B, T, N = current.shape
    P = threshold.shape[1]
    cur = current[..., None].expand(B, T, N, P).reshape(B, T, N * P)  # (B, T, N·P)
    if num_steps > 1:
        cur = cur.repeat_interleave(num_steps, dim=1)  # (B, T·S, N·P), token-major
    beta_np = beta[:, None].expand(N, P).reshape(N * P)
    scan = lif_scan_ref if ref else lif_scan
    out = scan(cur, beta_np, threshold.reshape(N * P), v0, reset, surrogate, alpha, 1, DETACH_RESET)
    spikes = out.spikes.view(B, T, num_steps, N, P)
    return PopulationScan(spikes, out.v, out.membrane_mean, out.membrane_std)


def decode_population(spikes: Tensor, decoding: str) -> Tensor:
    """spikes (B, T, S, N, P) -> features (B, T, N·P) for ``rate``/``timing``, (B, T, 2·N·P) for ``hybrid``."""
    B, T, S, N, P = spikes.shape
    feats = []
    if decoding in ("rate", "hybrid"):
        feats.append(spikes.mean(dim=2).reshape(B, T, N * P))
    if decoding in ("timing", "hybrid"):
        silent_before = torch.cumprod(1 - spikes, dim=2)  # Π_{j<=k} (1 − S_j)
        silent_before = torch.cat([torch.ones_like(spikes[:, :, :1]), silent_before[:, :, :-1]], dim=2)
        first = spikes * silent_before  # (B, T, S, N, P): 1 at the first spike of the token
        weight = (S - torch.arange(S, device=spikes.device, dtype=spikes.dtype)) / S  # (S,) earlier = larger
        feats.append((first * weight[:, None, None]).sum(dim=2).reshape(B, T, N * P))
    if not feats:
        raise ValueError(f"unknown population_decoding {decoding!r}: choose one of {DECODINGS}")
    return torch.cat(feats, dim=-1) if len(feats) > 1 else feats[0]


class PopulationLIFLayer(LIFLayer):
    """Population-coded LIF mixer (module docstring); the ``LIFLayer`` mixer interface.

    It shares ``LIFLayer``'s input projection, β and ``forward``/``step``; ``threshold`` (N,) is the per-input
    threshold scale, multiplied by the fixed ``spread`` (P,) of the population.
    """

    def __init__(self, config: S3CMNConfig, layer_idx: int) -> None:
        super().__init__(config, layer_idx)
        N, P = config.spiking_units, config.population_size
        self.population_size, self.num_neurons = P, N * P
        self.decoding = config.population_decoding
        self.spread_kind = config.population_threshold_spread
        self.register_buffer("spread", threshold_spread(P, self.spread_kind))  # (P,)
        features = 2 * N * P if self.decoding == "hybrid" else N * P
        self.out_proj = nn.Linear(features, config.hidden_dim)  # reads the decoded population

    def thresholds(self) -> Tensor:
        """θ (N, P) = scale[n] · spread[p]."""
        scale = self.threshold.clone() if self.adaptive_threshold else self.threshold
        return scale[:, None] * self.spread[None, :]

    def step(self, x: Tensor, state: MixerState | None) -> MixerOutput:
        """x (B, D) -> y (B, D): one token of the population scan (LIFLayer's fused decode path is per neuron)."""
        return self.step_ref(x, state)

    def _run(self, x: Tensor, state: MixerState | None, update_threshold: bool, ref: bool = False) -> MixerOutput:
        B, T, _ = x.shape
        v0 = self.init_state(B, x)["v"] if state is None else state["v"]  # (B, N·P)
        current = self.in_proj(x)  # (B, T, N)
        out = population_scan(current, self.decay(), self.thresholds(), v0, self.reset_mode, self.surrogate,
                              self.alpha, self.num_spike_steps, ref)
        y = self.dropout(self.out_proj(decode_population(out.spikes, self.decoding)))  # (B, T, D)
        stats = self._stats(out)
        if update_threshold:
            self._homeostasis(stats.spike_count / stats.num_steps)
        return MixerOutput(y, {"v": out.v}, stats)

    def _stats(self, out: PopulationScan) -> PopulationSpikeStats:
        s = out.spikes.detach()  # (B, T, S, N, P)
        B, T, S, N, P = s.shape
        count = s.sum(dim=(0, 1, 2)).reshape(N * P)  # (N·P,)
        num_steps = B * T * S
        rate = s.mean(dim=2)  # (B, T, N, P)
        return PopulationSpikeStats(
            spike_count=count,
            num_steps=num_steps,
            firing_rate=count.sum() / max(num_steps * N * P, 1),
            membrane_mean=out.membrane_mean,
            membrane_std=out.membrane_std,
            population_sparsity=(rate == 0).float().mean(),
            active_fraction=(rate.sum(-1) > 0).float().mean(),
            rate_by_rank=s.mean(dim=(0, 1, 2, 3)),
        )

    @torch.no_grad()
    def _homeostasis(self, rate: Tensor) -> None:
        """s ← max(s + η (mean_p rate − target), θ_min / min spread), rate (N·P,) per neuron."""
        mean_rate = rate.view(self.num_units, self.population_size).mean(dim=1)  # (N,)
        delta = self.threshold_adaptation_rate * (mean_rate - self.target_spike_rate)
        floor = MIN_THRESHOLD / float(self.spread.min())
        self.threshold.add_(delta.to(self.threshold.dtype)).clamp_(min=floor)

    def extra_repr(self) -> str:
        return (
            f"units={self.num_units}, population={self.population_size}, spread={self.spread_kind}, "
            f"decoding={self.decoding}, num_spike_steps={self.num_spike_steps}, "
            f"adaptive_threshold={self.adaptive_threshold}"
        )

"""The LIF spiking layer: a linear current, leaky integrate-and-fire neurons, a linear read-out of the spikes.

For x (B, T, D) and N = ``config.spiking_units`` neurons::

    I[t] = W_in x[t] + b_in                                   (B, T, N) input current
    U = β V[t-1] + I[t];  S = H(U − θ);  V = reset(U, S, θ)   ``num_spike_steps`` micro-steps per token
    r[t] = mean of S over the micro-steps                     spike rate in [0, 1]
    y[t] = dropout(W_out r[t] + b_out)                        (B, T, D)

(the neuron maths is :mod:`s3cmn.ops.lif`: reset by subtraction or to zero, reset spikes detached, surrogate
gradient ``config.surrogate`` with slope ``config.surrogate_alpha``).

- β is per neuron. With ``config.learn_beta`` it is ``ε + (1 − 2ε) · sigmoid(beta_logit)``, ε = 1e-4, so it
  stays strictly inside (0, 1) even in fp32, where sigmoid saturates to exactly 1; initialised to
  ``config.beta`` (clipped to [ε, 1 − ε]). Otherwise β is a fixed buffer equal to ``config.beta`` (1 allowed:
  no leak).
- θ is per neuron, initialised to ``config.spike_threshold``. Without ``config.adaptive_threshold`` it is a
  learned parameter. With it, θ is a *buffer* set by homeostasis, like BatchNorm's running statistics: after
  each ``forward`` in training mode, and only then, ``θ ← max(θ + η (r − r*), θ_min)`` with r the neuron's
  firing rate over the batch, r* = ``config.target_spike_rate``, η = ``config.threshold_adaptation_rate``.
  ``eval()`` and ``step`` never change it. (Under DistributedDataParallel buffers are broadcast from rank 0.)

A :class:`~s3cmn.modeling.mixer.Mixer`: ``forward`` and ``step`` return ``MixerOutput(y, state, stats)``, the
state ``{"v": (B, N)}`` (the membrane) and the stats a :class:`SpikeStats` for the sparsity evaluation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from s3cmn.model_config import S3CMNConfig
from s3cmn.modeling.decode import derived, linear
from s3cmn.modeling.mixer import MixerOutput, MixerState
from s3cmn.ops.decode_step import lif_step_stats
from s3cmn.ops.dropout import Dropout
from s3cmn.ops.lif import lif_scan

__all__ = ["LIFLayer", "SpikeStats"]

DETACH_RESET = True  # no gradient through the reset (snntorch's default; see s3cmn.ops.lif)
MIN_THRESHOLD = 1e-3  # homeostasis never lowers θ below this: θ <= 0 would fire on a zero current
BETA_EPS = 1e-4  # a learned β stays in [ε, 1 − ε]


@dataclass
class SpikeStats:
    """Spiking statistics of one call (all tensors detached).

    ``spike_count`` (N,) spikes per neuron summed over batch, tokens and micro-steps; ``num_steps`` the
    neuron-steps per neuron (B · T · num_spike_steps); ``firing_rate`` () spikes per neuron-step;
    ``membrane_mean`` / ``membrane_std`` () of the membrane after reset over every neuron-step.
    """

    spike_count: Tensor
    num_steps: int
    firing_rate: Tensor
    membrane_mean: Tensor
    membrane_std: Tensor

    @property
    def silent_fraction(self) -> Tensor:
        """Fraction of neurons that never fired."""
        return (self.spike_count == 0).float().mean()

    def synaptic_ops(self, fan_out: int) -> Tensor:
        """Accumulates done by the read-out when only spikes are propagated: spikes × fan-out."""
        return self.spike_count.sum() * fan_out

    def merge(self, other: SpikeStats) -> SpikeStats:
        """The statistics of both calls together (counts add; moments pool by neuron-steps)."""
        n1, n2 = self.num_steps, other.num_steps
        n = n1 + n2
        mean = (n1 * self.membrane_mean + n2 * other.membrane_mean) / n
        second = (n1 * (self.membrane_std**2 + self.membrane_mean**2)
                  + n2 * (other.membrane_std**2 + other.membrane_mean**2)) / n
        count = self.spike_count + other.spike_count
        return SpikeStats(
            spike_count=count,
            num_steps=n,
            firing_rate=count.sum() / (n * count.numel()),
            membrane_mean=mean,
            membrane_std=(second - mean**2).clamp(min=0).sqrt(),
        )


class LIFLayer(nn.Module):
    """LIF spiking mixer (module docstring). ``forward``/``step`` return ``MixerOutput(y, state, SpikeStats)``."""

    def __init__(self, config: S3CMNConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        D, N = config.hidden_dim, config.spiking_units
        self.num_units = N
        self.num_neurons = N  # membrane potentials per token (a population layer has more)
        self.reset_mode = config.spike_reset
        self.surrogate = config.surrogate
        self.alpha = config.surrogate_alpha
        self.num_spike_steps = config.num_spike_steps
        self.adaptive_threshold = config.adaptive_threshold
        self.target_spike_rate = config.target_spike_rate
        self.threshold_adaptation_rate = config.threshold_adaptation_rate
        self.learn_beta = config.learn_beta

        self.in_proj = nn.Linear(D, N)  # W_in: the input current
        if self.learn_beta:
            p = (config.beta - BETA_EPS) / (1 - 2 * BETA_EPS)  # sigmoid(beta_logit) at init
            p = min(max(p, 1e-6), 1 - 1e-6)
            self.beta_logit = nn.Parameter(torch.full((N,), math.log(p / (1 - p))))
            self.beta_logit._no_weight_decay = True  # decay would pull β toward 1/2
        else:
            self.register_buffer("beta", torch.full((N,), float(config.beta)))
        threshold = torch.full((N,), float(config.spike_threshold))
        if self.adaptive_threshold:
            self.register_buffer("threshold", threshold)
        else:
            self.threshold = nn.Parameter(threshold)
            self.threshold._no_weight_decay = True  # decay would pull θ toward 0 (firing on any current)
        self.out_proj = nn.Linear(N, D)  # W_out: read-out of the spikes
        self.dropout = Dropout(config.dropout)

    def decay(self) -> Tensor:
        """β (N,): ε + (1 − 2ε)·sigmoid(beta_logit) when learned (in (0, 1)), else the fixed buffer."""
        if self.learn_beta:
            return BETA_EPS + (1 - 2 * BETA_EPS) * torch.sigmoid(self.beta_logit)
        return self.beta

    def init_state(self, batch: int, like: Tensor) -> MixerState:
        """The zero state: membrane at rest, (B, neurons)."""
        return {"v": like.new_zeros(batch, self.num_neurons)}

    def forward(self, x: Tensor, state: MixerState | None = None) -> MixerOutput:
        """x (B, T, D) -> y (B, T, D); continues from ``state`` if given; then homeostasis (training only)."""
        return self._run(x, state, update_threshold=self.training and self.adaptive_threshold)

    def step(self, x: Tensor, state: MixerState | None) -> MixerOutput:
        """x (B, D) -> y (B, D): one token (never adapts the threshold).

        The decode path (no gradients, eval mode, a state given): the micro-steps and their statistics in one C
        pass (:func:`~s3cmn.ops.decode_step.lif_step_stats`, the same membranes as :mod:`s3cmn.ops.lif`), with β
        computed once per weights version. Otherwise :meth:`step_ref`.
        """
        if torch.is_grad_enabled() or self.training or state is None:
            return self.step_ref(x, state)
        S = self.num_spike_steps
        beta = self.decay() if not self.learn_beta else derived(self, "beta", [self.beta_logit], self.decay)  # (N,)
        current = linear(self.in_proj, x)  # (B, N)
        rate, v, count, mean, std = lif_step_stats(state["v"], current, beta, self.threshold, S,
                                                   self.reset_mode == "zero")  # (B, N), (B, N), (N,), (), ()
        y = linear(self.out_proj, rate)  # (B, D)
        num_steps = x.shape[0] * S
        return MixerOutput(y, {"v": v}, SpikeStats(count, num_steps, count.sum() / (num_steps * self.num_units),
                                                   mean, std))

    def step_ref(self, x: Tensor, state: MixerState | None) -> MixerOutput:
        """The readable one-token step: one token of :func:`~s3cmn.ops.lif.lif_scan`."""
        out = self._run(x[:, None], state, update_threshold=False)
        return MixerOutput(out.y[:, 0], out.state, out.stats)

    def _run(self, x: Tensor, state: MixerState | None, update_threshold: bool) -> MixerOutput:
        B, T, _ = x.shape
        v0 = self.init_state(B, x)["v"] if state is None else state["v"]  # (B, N)
        # the scan in the residual stream's dtype (float32 under bf16 autocast): the membranes need the
        # precision, and the C time loop (a Python loop for other dtypes) takes float32
        current = self.in_proj(x).to(x.dtype)  # (B, T, N)
        # a copy of the homeostatic θ: the in-place update below must not alter what backward saved
        threshold = self.threshold.clone() if self.adaptive_threshold else self.threshold  # (N,)
        out = lif_scan(
            current, self.decay(), threshold, v0, self.reset_mode, self.surrogate, self.alpha,
            self.num_spike_steps, DETACH_RESET,
        )
        y = self.dropout(self.out_proj(out.spikes))  # (B, T, D)

        spike_count = (out.spikes.detach() * self.num_spike_steps).round().sum(dim=(0, 1))  # (N,)
        num_steps = B * T * self.num_spike_steps
        stats = SpikeStats(
            spike_count=spike_count,
            num_steps=num_steps,
            firing_rate=spike_count.sum() / (num_steps * self.num_units),
            membrane_mean=out.membrane_mean,
            membrane_std=out.membrane_std,
        )
        if update_threshold:
            self._homeostasis(spike_count / num_steps)
        return MixerOutput(y, {"v": out.v}, stats)

    @torch.no_grad()
    def _homeostasis(self, rate: Tensor) -> None:
        """θ ← max(θ + η (rate − target), θ_min): neurons firing above target get harder to fire."""
        delta = self.threshold_adaptation_rate * (rate - self.target_spike_rate)  # (N,)
        self.threshold.add_(delta.to(self.threshold.dtype)).clamp_(min=MIN_THRESHOLD)

    def extra_repr(self) -> str:
        return (
            f"units={self.num_units}, reset={self.reset_mode}, "
            f"surrogate={self.surrogate}(alpha={self.alpha}), "
            f"num_spike_steps={self.num_spike_steps}, learn_beta={self.learn_beta}, "
            f"adaptive_threshold={self.adaptive_threshold}"
        )

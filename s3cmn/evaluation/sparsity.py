"""Spike sparsity of the LIF layers, their synaptic operations and an estimate of their synaptic energy.

For a spiking layer with N neurons whose read-out projects to ``fan_out`` outputs (the block width D), over
``tokens`` token positions and S = ``num_spike_steps`` micro-steps a token:

    spike_rate       = spikes / (N · tokens · S)            spikes per neuron-step
    silent_fraction  = fraction of the N neurons with no spike at all
    synaptic_ops     = spikes · fan_out                      accumulates (AC) if only spikes are propagated
    dense_macs       = tokens · N · fan_out                  multiply-accumulates (MAC) of a dense layer of the
                                                             same shape on real-valued inputs, once a token
    energy_spiking   = synaptic_ops · E_AC,   energy_dense = dense_macs · E_MAC

E_AC = 0.9 pJ and E_MAC = 4.6 pJ are the 45 nm figures of Horowitz (ISSCC 2014, "Computing's energy problem
(and what we can do about it)"): a 32-bit float add 0.9 pJ, a multiply 3.7 pJ. The energies are an
**estimate of the synaptic (read-out) cost of that one layer** on hardware that propagates spikes as events;
they ignore memory traffic, the membrane updates and the rest of the model (the implementation here runs the
read-out as a dense matmul on the spike rates).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

E_AC_PJ = 0.9  # 45 nm, 32-bit float accumulate (Horowitz 2014)
E_MAC_PJ = 4.6  # 45 nm, 32-bit float multiply (3.7 pJ) + accumulate (0.9 pJ) (Horowitz 2014)
ENERGY_NOTE = (
    f"estimate of each spiking layer's synaptic read-out cost only (not of the model): "
    f"{E_AC_PJ} pJ per accumulate, {E_MAC_PJ} pJ per multiply-accumulate (45 nm, Horowitz 2014)"
)


@dataclass
class LayerSparsity:
    """Sparsity and synaptic cost of one spiking layer over an evaluation (module docstring)."""

    layer: int
    neurons: int
    fan_out: int
    tokens: int
    neuron_steps: int
    spikes: int
    spike_rate: float
    silent_fraction: float
    spikes_per_token: float
    synaptic_ops: int
    dense_macs: int
    ops_ratio: float
    synaptic_ops_per_token: float
    dense_macs_per_token: float
    energy_spiking_pj_per_token: float
    energy_dense_pj_per_token: float
    energy_ratio: float
    membrane_mean: float
    membrane_std: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def layer_sparsity(stats: Any, layer: int, fan_out: int, tokens: int) -> LayerSparsity:
    """The sparsity of one layer from its (merged) ``SpikeStats`` over ``tokens`` token positions."""
    if tokens <= 0:
        raise ValueError(f"tokens must be positive, got {tokens}")
    neurons = int(stats.spike_count.numel())
    spikes = int(stats.spike_count.sum().round())
    syn_ops = int(stats.synaptic_ops(fan_out).round())
    dense = tokens * neurons * fan_out
    e_spike, e_dense = syn_ops * E_AC_PJ / tokens, dense * E_MAC_PJ / tokens
    return LayerSparsity(
        layer=layer, neurons=neurons, fan_out=fan_out, tokens=tokens, neuron_steps=int(stats.num_steps) * neurons,
        spikes=spikes, spike_rate=float(stats.firing_rate), silent_fraction=float(stats.silent_fraction),
        spikes_per_token=spikes / tokens, synaptic_ops=syn_ops, dense_macs=dense, ops_ratio=syn_ops / dense,
        synaptic_ops_per_token=syn_ops / tokens, dense_macs_per_token=dense / tokens,
        energy_spiking_pj_per_token=e_spike, energy_dense_pj_per_token=e_dense, energy_ratio=e_spike / e_dense,
        membrane_mean=float(stats.membrane_mean), membrane_std=float(stats.membrane_std),
    )  # fmt: skip


def spiking_layers(model: nn.Module) -> list[tuple[int, int]]:
    """(block index, read-out fan-out) of each spiking layer, in the order the model reports ``spike_stats``."""
    from s3cmn.modeling.population import PopulationLIFLayer
    from s3cmn.modeling.spiking import LIFLayer

    return [(m.layer_idx, m.out_proj.out_features) for m in model.modules()
            if isinstance(m, (LIFLayer, PopulationLIFLayer))]  # fmt: skip


def model_sparsity(model: nn.Module, spike_stats: list[Any] | None, tokens: int) -> list[LayerSparsity]:
    """One :class:`LayerSparsity` per spiking layer of ``model`` from the merged stats of an evaluation."""
    if not spike_stats:
        return []
    layers = spiking_layers(model)
    if len(layers) != len(spike_stats):
        raise ValueError(f"{len(spike_stats)} spike statistics for {len(layers)} spiking layers in the model")
    return [layer_sparsity(s, layer, fan_out, tokens) for s, (layer, fan_out) in zip(spike_stats, layers, strict=True)]

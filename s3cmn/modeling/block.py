"""The S³CMN block: an ordered list of pre-norm residual sub-layers, each a mixer from the registry.

``config.resolved_block_mixers()`` names the sub-layers in order (by default, from the flags: Hyena →
state-space mixer → LIF spiking → memory read → MLP; with ``use_liquid`` the Mamba–liquid–spiking integration
in place of the state-space mixer and the LIF layer; the LiquidLM layout attention → reservoir → MLP for
``block_type = "reservoir"``). Each sub-layer is a pair (norm, mixer) and the block is one loop::

    for norm, mixer in sub-layers:  x = x + dropout(mixer(norm(x), state).y)

The memory read is present only in the blocks of ``config.memory_layer_indices()``; it stages what the
block writes in the memory bank the block is given (the LM commits it after the whole forward).

``MIXERS`` maps the names that ``S3CMNConfig.block_mixers`` lists to a :class:`MixerSpec`: the mixer's class
(every one follows :mod:`s3cmn.modeling.mixer`'s contract) and where the block keeps it. The ``slot`` is the
block's attribute, so it is the checkpoint key prefix (``layers.0.hyena.*``, ``layers.0.hyena_norm.*``) and
the key of the mixer's state in the block's state; a kind listed twice gets ``ssm_1`` / ``ssm_norm_1``. The
memory read (``reads_memory``) takes the model's memory bank as a third argument of ``forward``/``step``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from s3cmn.model_config import S3CMNConfig
from s3cmn.modeling.cache import LayerState
from s3cmn.modeling.hyena import HyenaOperator
from s3cmn.modeling.integration import IntegratedMixer
from s3cmn.modeling.mamba import MambaMixer
from s3cmn.modeling.memory_read import MemoryReadMixer
from s3cmn.modeling.mixer import MixerOutput
from s3cmn.modeling.mlp import MLP
from s3cmn.modeling.population import PopulationLIFLayer
from s3cmn.modeling.reservoir import CausalSelfAttention, TimeAwareReservoir
from s3cmn.modeling.s4d import S4DMixer
from s3cmn.modeling.spiking import LIFLayer
from s3cmn.ops.dropout import Dropout

if TYPE_CHECKING:
    from s3cmn.memory.bank import MemoryBank


@dataclass(frozen=True)
class MixerSpec:
    """How to build one kind of mixer and where the block keeps it.

    ``cls``: the mixer class, built as ``cls(config, layer_idx)``. ``slot``/``norm``: the block attributes of
    the mixer and of its pre-norm (checkpoint keys; the mixer's state key is ``slot``). ``residual_dropout``:
    the block applies its dropout to ``y`` before the residual add (off for mixers that already drop their
    output, and for the gated memory read). ``reads_memory``: the block hands it the memory bank as a third
    argument. ``reports``: the ``BlockOutput`` field its ``stats`` go to.
    """

    cls: type[nn.Module]
    slot: str
    norm: str
    residual_dropout: bool = True
    reads_memory: bool = False
    reports: Literal["spike_stats", "memory_stats"] | None = None

    def __call__(self, config: S3CMNConfig, layer_idx: int) -> nn.Module:
        """Build the mixer of block ``layer_idx``."""
        return self.cls(config, layer_idx)


# The names are s3cmn.model_config.MIXER_KINDS, which the config checks block_mixers against (a test keeps them equal).
MIXERS: dict[str, MixerSpec] = {
    "hyena": MixerSpec(HyenaOperator, "hyena", "hyena_norm"),
    "mamba": MixerSpec(MambaMixer, "ssm", "ssm_norm"),
    "s4d": MixerSpec(S4DMixer, "ssm", "ssm_norm"),
    "lif": MixerSpec(LIFLayer, "spiking", "spike_norm", reports="spike_stats"),
    "population_lif": MixerSpec(PopulationLIFLayer, "spiking", "spike_norm", reports="spike_stats"),
    "integration": MixerSpec(IntegratedMixer, "integration", "integration_norm", reports="spike_stats"),
    "memory": MixerSpec(MemoryReadMixer, "memory_reader", "memory_norm", residual_dropout=False, reads_memory=True,
                        reports="memory_stats"),
    "attention": MixerSpec(CausalSelfAttention, "attention", "attention_norm", residual_dropout=False),
    "reservoir": MixerSpec(TimeAwareReservoir, "reservoir", "reservoir_norm", residual_dropout=False),
    "mlp": MixerSpec(MLP, "mlp", "mlp_norm", residual_dropout=False),
}


@dataclass
class BlockOutput:
    """A block's output: the residual stream, its recurrent state and its statistics."""

    hidden: Tensor  # (B, T, D) or (B, D) in step mode
    state: LayerState
    spike_stats: Any = None  # SpikeStats of the spiking sub-layer (lif, population_lif, integration), if any
    memory_stats: Any = None  # MemoryReadStats of the memory read, if the block has one


class SubLayer(NamedTuple):
    """One sub-layer of a block: its registry name, spec, and the block attributes of its mixer and norm."""

    kind: str
    spec: MixerSpec
    slot: str
    norm: str


class S3CMNBlock(nn.Module):
    """One S³CMN block (module docstring): pre-norm residual around each sub-layer of ``sublayers``.

    ``forward`` runs over a whole segment (training, prefill); ``step`` runs one token. Both take and return
    the block's recurrent state, a dict keyed by sub-layer slot (``{"hyena": ..., "ssm": ..., "spiking": ...}``),
    and the memory bank (or None) that the memory read looks its store up in.
    """

    def __init__(self, config: S3CMNConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.dropout = Dropout(config.dropout)
        self.sublayers: list[SubLayer] = []
        reads_memory_here = layer_idx in config.memory_layer_indices()
        repeats: Counter[str] = Counter()
        for kind in config.resolved_block_mixers():
            if kind == "memory" and not reads_memory_here:
                continue
            spec = MIXERS[kind]
            suffix = f"_{repeats[spec.slot]}" if repeats[spec.slot] else ""  # a repeated kind: ssm, ssm_1, ...
            repeats[spec.slot] += 1
            sub = SubLayer(kind, spec, spec.slot + suffix, spec.norm + suffix)
            self.add_module(sub.norm, nn.LayerNorm(config.hidden_dim, eps=config.layer_norm_eps))
            self.add_module(sub.slot, spec(config, layer_idx))
            self.sublayers.append(sub)
        # LayerScale: a learned per-channel scale of each sub-layer's output (keys layers.<i>.layer_scale.<slot>)
        self.layer_scale = None
        if config.layer_scale_init is not None:
            self.layer_scale = nn.ParameterDict({
                sub.slot: nn.Parameter(torch.full((config.hidden_dim,), config.layer_scale_init))
                for sub in self.sublayers})

    @property
    def reads_memory(self) -> bool:
        return any(sub.spec.reads_memory for sub in self.sublayers)

    def pairs(self) -> list[tuple[str, nn.Module, nn.Module]]:
        """(slot, norm, mixer) of every sub-layer, in order."""
        return [(sub.slot, getattr(self, sub.norm), getattr(self, sub.slot)) for sub in self.sublayers]

    def forward(self, x: Tensor, state: LayerState | None = None, memory: MemoryBank | None = None) -> BlockOutput:
        """x (B, T, D) -> BlockOutput; ``state`` None starts from zeros, otherwise continues from it."""
        return self._run(x, state or {}, memory, step=False)

    def step(self, x: Tensor, state: LayerState | None, memory: MemoryBank | None = None) -> BlockOutput:
        """x (B, D) -> BlockOutput for one token; cost independent of the tokens before (Hyena: bounded)."""
        return self._run(x, state or {}, memory, step=True)

    def _run(self, x: Tensor, state: LayerState, memory: MemoryBank | None, step: bool) -> BlockOutput:
        if step and not self.training and not torch.is_grad_enabled():
            return self._decode(x, state, memory)
        new_state: LayerState = {}
        reports: dict[str, Any] = {"spike_stats": None, "memory_stats": None}
        for sub in self.sublayers:
            mixer = getattr(self, sub.slot)
            h = getattr(self, sub.norm)(x)  # (B, T, D)
            run = mixer.step if step else mixer.forward
            extra = (memory,) if sub.spec.reads_memory else ()
            out: MixerOutput = run(h, state.get(sub.slot), *extra)
            if out.state:
                new_state[sub.slot] = out.state
            y = out.y if self.layer_scale is None else out.y * self.layer_scale[sub.slot]
            x = x + (self.dropout(y) if sub.spec.residual_dropout else y)  # (B, T, D)
            if sub.spec.reports is not None:
                reports[sub.spec.reports] = out.stats
        return BlockOutput(x, new_state, **reports)

    def _decode(self, x: Tensor, state: LayerState, memory: MemoryBank | None) -> BlockOutput:
        """``_run`` for one token in eval mode without gradients: the same sums with the norms applied as
        functions, no dropout (eval) and the layer scale fused into the residual add (decode-time overhead)."""
        new_state: LayerState = {}
        reports: dict[str, Any] = {"spike_stats": None, "memory_stats": None}
        scales = None if self.layer_scale is None else self.layer_scale._parameters  # slot -> (D,), no copy
        for sub in self.sublayers:
            norm = getattr(self, sub.norm)
            h = F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)  # (B, D)
            mixer = getattr(self, sub.slot)
            out: MixerOutput = mixer.step(h, state.get(sub.slot), memory) if sub.spec.reads_memory else mixer.step(
                h, state.get(sub.slot))
            if out.state:
                new_state[sub.slot] = out.state
            x = x + out.y if scales is None else torch.addcmul(x, out.y, scales[sub.slot])  # (B, D)
            if sub.spec.reports is not None:
                reports[sub.spec.reports] = out.stats
        return BlockOutput(x, new_state, **reports)

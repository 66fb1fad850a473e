"""The mixer contract: what every sequence mixer of a block takes and returns, and the registry of mixers.

A mixer is a module over the residual stream (B, T, D) built from ``(config, layer_idx)``::

    out = mixer(x, state)          x (B, T, D) -> MixerOutput(y (B, T, D), state, stats); parallel over T
    out = mixer.step(x, state)     x (B, D)    -> MixerOutput(y (B, D), state, stats); one token
    state = mixer.init_state(batch, like)      the state before the first token (``like``: device, dtype)

``state`` is a dict of batch-first tensors (so the generation cache can reorder beams with one
``index_select``); ``None`` means the zero state, the same as ``init_state``. ``forward`` continues from the
state it is given, so a forward over [a, b] equals a forward over a, then over b from a's state; ``step``
equals ``forward`` token by token. ``stats`` carries what the mixer measures (``SpikeStats`` of the spiking
mixers, ``MemoryReadStats`` of the memory read), never printed.

``MIXERS`` maps the names that ``S3CMNConfig.block_mixers`` lists to a :class:`MixerSpec`: how to build the
mixer (its module is imported only when one is built) and where the block keeps it. The ``slot`` is the
block's attribute, so it is the checkpoint key prefix (``layers.0.hyena.*``, ``layers.0.hyena_norm.*``) and
the key of the mixer's state in the block's state; a kind listed twice gets ``ssm_1`` / ``ssm_norm_1``. The
memory read (``reads_memory``) takes the model's memory bank as a third argument of ``forward``/``step``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from torch import Tensor, nn

if TYPE_CHECKING:
    from s3cmn.model_config import S3CMNConfig

__all__ = ["MIXERS", "Mixer", "MixerOutput", "MixerSpec", "MixerState"]

MixerState = dict[str, Tensor]


@dataclass
class MixerOutput:
    """What a mixer returns: ``y`` (B, T, D) or (B, D) in step mode, its ``state`` after the last token, and
    its ``stats`` (None when it measures nothing)."""

    y: Tensor
    state: MixerState
    stats: Any = None


@runtime_checkable
class Mixer(Protocol):
    """The interface of a block's sequence mixer (module docstring)."""

    layer_idx: int

    def forward(self, x: Tensor, state: MixerState | None = None) -> MixerOutput: ...

    def step(self, x: Tensor, state: MixerState | None) -> MixerOutput: ...

    def init_state(self, batch: int, like: Tensor) -> MixerState: ...


@dataclass(frozen=True)
class MixerSpec:
    """How to build one kind of mixer and where the block keeps it.

    ``module``/``cls``: the class, imported on the first build. ``slot``/``norm``: the block attributes of the
    mixer and of its pre-norm (checkpoint keys; the mixer's state key is ``slot``). ``residual_dropout``: the
    block applies its dropout to ``y`` before the residual add (off for mixers that already drop their
    output, and for the gated memory read). ``reads_memory``: the block hands it the memory bank as a third
    argument. ``reports``: the ``BlockOutput`` field its ``stats`` go to.
    """

    module: str
    cls: str
    slot: str
    norm: str
    residual_dropout: bool = True
    reads_memory: bool = False
    reports: Literal["spike_stats", "memory_stats"] | None = None

    def mixer_class(self) -> type[nn.Module]:
        return getattr(importlib.import_module(self.module), self.cls)

    def __call__(self, config: S3CMNConfig, layer_idx: int) -> nn.Module:
        """Build the mixer of block ``layer_idx``."""
        return self.mixer_class()(config, layer_idx)


# The names are s3cmn.model_config.MIXER_KINDS, which the config checks block_mixers against (a test keeps them equal).
MIXERS: dict[str, MixerSpec] = {
    "hyena": MixerSpec("s3cmn.modeling.hyena", "HyenaOperator", "hyena", "hyena_norm"),
    "mamba": MixerSpec("s3cmn.modeling.mamba", "MambaMixer", "ssm", "ssm_norm"),
    "s4d": MixerSpec("s3cmn.modeling.s4d", "S4DMixer", "ssm", "ssm_norm"),
    "lif": MixerSpec("s3cmn.modeling.spiking", "LIFLayer", "spiking", "spike_norm", reports="spike_stats"),
    "population_lif": MixerSpec("s3cmn.modeling.population", "PopulationLIFLayer", "spiking", "spike_norm",
                                reports="spike_stats"),
    "integration": MixerSpec("s3cmn.modeling.integration", "IntegratedMixer", "integration", "integration_norm",
                             reports="spike_stats"),
    "memory": MixerSpec("s3cmn.modeling.memory_read", "MemoryReadMixer", "memory_reader", "memory_norm",
                        residual_dropout=False, reads_memory=True, reports="memory_stats"),
    "attention": MixerSpec("s3cmn.modeling.reservoir", "CausalSelfAttention", "attention", "attention_norm",
                           residual_dropout=False),
    "reservoir": MixerSpec("s3cmn.modeling.reservoir", "TimeAwareReservoir", "reservoir", "reservoir_norm",
                           residual_dropout=False),
    "mlp": MixerSpec("s3cmn.modeling.mlp", "MLP", "mlp", "mlp_norm", residual_dropout=False),
}

"""The mixer contract: what every sequence mixer of a block takes and returns.

A mixer is a module over the residual stream (B, T, D) built from ``(config, layer_idx)``::

    out = mixer(x, state)          x (B, T, D) -> MixerOutput(y (B, T, D), state, stats); parallel over T
    out = mixer.step(x, state)     x (B, D)    -> MixerOutput(y (B, D), state, stats); one token
    state = mixer.init_state(batch, like)      the state before the first token (``like``: device, dtype)

``state`` is a dict of batch-first tensors (so the generation cache can reorder beams with one
``index_select``); ``None`` means the zero state, the same as ``init_state``. ``forward`` continues from the
state it is given, so a forward over [a, b] equals a forward over a, then over b from a's state; ``step``
equals ``forward`` token by token. ``stats`` carries what the mixer measures (``SpikeStats`` of the spiking
mixers, ``MemoryReadStats`` of the memory read), never printed.

The registry of mixers by name, ``MIXERS``, is in :mod:`s3cmn.modeling.block`, which builds blocks from it
(every mixer module imports this contract, so the registry that imports every mixer cannot live here).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from torch import Tensor

__all__ = ["Mixer", "MixerOutput", "MixerState"]

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

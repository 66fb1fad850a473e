"""The memory read as a block sub-layer: :class:`~s3cmn.memory.reader.MemoryReader` behind the mixer contract.

The block hands the mixer the model's memory bank (:class:`~s3cmn.memory.bank.MemoryBank`, or None). The
mixer reads this layer's store (``bank.store(layer_idx)``: None when the layer has none or the pass does not
read, and then the read is 0) and stages the states it reads with, which the LM writes after the whole
forward (``bank.stage``), so no position reads its own segment. It keeps no state: what it remembers lives
in the store, which only changes between forward passes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor

from s3cmn.memory.reader import MemoryReader
from s3cmn.modeling.mixer import MixerOutput, MixerState

if TYPE_CHECKING:
    from s3cmn.memory.bank import MemoryBank

__all__ = ["MemoryReadMixer"]


class MemoryReadMixer(MemoryReader):
    """The memory read of block ``layer_idx``: ``forward(x, state, memory) -> MixerOutput(delta, {}, stats)``.

    A subclass (not a wrapper) of ``MemoryReader`` so the parameters keep their checkpoint names
    (``layers.<i>.memory_reader.q_proj.weight``); ``read`` is the reader's own forward.
    """

    read = MemoryReader.forward  # (h (B, T, D), store) -> (delta, MemoryReadStats)

    def init_state(self, batch: int, like: Tensor) -> MixerState:
        return {}

    def forward(self, x: Tensor, state: MixerState | None = None, memory: MemoryBank | None = None) -> MixerOutput:
        """x (B, T, D), the normed hidden state -> delta (B, T, D) for the residual, ``MemoryReadStats``."""
        store = memory.store(self.layer_idx) if memory is not None else None
        delta, stats = self.read(x, store)  # (B, T, D)
        if memory is not None:
            memory.stage(self.layer_idx, x)
        return MixerOutput(delta, {}, stats)

    def step(self, x: Tensor, state: MixerState | None, memory: MemoryBank | None = None) -> MixerOutput:
        """x (B, D) -> delta (B, D): the read of one token (a query of length 1)."""
        out = self.forward(x.unsqueeze(1), state, memory)  # (B, 1, D)
        return MixerOutput(out.y.squeeze(1), {}, out.stats)

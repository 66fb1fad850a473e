"""The recurrent cache passed in and returned by ``S3CMNForCausalLM`` during generation."""

from __future__ import annotations

import torch
from torch import Tensor

# one block's state: sub-layer slot ("hyena", "ssm", "spiking", ...; see s3cmn.modeling.block.MIXERS) -> that
# mixer's state (a dict of batch-first tensors); stateless sub-layers (memory read, MLP) have no entry
LayerState = dict[str, dict[str, Tensor]]


class S3CMNCache:
    """Per-block mixer states plus the number of tokens already consumed.

    Every state tensor is batch-first, so beams and batches can be reordered with one ``index_select``.
    The memory of the recurrent mixers (S4D, Mamba, LIF) does not grow with the context; Hyena keeps its
    last ``hyena_filter_length`` inputs.
    """

    def __init__(self, num_layers: int) -> None:
        self.layers: list[LayerState] = [{} for _ in range(num_layers)]
        self.seen_tokens = 0

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Tokens consumed so far (the transformers Cache API name)."""
        return self.seen_tokens

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Select batch rows (beam search): every state tensor is indexed along dim 0."""
        for layer in self.layers:
            for state in layer.values():
                for key, value in state.items():
                    state[key] = value.index_select(0, beam_idx.to(value.device))

    def __len__(self) -> int:
        return len(self.layers)

    def __repr__(self) -> str:
        return f"S3CMNCache(num_layers={len(self.layers)}, seen_tokens={self.seen_tokens})"

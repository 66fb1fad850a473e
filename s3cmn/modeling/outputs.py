"""Typed outputs of the S³CMN language model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers.utils import ModelOutput


@dataclass
class S3CMNModelOutput(ModelOutput):
    """What the backbone ``S3CMNModel.forward`` returns (attributes, or keys for the fields that are set).

    hidden: (B, T, E) the final normed hidden states, the input of the LM head.
    cache: the recurrent state after the last token (``S3CMNCache``), or None without a cache.
    blocks: one ``BlockOutput`` per block (its spike and memory-read statistics).
    hidden_states: the input of every block and the final normed state, when asked for.
    """

    hidden: torch.Tensor | None = None
    cache: Any = None
    blocks: list[Any] | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


@dataclass
class S3CMNCausalLMOutput(ModelOutput):
    """What ``S3CMNForCausalLM.forward`` returns.

    loss: mean next-token cross-entropy (when labels are given).
    logits: (B, T, V).
    cache: the recurrent state after the last token (``S3CMNCache``), when ``use_cache``.
    hidden_states: the input of every block and the final normed state, when ``output_hidden_states``.
    spike_stats: one ``SpikeStats`` per block with a spiking layer (counts, firing rate, membrane statistics).
    memory_stats: one ``MemoryReadStats`` per block that reads memory (hit rate, similarity, gate, latency).
    spike_rate: mean firing rate over the spiking layers (0-dim tensor), for progress bars.
    memory_hit_rate: mean hit rate over the memory layers (0-dim tensor).
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    cache: Any = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    spike_stats: list[Any] | None = None
    memory_stats: list[Any] | None = None
    spike_rate: torch.Tensor | None = None
    memory_hit_rate: torch.Tensor | None = None

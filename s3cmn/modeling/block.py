"""The S³CMN block: Hyena → state-space mixer → LIF spiking → memory read → MLP, each pre-norm + residual."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from s3cmn.config import S3CMNConfig
from s3cmn.modeling.cache import LayerState
from s3cmn.modeling.mlp import MLP


def build_ssm(config: S3CMNConfig, layer_idx: int) -> nn.Module | None:
    """The state-space mixer chosen by ``config.ssm_type`` (None for "none")."""
    if config.ssm_type == "mamba":
        from s3cmn.modeling.mamba import MambaMixer

        return MambaMixer(config, layer_idx)
    if config.ssm_type == "s4d":
        from s3cmn.modeling.s4d import S4DMixer

        return S4DMixer(config, layer_idx)
    return None


@dataclass
class BlockOutput:
    """A block's output: the residual stream, its recurrent state and its statistics."""

    hidden: Tensor  # (B, T, D) or (B, D) in step mode
    state: LayerState
    spike_stats: Any = None
    memory_stats: Any = None
    memory_input: Tensor | None = None  # (B, T, D) the normed hidden state the memory reads with, for writing


class S3CMNBlock(nn.Module):
    """One S³CMN block (DESIGN.md, "The network"), pre-norm residual around each sub-layer.

    ``forward`` runs over a whole segment (training, prefill); ``step`` runs one token. Both take and
    return the block's recurrent state (``{"hyena": ..., "ssm": ..., "spiking": ...}``).
    """

    def __init__(self, config: S3CMNConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        D, eps = config.hidden_dim, config.layer_norm_eps
        self.dropout = nn.Dropout(config.dropout)
        self.hyena_norm = self.hyena = None
        if config.use_hyena:
            from s3cmn.modeling.hyena import HyenaOperator

            self.hyena_norm = nn.LayerNorm(D, eps=eps)
            self.hyena = HyenaOperator(config, layer_idx)
        self.integration_norm = self.integration = None
        if config.use_liquid:  # steps 2-3 become one Mamba–liquid–spiking mixer (state key "integration")
            from s3cmn.modeling.integration import IntegratedMixer

            self.integration_norm = nn.LayerNorm(D, eps=eps)
            self.integration = IntegratedMixer(config, layer_idx)
        self.ssm = build_ssm(config, layer_idx) if not config.use_liquid else None
        self.ssm_norm = nn.LayerNorm(D, eps=eps) if self.ssm is not None else None
        self.spike_norm = self.spiking = None
        if config.use_spiking and not config.use_liquid:
            from s3cmn.modeling.population import PopulationLIFLayer
            from s3cmn.modeling.spiking import LIFLayer

            self.spike_norm = nn.LayerNorm(D, eps=eps)
            self.spiking = (PopulationLIFLayer if config.use_population_coding else LIFLayer)(config, layer_idx)
        self.memory_norm = self.memory_reader = None
        if layer_idx in config.memory_layer_indices():
            from s3cmn.memory.reader import MemoryReader

            self.memory_norm = nn.LayerNorm(D, eps=eps)
            self.memory_reader = MemoryReader(config, layer_idx)
        self.mlp_norm = nn.LayerNorm(D, eps=eps)
        self.mlp = MLP(config, layer_idx)

    @property
    def reads_memory(self) -> bool:
        return self.memory_reader is not None

    def forward(self, x: Tensor, state: LayerState | None = None, memory: Any = None) -> BlockOutput:
        """x (B, T, D) -> BlockOutput; ``state`` None starts from zeros, otherwise continues from it."""
        return self._run(x, state or {}, memory, step=False)

    def step(self, x: Tensor, state: LayerState | None, memory: Any = None) -> BlockOutput:
        """x (B, D) -> BlockOutput for one token; cost independent of the tokens before (Hyena: bounded)."""
        return self._run(x, state or {}, memory, step=True)

    def _run(self, x: Tensor, state: LayerState, memory: Any, step: bool) -> BlockOutput:
        new_state: LayerState = {}

        def mix(name: str, module: nn.Module, inp: Tensor) -> Any:
            run = module.step if step else module.forward
            out = run(inp, state.get(name))
            new_state[name] = out[1]
            return out

        # 1. Hyena: long implicit convolution with gating.
        if self.hyena is not None:
            y, _ = mix("hyena", self.hyena, self.hyena_norm(x))
            x = x + self.dropout(y)  # (B, T, D)
        # 2. State-space mixer (S4D or Mamba).
        if self.ssm is not None:
            y, _ = mix("ssm", self.ssm, self.ssm_norm(x))
            x = x + self.dropout(y)
        # 3. LIF spiking layer: the residual carries the projected spikes.
        spike_stats = None
        if self.spiking is not None:
            y, _, spike_stats = mix("spiking", self.spiking, self.spike_norm(x))
            x = x + self.dropout(y)
        # 2-3 with use_liquid: the Mamba–liquid–spiking integration in place of the two.
        if self.integration is not None:
            y, _, spike_stats = mix("integration", self.integration, self.integration_norm(x))
            x = x + self.dropout(y)
        # 4. Memory read: top-k retrieval from the external store, attention, gate (a delta to the residual).
        memory_stats = memory_input = None
        if self.memory_reader is not None:
            memory_input = self.memory_norm(x)
            query = memory_input.unsqueeze(1) if step else memory_input  # (B, T, D)
            delta, memory_stats = self.memory_reader(query, memory)
            x = x + (delta.squeeze(1) if step else delta)
        # 5. MLP.
        x = x + self.mlp(self.mlp_norm(x))
        return BlockOutput(x, new_state, spike_stats, memory_stats, memory_input)

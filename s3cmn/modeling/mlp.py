"""The position-wise MLP of each block."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from s3cmn.model_config import S3CMNConfig
from s3cmn.modeling.decode import linear
from s3cmn.modeling.mixer import MixerOutput, MixerState
from s3cmn.ops.dropout import Dropout


class MLP(nn.Module):
    """fc (D -> mlp_ratio·D), GELU, proj (-> D), dropout. Position-wise (trivially causal), so its state is
    empty; a mixer like the others (``s3cmn.modeling.mixer``) so the block treats every sub-layer alike."""

    def __init__(self, config: S3CMNConfig, layer_idx: int) -> None:
        super().__init__()
        inner = int(config.mlp_ratio * config.hidden_dim)
        self.fc = nn.Linear(config.hidden_dim, inner)
        self.proj = nn.Linear(inner, config.hidden_dim)
        self.dropout = Dropout(config.dropout)
        self.layer_idx = layer_idx

    def init_state(self, batch: int, like: Tensor) -> MixerState:
        return {}

    def forward(self, x: Tensor, state: MixerState | None = None) -> MixerOutput:
        """x (B, T, D) or (B, D) -> y of the same shape."""
        return MixerOutput(self.dropout(self.proj(F.gelu(self.fc(x)))), {})  # (..., D)

    def step(self, x: Tensor, state: MixerState | None) -> MixerOutput:
        """x (B, D) -> y (B, D); without gradients in eval mode through the decode path's Linears."""
        if torch.is_grad_enabled() or self.training:
            return self.forward(x)
        return MixerOutput(linear(self.proj, F.gelu(linear(self.fc, x))), {})  # (B, D)

"""The position-wise MLP of each block."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from s3cmn.config import S3CMNConfig


class MLP(nn.Module):
    """fc (D -> mlp_ratio·D), GELU, proj (-> D), dropout. Position-wise, so trivially causal."""

    def __init__(self, config: S3CMNConfig, layer_idx: int) -> None:
        super().__init__()
        inner = int(config.mlp_ratio * config.hidden_dim)
        self.fc = nn.Linear(config.hidden_dim, inner)
        self.proj = nn.Linear(inner, config.hidden_dim)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x))))  # (..., D)

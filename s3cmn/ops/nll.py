"""Per-token negative log-likelihood in float64, and the device a model runs on (shared by the perplexity
scoring and the next-token memory's LM pass)."""

from __future__ import annotations

import itertools

import torch
from torch import Tensor


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer, for a fully quantized model)."""
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        return tensor.device
    return torch.device("cpu")


def nll_float64(logits: Tensor, targets: Tensor, chunk: int = 1024) -> Tensor:
    """-log softmax(logits)[target] per row, as float64. logits (M, V), targets (M,) -> (M,).

    ``m + log Σ exp(l - m) - l[target]`` with the exponentials summed in float32 (fast; exact for equal logits,
    a sum of ones) and the log and the differences in float64, so a uniform model scores exactly log V.
    """
    out = torch.empty(logits.shape[0], dtype=torch.float64, device=logits.device)
    for i in range(0, logits.shape[0], chunk):
        rows = logits[i : i + chunk].float()  # (m, V)
        top = rows.max(-1, keepdim=True).values  # (m, 1)
        total = torch.exp(rows - top).sum(-1)  # (m,) float32
        picked = rows.gather(-1, targets[i : i + chunk, None]).squeeze(-1)  # (m,)
        out[i : i + chunk] = top.squeeze(-1).double() + torch.log(total.double()) - picked.double()
    return out

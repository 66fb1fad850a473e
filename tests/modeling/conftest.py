"""The LM-level contract shared by the modeling tests (one harness, not a copy per mixer file): causality of the
logits, decoding token by token == one full forward, gradients into every parameter, save -> load identical."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from s3cmn import S3CMNForCausalLM
from s3cmn.modeling.outputs import S3CMNCausalLMOutput


def lm_causal_and_decodes_like_forward(model: S3CMNForCausalLM, ids: torch.Tensor, split: int,
                                       prefill: int) -> S3CMNCausalLMOutput:
    """Changing the tokens from ``split`` on leaves the earlier logits; a ``prefill``-token forward then one step
    a token gives the full forward's logits. Returns the full forward's output."""
    changed = ids.clone()
    changed[:, split:] = (ids[:, split:] + 1) % model.config.vocab_size
    with torch.no_grad():
        full = model(ids)
        torch.testing.assert_close(model(changed).logits[:, :split], full.logits[:, :split], rtol=0, atol=1e-6)
        out = model(ids[:, :prefill], use_cache=True)
        logits = [out.logits]
        for t in range(prefill, ids.shape[1]):
            out = model(ids[:, t : t + 1], cache=out.cache, use_cache=True)
            logits.append(out.logits)
    torch.testing.assert_close(torch.cat(logits, 1), full.logits, rtol=1e-5, atol=1e-5)
    return full


def lm_trains_and_round_trips(model: S3CMNForCausalLM, ids: torch.Tensor, folder: Path) -> S3CMNForCausalLM:
    """One backward reaches every trainable parameter; save_pretrained -> from_pretrained gives identical
    logits. Returns the loaded model."""
    model.train()
    model(ids, labels=ids).loss.backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    model.eval().save_pretrained(folder)
    loaded = S3CMNForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=0)
    return loaded


@pytest.fixture
def check_decoding() -> Callable[..., S3CMNCausalLMOutput]:
    return lm_causal_and_decodes_like_forward


@pytest.fixture
def check_training_and_save() -> Callable[..., S3CMNForCausalLM]:
    return lm_trains_and_round_trips

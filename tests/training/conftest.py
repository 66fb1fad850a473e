"""Helpers of the training tests."""

from __future__ import annotations

from typing import Any

from s3cmn import S3CMNConfig, S3CMNForCausalLM
from s3cmn.training.loop import seed_everything


def tiny_lm(**overrides: Any) -> S3CMNForCausalLM:
    """A seeded ~20k-parameter LM over a 50-token vocabulary, without the external memory."""
    fields = dict(vocab_size=50, embedding_dim=16, hidden_dim=16, num_layers=1, spiking_units=8, mamba_d_state=4,
                  hyena_filter_dim=8, hyena_filter_length=16, use_memory=False)
    seed_everything(0)
    return S3CMNForCausalLM(S3CMNConfig.from_preset("tiny", **{**fields, **overrides}))

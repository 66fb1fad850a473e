"""Fixtures of the quantization tests: tiny S3CMN models and the bitsandbytes availability switch."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from s3cmn import S3CMNConfig, S3CMNForCausalLM

HAS_BNB = importlib.util.find_spec("bitsandbytes") is not None
BACKENDS = ["torch", pytest.param("bnb", marks=pytest.mark.skipif(not HAS_BNB, reason="bitsandbytes not installed"))]


def tiny_config(**overrides) -> S3CMNConfig:
    """Hyena + Mamba + MLP (+ LIF when asked), no memory, no dropout: small enough for a test of seconds."""
    fields = dict(
        vocab_size=512, embedding_dim=64, hidden_dim=64, num_layers=2, spiking_units=32, mamba_d_state=8,
        hyena_filter_dim=16, hyena_filter_length=32, use_memory=False, use_spiking=False, dropout=0.0,
        embedding_dropout=0.0, max_position_embeddings=64,
    )  # fmt: skip
    return S3CMNConfig.from_preset("tiny", **{**fields, **overrides})


def tiny_model(**overrides) -> S3CMNForCausalLM:
    torch.manual_seed(0)
    return S3CMNForCausalLM(tiny_config(**overrides)).eval()


@pytest.fixture
def make_model():
    """``make_model(**config_overrides)``: a seeded tiny model in eval mode."""
    return tiny_model


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    """Each 8-bit backend that can run here (bnb is skipped without bitsandbytes)."""
    return request.param


@pytest.fixture
def ids() -> torch.Tensor:
    return torch.randint(0, 512, (4, 32), generator=torch.Generator().manual_seed(1))

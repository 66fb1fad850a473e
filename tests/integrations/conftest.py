"""A tiny S3CMN checkpoint saved as training saves one: weights, memory, tokenizer, trainer_state.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from s3cmn import S3CMNConfig, S3CMNForCausalLM
from s3cmn.data import load_tokenizer

TRAINED_LENGTH = 32


def tiny_lm_config(**overrides) -> S3CMNConfig:
    """The tiny preset, narrowed; a wide init so that the model's distributions are far from uniform."""
    fields = dict(embedding_dim=32, hidden_dim=32, num_layers=2, num_attention_heads=4, spiking_units=16,
                  s4d_d_state=8, mamba_d_state=4, hyena_filter_dim=8, hyena_filter_length=64, memory_size=64,
                  num_clusters=2, memory_compression_dim=8, memory_nprobe=2, dropout=0.0, embedding_dropout=0.0,
                  initializer_range=0.3)
    return S3CMNConfig.from_preset("tiny", **{**fields, **overrides})


@pytest.fixture(scope="session")
def bert_tokenizer(shared_data: Path):
    return load_tokenizer(str(shared_data / "tokenizers" / "bert-base-uncased"))


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory, bert_tokenizer, wikitext_valid: str) -> Path:
    """A folder like ``runs/x/best`` (memory filled from real text), trained length TRAINED_LENGTH."""
    torch.manual_seed(0)
    model = S3CMNForCausalLM(tiny_lm_config()).eval()
    ids = torch.tensor(bert_tokenizer(wikitext_valid[:20000], add_special_tokens=False).input_ids[:1024])
    with torch.no_grad():
        for block in ids.view(-1, 128):
            model(block[None], write_memory=True)
    folder = tmp_path_factory.mktemp("ckpt") / "best"
    model.save_pretrained(folder)
    bert_tokenizer.save_pretrained(folder)
    (folder / "trainer_state.json").write_text(json.dumps({"step": 1, "sequence_length": TRAINED_LENGTH}))
    return folder

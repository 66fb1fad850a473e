"""Fixtures of the evaluation tests: closed-form toy models, a tiny S3CMN with memory, a saved checkpoint."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn

from s3cmn import S3CMNConfig, S3CMNForCausalLM


class ConstantLM(nn.Module):
    """A context-free model: the same logits (V,) at every position (uniform when all zero)."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = nn.Parameter(logits.clone(), requires_grad=False)  # (V,)

    def forward(self, ids: torch.Tensor, **kwargs: Any) -> SimpleNamespace:
        return SimpleNamespace(logits=self.logits.expand(*ids.shape, -1))  # (B, T, V)


def tiny_config(vocab_size: int = 97, **overrides: Any) -> S3CMNConfig:
    """One block with a small memory (searchable after 32 entries, 4 written per 16-token window)."""
    fields = dict(
        vocab_size=vocab_size, hidden_dim=32, embedding_dim=32, num_layers=1, memory_size=64, num_clusters=4,
        memory_compression_dim=8, memory_write_stride=4, spiking_units=16, s4d_d_state=8, mamba_d_state=4,
        hyena_filter_dim=8, hyena_filter_length=32, dropout=0.0, embedding_dropout=0.0, attention_dropout=0.0,
        spike_threshold=0.05,  # low enough that the untrained layer spikes
    )
    return S3CMNConfig.from_preset("tiny", **{**fields, **overrides})


@pytest.fixture(autouse=True)
def _one_thread() -> Any:
    """One intra-op thread: these tensors are tiny, and on a loaded 2-core machine OpenMP barriers between two
    threads make each op wait for a descheduled thread (measured: 70x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def constant_lm() -> type[ConstantLM]:
    return ConstantLM


@pytest.fixture
def tiny_model() -> Any:
    def make(vocab_size: int = 97, **overrides: Any) -> S3CMNForCausalLM:
        torch.manual_seed(0)
        return S3CMNForCausalLM(tiny_config(vocab_size, **overrides)).eval()

    return make


@pytest.fixture(scope="session")
def bert_tokenizer(shared_data: Path) -> Any:
    from s3cmn.data import load_tokenizer

    return load_tokenizer(str(shared_data / "tokenizers" / "bert-base-uncased"))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory, bert_tokenizer: Any) -> Path:
    """An untrained tiny S3CMN (bert-base-uncased vocabulary) saved with its tokenizer and an empty memory."""
    folder = tmp_path_factory.mktemp("eval") / "ckpt"
    torch.manual_seed(0)
    model = S3CMNForCausalLM(tiny_config(len(bert_tokenizer), num_layers=2))
    model.save_pretrained(folder)
    bert_tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def wikitext_dir(shared_data: Path) -> Path:
    return shared_data / "wikitext-2-raw"


# --- dynamic evaluation (test_dynamic*.py): a random token stream, the held-out MS, the settings --------------
DYNAMIC_CONTEXT, DYNAMIC_STRIDE = 32, 16


def random_stream(n: int, seed: int, lo: int = 1, hi: int = 97) -> torch.Tensor:
    """``n`` token ids drawn uniformly from [lo, hi) with ``seed``."""
    return torch.randint(lo, hi, (n,), generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def model_and_ms(tiny_model: Any) -> tuple[S3CMNForCausalLM, dict[str, torch.Tensor]]:
    """The tiny model and its mean squared gradient over a random stream (2 windows per step)."""
    from s3cmn.nexttoken.dynamic import gradient_ms

    model = tiny_model()
    return model, gradient_ms(model, random_stream(200, seed=5), DYNAMIC_CONTEXT, DYNAMIC_STRIDE, 2)


def dynamic_settings(ms: dict[str, torch.Tensor], **changes: Any) -> Any:
    """DynamicSettings at lr 3e-3, decay 1e-2, every parameter, 2 windows per step, with ``changes``."""
    from s3cmn.nexttoken.dynamic import DynamicSettings

    return DynamicSettings(**{"lr": 3e-3, "decay": 1e-2, "subset": "all", "windows_per_step": 2, "ms": ms, **changes})

"""The size guard: exact parameter counts from the config alone, a documented activation estimate, and a
one-line refusal (or a warning under force) when the estimate exceeds the free memory."""

from __future__ import annotations

import logging

import pytest
import torch

from s3cmn.model_config import S3CMNConfig
from s3cmn.modeling.lm import S3CMNForCausalLM
from s3cmn.run_config import TrainingConfig
from s3cmn.training import size_guard
from s3cmn.training.size_guard import (
    ACTIVATION_WIDTHS,
    available_memory,
    check_training_fits,
    count_parameters,
    estimate_training_size,
)
from s3cmn.training.state import TrainingError


@pytest.mark.parametrize("preset, overrides", [
    ("tiny", {}),
    ("small", {}),
    ("tiny", {"use_liquid": True, "num_layers": 3, "memory_layers": [0, -1]}),
    ("tiny", {"embedding_dim": 64, "tie_word_embeddings": False, "position_embedding": "learned"}),
    ("liquidlm", {}),
])  # fmt: skip
def test_parameter_count_from_the_config_equals_the_built_models(preset, overrides) -> None:
    config = S3CMNConfig.from_preset(preset, **overrides)
    model = S3CMNForCausalLM(config)
    assert count_parameters(config) == (sum(p.numel() for p in model.parameters()),
                                        sum(b.numel() for b in model.buffers()))


def test_a_billion_layers_is_estimated_without_allocating() -> None:
    config = S3CMNConfig.from_preset("tiny", num_layers=1_000_000_000)
    one_block = count_parameters(S3CMNConfig.from_preset("tiny", num_layers=2))[0] - \
        count_parameters(S3CMNConfig.from_preset("tiny", num_layers=1))[0]
    estimate = estimate_training_size(config, TrainingConfig(batch_size=8, sequence_length=128))
    assert estimate.parameters > 1_000_000_000 * one_block * 0.99
    assert estimate.gradients_bytes == 4 * estimate.parameters
    assert estimate.optimizer_bytes == 8 * estimate.parameters
    assert estimate.total_bytes > 2**50


def test_activations_scale_with_the_batch_shape() -> None:
    config = S3CMNConfig.from_preset("tiny")
    small = estimate_training_size(config, TrainingConfig(batch_size=2, sequence_length=64))
    large = estimate_training_size(config, TrainingConfig(batch_size=4, sequence_length=128))
    assert large.activations_bytes == 4 * small.activations_bytes
    assert large.weights_bytes == small.weights_bytes


def _saved_bytes(model: S3CMNForCausalLM, batch: int, length: int) -> int:
    """Bytes of the tensors autograd keeps for backward (parameters excluded), each storage once."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    ids = torch.randint(0, model.config.vocab_size, (batch, length))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(ids, labels=ids, use_cache=False, write_memory=False)
    return sum(storages.values())


def test_the_activation_width_covers_what_autograd_keeps_per_token_and_block() -> None:
    config = S3CMNConfig.from_preset("tiny", vocab_size=500, num_layers=2)
    model = S3CMNForCausalLM(config).train()
    slope = (_saved_bytes(model, 2, 128) - _saved_bytes(model, 2, 32)) / (2 * 96 * config.num_layers)  # per token
    estimated = 4 * ACTIVATION_WIDTHS * config.hidden_dim
    assert estimated / 2 < slope <= estimated, (slope, estimated)


def test_the_free_ram_is_read_from_proc_meminfo() -> None:
    free, where = available_memory(torch.device("cpu"))
    assert free > 0 and "MemAvailable" in where


def test_a_run_that_does_not_fit_is_refused_in_one_line_naming_both_numbers(monkeypatch) -> None:
    monkeypatch.setattr(size_guard, "available_memory", lambda device: (2**20, "available in RAM (MemAvailable)"))
    config = S3CMNConfig.from_preset("tiny")
    with pytest.raises(TrainingError) as err:
        check_training_fits(config, TrainingConfig(batch_size=8, sequence_length=128), torch.device("cpu"))
    message = str(err.value)
    assert "\n" not in message
    assert "GiB to train (4.66M params" in message and "but only 0.000977 GiB is available" in message
    assert "--force" in message


def test_force_trains_anyway_with_a_warning(monkeypatch, caplog) -> None:
    monkeypatch.setattr(size_guard, "available_memory", lambda device: (2**20, "available in RAM (MemAvailable)"))
    config = S3CMNConfig.from_preset("tiny")
    with caplog.at_level(logging.WARNING, logger="s3cmn.training.size_guard"):
        estimate = check_training_fits(config, TrainingConfig(batch_size=8, sequence_length=128, force=True),
                                       torch.device("cpu"))
    assert estimate.total_bytes > 2**20
    assert "training anyway (--force)" in caplog.text


def test_a_run_that_fits_passes(monkeypatch) -> None:
    monkeypatch.setattr(size_guard, "available_memory", lambda device: (2**40, "available in RAM (MemAvailable)"))
    check_training_fits(S3CMNConfig.from_preset("tiny"), TrainingConfig(), torch.device("cpu"))

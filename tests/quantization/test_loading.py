"""The one model loader (``s3cmn.modeling.loading.load_model``): a saved folder loads to the same outputs, and
each failure is its own error type with a one-line message; the inference and evaluation loaders are it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from s3cmn.modeling.loading import load_model
from s3cmn.quantization import load_for_inference, quantize_model, save_quantized
from s3cmn.training.checkpoint import CheckpointError as TrainingCheckpointError
from s3cmn.utils.checkpoints import (
    CheckpointError,
    CheckpointFormatError,
    CorruptCheckpointError,
    MissingCheckpointError,
)
from tests.quantization.conftest import tiny_model


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("loading") / "fp32"
    tiny_model().save_pretrained(folder)
    return folder


def _one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message and "Traceback" not in message, message
    return message


def test_a_saved_folder_loads_to_the_same_outputs(saved: Path, ids: torch.Tensor) -> None:
    model = load_model(saved)
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, tiny_model()(ids).logits, rtol=0, atol=0)
    assert not model.training


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(MissingCheckpointError) as err:
        load_model(tmp_path / "nowhere")
    assert "does not exist" in _one_line(err)


def test_run_folder_points_to_its_checkpoints(saved: Path, tmp_path: Path) -> None:
    shutil.copytree(saved, tmp_path / "run" / "best")
    with pytest.raises(CheckpointFormatError) as err:
        load_model(tmp_path / "run")
    message = _one_line(err)
    assert "config.json is missing" in message and str(tmp_path / "run" / "best") in message


def test_int8_folder_is_named_as_such(tmp_path: Path, shared_data: Path) -> None:
    from s3cmn.data import load_tokenizer

    model, report = quantize_model(tiny_model(), "torch")
    tokenizer = load_tokenizer(str(shared_data / "tokenizers" / "bert-base-uncased"))
    save_quantized(model, tmp_path / "int8", report, tokenizer)
    with pytest.raises(CheckpointFormatError) as err:
        load_model(tmp_path / "int8")
    assert "int8 checkpoint" in _one_line(err) and "load_for_inference" in str(err.value)
    loaded, _, loaded_report = load_for_inference(tmp_path / "int8")  # the inference loader reads it
    assert loaded_report is not None and loaded_report.backend == "torch"


@pytest.mark.parametrize("damage", ["truncated_weights", "missing_weights", "edited_config"])
def test_corrupt_folder(saved: Path, tmp_path: Path, damage: str) -> None:
    folder = tmp_path / "copy"
    shutil.copytree(saved, folder)
    weights = folder / "model.safetensors"
    if damage == "truncated_weights":
        weights.write_bytes(weights.read_bytes()[:100])
    elif damage == "missing_weights":
        weights.unlink()
    else:
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "hidden_dim": 32}))
    with pytest.raises(CorruptCheckpointError) as err:
        load_model(folder)
    assert str(folder) in _one_line(err)


def test_the_callers_raise_the_same_errors(saved: Path, tmp_path: Path) -> None:
    from s3cmn.evaluation.run import evaluate_checkpoint
    from s3cmn.run_config import DataConfig, EvalConfig

    with pytest.raises(MissingCheckpointError):
        load_for_inference(tmp_path / "nowhere")
    shutil.copytree(saved, tmp_path / "run" / "last")
    with pytest.raises(CheckpointFormatError, match="run/last"):
        evaluate_checkpoint(tmp_path / "run", DataConfig(), EvalConfig())
    assert TrainingCheckpointError is CheckpointError  # training re-exports the one type
    assert issubclass(MissingCheckpointError, CheckpointError) and issubclass(CheckpointError, ValueError)

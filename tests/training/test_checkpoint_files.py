"""The tensor files of a training checkpoint: damaged bytes are one clear error, whatever they are."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from s3cmn.training.checkpoint import _load_tensors
from s3cmn.utils.checkpoints import CorruptCheckpointError


@pytest.mark.parametrize("seed", range(24))
def test_random_bytes_are_reported_as_a_corrupt_file(tmp_path: Path, seed: int) -> None:
    """Random bytes break torch.load in many ways (UnpicklingError, UnicodeDecodeError, a bad zip...): each one
    is a CorruptCheckpointError naming the file (the reliability script once hit the UnicodeDecodeError)."""
    path = tmp_path / "optimizer.pt"
    path.write_bytes(random.Random(seed).randbytes(2000))
    with pytest.raises(CorruptCheckpointError, match="optimizer.pt is corrupt"):
        _load_tensors(path)


def test_a_tensor_file_loads_and_a_missing_one_is_not_called_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "optimizer.pt"
    torch.save({"state": {}, "param_groups": [{"lr": 0.1}]}, path)
    assert _load_tensors(path)["param_groups"][0]["lr"] == 0.1
    with pytest.raises(FileNotFoundError):
        _load_tensors(tmp_path / "scheduler.pt")

"""Fixtures of the CLI tests: real WikiText-2 excerpts, tiny training flags, a helper that runs a CLI."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from s3cmn.utils.cli_runner import TINY_MODEL, TINY_RUN, CliResult, cli_env, run_cli, start_cli

__all__ = ["TINY_MODEL", "TINY_RUN", "CliResult", "cli_env", "run_cli", "start_cli"]


@pytest.fixture(scope="session")
def text_files(tmp_path_factory, shared_data: Path) -> dict[str, Path]:
    """Excerpts of WikiText-2 (valid for training, test for validation) and a token cache shared by the tests."""
    root = tmp_path_factory.mktemp("text")
    raw = shared_data / "wikitext-2-raw"
    train, valid = root / "train.txt", root / "valid.txt"
    train.write_bytes((raw / "wiki.valid.raw").read_bytes()[:40_000])
    valid.write_bytes((raw / "wiki.test.raw").read_bytes()[:12_000])
    return {"train": train, "valid": valid, "cache": root / "cache",
            "tokenizer": shared_data / "tokenizers" / "bert-base-uncased"}


@pytest.fixture(scope="session")
def train_args(text_files) -> list[str]:
    """Every flag of a tiny training run except --output-dir and the limits."""
    return [*TINY_MODEL, *TINY_RUN, "--train-file", str(text_files["train"]),
            "--validation-file", str(text_files["valid"]), "--tokenizer", str(text_files["tokenizer"]),
            "--cache-dir", str(text_files["cache"])]


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, train_args) -> Path:
    """A finished 4-step run (last and best checkpoints, memory); copy it before changing it."""
    out = tmp_path_factory.mktemp("trained") / "run"
    result = run_cli("train", [*train_args, "--max-steps", "4", "--output-dir", str(out)])
    assert result.returncode == 0, result.output
    return out


@pytest.fixture
def run_copy(trained_run, tmp_path) -> Path:
    """A private copy of the trained run."""
    copy = tmp_path / "run"
    shutil.copytree(trained_run, copy)
    return copy

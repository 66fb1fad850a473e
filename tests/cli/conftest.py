"""Fixtures of the CLI tests: real WikiText-2 excerpts, tiny training flags, a helper that runs a CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

# A model of ~1M parameters (most of them the BERT-vocabulary embedding): a CLI run of a few steps takes
# about as long as the Python start-up. fp32 on the CPU, as everything on these machines.
TINY_MODEL = [
    "--preset", "tiny", "--embedding-dim", "32", "--hidden-dim", "32", "--num-layers", "1", "--spiking-units", "16",
    "--liquid-units", "16", "--hyena-filter-dim", "8", "--hyena-filter-length", "16", "--memory-size", "64",
    "--num-clusters", "4", "--memory-compression-dim", "8",
]
TINY_RUN = [
    "--mixed-precision", "no", "--device", "cpu", "--batch-size", "4", "--sequence-length", "32",
    "--warmup-steps", "2", "--eval-interval", "4", "--eval-batches", "2", "--save-interval", "2",
    "--log-interval", "1", "--num-samples", "0",
]


@dataclass
class Result:
    """A finished CLI process."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def error_lines(self, prog: str) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith(f"{prog}: error:")]


def cli_env() -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1",
               PYTHONUNBUFFERED="1")
    return env


def run_cli(module: str, args: list[str], timeout: float = 120, cwd: Path | None = None) -> Result:
    """``python -m s3cmn.cli.<module> args`` to the end; a run past ``timeout`` fails the test."""
    proc = subprocess.run([sys.executable, "-m", f"s3cmn.cli.{module}", *args], capture_output=True, text=True,
                          timeout=timeout, env=cli_env(), cwd=cwd)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def start_cli(module: str, args: list[str], log: Path) -> subprocess.Popen:
    """Start a CLI in the background, stdout and stderr into ``log``."""
    handle = open(log, "w")  # noqa: SIM115 - closed with the process by the caller's wait
    return subprocess.Popen([sys.executable, "-m", f"s3cmn.cli.{module}", *args], stdout=handle,
                            stderr=subprocess.STDOUT, env=cli_env())


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

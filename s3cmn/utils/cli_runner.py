"""Running the s3cmn command-line tools in a subprocess, as a user does: for the CLI tests and
``scripts/reliability.py`` (one copy of the helpers and of the tiny model's flags)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

TRACEBACK = "Traceback (most recent call last)"
# A model of ~1M parameters (most of them the BERT-vocabulary embedding): a CLI run of a few steps takes
# about as long as the Python start-up. fp32 on the CPU, as everything on these machines.
TINY_MODEL = [
    "--preset", "tiny", "--embedding-dim", "32", "--hidden-dim", "32", "--num-layers", "1", "--spiking-units", "16",
    "--liquid-units", "16", "--hyena-filter-dim", "8", "--hyena-filter-length", "16", "--memory-size", "64",
    "--num-clusters", "4", "--memory-compression-dim", "8",
]  # fmt: skip
TINY_RUN = [
    "--mixed-precision", "no", "--device", "cpu", "--batch-size", "4", "--sequence-length", "32",
    "--warmup-steps", "2", "--eval-interval", "4", "--eval-batches", "2", "--save-interval", "2",
    "--log-interval", "1", "--num-samples", "0",
]  # fmt: skip


@dataclass
class CliResult:
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
    """The environment of a CLI run: offline, one thread, unbuffered output."""
    return dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def cli_command(module: str, args: list[str]) -> list[str]:
    """``python -m s3cmn.cli.<module> args``."""
    return [sys.executable, "-m", f"s3cmn.cli.{module}", *args]


def run_cli(module: str, args: list[str], timeout: float = 120, cwd: Path | None = None,
            stdin: str | None = None) -> CliResult:
    """Run a CLI to its end; ``subprocess.TimeoutExpired`` if it runs past ``timeout`` seconds."""
    proc = subprocess.run(cli_command(module, args), capture_output=True, text=True, timeout=timeout,
                          env=cli_env(), cwd=cwd, input=stdin)  # fmt: skip
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def start_cli(module: str, args: list[str], log: Path, cwd: Path | None = None) -> subprocess.Popen:
    """Start a CLI in the background, stdout and stderr into the file ``log``."""
    handle = open(log, "w")  # noqa: SIM115 - the process owns it until it ends
    return subprocess.Popen(cli_command(module, args), stdout=handle, stderr=subprocess.STDOUT, env=cli_env(),
                            cwd=cwd)  # fmt: skip


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` until it holds; ``TimeoutError`` naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)

"""A CLI start prints no third-party notices (torchao's library loads, triton, torch's _pytree deprecations)."""

from __future__ import annotations

import configparser
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from s3cmn.utils.cli_runner import cli_env, run_cli
from s3cmn.utils.notices import drop_known_notices

REPO = Path(__file__).resolve().parents[2]
THIRD_PARTY = ("torchao", "_pytree", "triton", "Failed to load", "register_constant", "Warning", "warn")


def console_scripts() -> dict[str, str]:
    """Every console script of the package: name -> module (from setup.cfg's entry points)."""
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    lines = [line.strip() for line in config["options.entry_points"]["console_scripts"].splitlines() if line.strip()]
    return {name.strip(): target.split(":")[0].strip() for name, target in (line.split("=") for line in lines)}


def notice_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if any(word in line for word in THIRD_PARTY)]


def test_every_cli_help_is_quiet() -> None:
    scripts = console_scripts()
    assert {"s3cmn-train", "s3cmn-eval", "s3cmn-generate", "s3cmn-memory"} <= set(scripts)
    procs = {name: subprocess.Popen([sys.executable, "-m", module, "--help"], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, env=cli_env())
             for name, module in scripts.items()}  # all at once: each start is mostly imports
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0 and "usage:" in stdout, (name, stderr)
        assert stderr == "", (name, stderr)


def test_loading_a_model_prints_no_third_party_notices(trained_run) -> None:
    # loading the model imports transformers' modeling code, which imports torchao where it is installed
    result = run_cli("generate", [str(trained_run / "last"), "--prompt", "The", "--max-new-tokens", "2"])
    assert result.returncode == 0, result.output
    assert notice_lines(result.stderr) == [], result.stderr


@pytest.mark.parametrize(("logger", "message"), [
    ("torchao", "Failed to load /venv/torchao/_C_mxfp8.cpython-310-x86_64-linux-gnu.so: Could not load this library"),
    ("torchao", "Failed to load /venv/torchao/_C_cutlass_90a.abi3.so: Could not load this library: x"),
    ("torchao.kernel.intmm", "Warning: Detected no triton, on systems without Triton certain kernels will not work"),
    ("torch.utils._pytree", "<enum 'KernelPreference'> is an Enum subclass and is now natively supported by "
     "torch.compile as an opaque value type. Calling register_constant() on Enum subclasses is deprecated and "
     "will be an error in a future release."),
])
def test_only_the_known_notices_are_dropped(logger, message, caplog) -> None:
    drop_known_notices()
    with caplog.at_level(logging.WARNING, logger=logger):
        logging.getLogger(logger).warning(message)
        logging.getLogger(logger).warning("Failed to load the weights: something else")  # not a known notice
    assert [r.getMessage() for r in caplog.records] == ["Failed to load the weights: something else"]

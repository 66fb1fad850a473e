"""scripts/reliability.py: every bad input and interruption ends in a one-line error or a clean stop."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "reliability.py"


@pytest.mark.slow
def test_reliability_script_passes_every_case() -> None:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=900, env=env)
    lines = proc.stdout.splitlines()
    failed = [line for line in lines if line.startswith("FAIL")]
    assert proc.returncode == 0 and not failed, "\n".join(failed) or proc.stdout[-2000:] + proc.stderr[-2000:]
    cases = [line for line in lines if line.startswith("PASS")]
    assert len(cases) >= 35 and lines[-1].startswith(f"reliability: {len(cases)}/{len(cases)} cases passed")

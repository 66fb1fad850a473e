"""Smoke test of benchmarks/bench_kernels.py: a --quick run times every kernel pair and writes its files.

Structure only (every kernel present, finite positive times, the ratio consistent with them), never the
speeds: timing on a shared CI machine is not a contract.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_kernels.py"


def test_quick_run_times_every_kernel_pair(tmp_path, monkeypatch) -> None:
    spec = importlib.util.spec_from_file_location("bench_kernels", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "QUICK_HEAD_SHAPES", [("tiny", 64, 16, 1000)])  # the harness, not the head's size
    out = tmp_path / "kernels.json"
    result = module.main(["--quick", "--threads", "1", "--out", str(out)])
    assert {r["kernel"] for r in result["rows"]} == {"selective_scan", "lif_scan", "dropout", "lm_head_loss",
                                                    "dynamic_update"}
    for row in result["rows"]:
        assert all(math.isfinite(t) and t > 0 for t in row["old_times_ms"] + row["new_times_ms"])
        assert math.isclose(row["speedup"], row["old_ms"] / row["new_ms"])
    assert json.loads(out.read_text())["rows"] == result["rows"]
    assert "lm_head_loss" in out.with_suffix(".md").read_text()

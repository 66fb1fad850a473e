"""Smoke test of scripts/ablation.py: a quick run of two variants trains, validates on held-out training text and
writes a well-formed table. It checks structure, never the numbers (a toy model's loss means nothing)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "ablation.py"


def test_ablation_quick_selects_on_held_out_text(tmp_path: Path, shared_data: Path) -> None:
    spec = importlib.util.spec_from_file_location("ablation", SCRIPT)
    ablation = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ablation)
    assert ablation.main(["--quick", "--variants", "full", "no-lif", "--threads", "1", "--shared-data",
                          str(shared_data), "--output-dir", str(tmp_path)]) == 0

    record = json.loads((tmp_path / "ablation.json").read_text(encoding="utf-8"))
    assert record["selection"]["rule"] == "holdout" and not record["selection"]["validation_is_test_split"]
    summary = {r["variant"]: r for r in record["summary"]}
    assert list(summary) == ["full", "no-lif"] and summary["full"]["delta_vs_full"] == 0.0
    assert summary["no-lif"]["params"] < summary["full"]["params"]  # the LIF layer's parameters are gone
    assert summary["no-lif"]["spike_rate"] is None and summary["full"]["spike_rate"] is not None
    for run in record["runs"]:
        assert run["validations"] and math.isfinite(run["best_val_loss"]) and run["train_tokens"] >= 512
    assert "| tiny | no-lif |" in (tmp_path / "ablation.md").read_text(encoding="utf-8")

"""scripts/trend.py on committed compare.py results: one point per model and budget, the lead per budget and
its change, a plot per preset, and a refusal to mix corpora."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYTHON = ROOT / "results" / "compare" / "tiny-python-full" / "compare.json"


@pytest.fixture(scope="module")
def trend():
    spec = importlib.util.spec_from_file_location("trend", ROOT / "scripts" / "trend.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_points_leads_and_plots(trend, tmp_path: Path) -> None:
    # a second budget: the same result with its budget and the peers' bits/byte changed (the grouping is tested)
    data = json.loads(PYTHON.read_text())
    data["settings"]["max_tokens"] *= 4
    for row in data["rows"]:
        if row["name"] != "s3cmn":
            row["bits_per_byte"]["mean"] += 0.5
    bigger = tmp_path / "bigger.json"
    bigger.write_text(json.dumps(data))
    result = trend.main([str(PYTHON), str(bigger), "--out", str(tmp_path / "out")])
    assert result["corpus"] == "python" and len(result["points"]) == 6
    first, second = result["leads"]
    original = {r["name"]: r["bits_per_byte"]["mean"] for r in json.loads(PYTHON.read_text())["rows"]}
    assert first["lead"] == pytest.approx(min(original["gpt2"], original["mamba"]) - original["s3cmn"])
    assert second["lead_change"] == pytest.approx(0.5) and second["s3cmn_lowest"]
    assert (tmp_path / "out" / "trend.md").read_text().count("| tiny |") == 8  # 6 points + 2 leads
    assert all(Path(p).is_file() for p in result["plots"])


def test_mixed_corpora_are_refused(trend, tmp_path: Path) -> None:
    wikitext = ROOT / "results" / "compare" / "tiny-wikitext2-tuned"
    with pytest.raises(SystemExit, match="mix corpora"):
        trend.main([str(PYTHON), str(wikitext), "--out", str(tmp_path)])

"""s3cmn-eval end to end on a tiny saved model and real WikiText-2, and its one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from s3cmn.cli.eval import main
from tests.conftest import run_main


def _run(args: list[str], capsys) -> tuple[int, str, str]:
    return run_main(main, args, capsys)


def test_end_to_end(tiny_checkpoint: Path, wikitext_dir: Path, tmp_path: Path, capsys) -> None:
    code, out, err = _run([str(tiny_checkpoint), "--wikitext2", "--data-dir", str(wikitext_dir),
                           "--max-eval-tokens", "2000", "--context-length", "64", "--eval-batch-size", "4",
                           "--report-dir", str(tmp_path / "rep"), "--plot-dir", str(tmp_path / "plots"),
                           "--cache-dir", str(tmp_path / "cache"), "--no-progress", "--log-level", "WARNING"],
                          capsys)  # fmt: skip
    assert code == 0, err
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert report["data"]["tokens"] <= 2000 and report["settings"]["stride"] == 32
    assert report["protocol"] == report["settings"]["protocol"] == "sliding"  # the default, named
    assert [r["memory"] for r in report["runs"]] == ["off", "learned"]  # memory = both = off,learned (issue 15 names)
    ppl = report["runs"][0]["perplexity"]
    assert 1 < ppl["token_perplexity"] and ppl["bits_per_byte"] > 0
    assert "## Perplexity" in out and (tmp_path / "rep" / "report.md").read_text() in out
    assert len(list((tmp_path / "plots").glob("*.png"))) == 3


def _error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if "s3cmn-eval: error:" in line]
    assert len(lines) == 1 and "Traceback" not in err
    return lines[0]


def test_missing_checkpoint(tmp_path: Path, wikitext_dir: Path, capsys) -> None:
    code, _, err = _run([str(tmp_path / "nope"), "--data-dir", str(wikitext_dir)], capsys)
    assert code == 2 and "does not exist" in _error_line(err)


def test_training_output_dir_points_to_its_checkpoints(tmp_path: Path, tiny_checkpoint: Path, wikitext_dir: Path,
                                                       capsys) -> None:
    shutil.copytree(tiny_checkpoint, tmp_path / "run" / "best")
    code, _, err = _run([str(tmp_path / "run"), "--data-dir", str(wikitext_dir)], capsys)
    assert code == 2 and "config.json is missing" in _error_line(err) and "best" in _error_line(err)


def test_corrupt_weights(tmp_path: Path, tiny_checkpoint: Path, wikitext_dir: Path, capsys) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_checkpoint, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    code, _, err = _run([str(broken), "--data-dir", str(wikitext_dir)], capsys)
    assert code == 2 and "cannot load the checkpoint" in _error_line(err)


def test_missing_data(tmp_path: Path, tiny_checkpoint: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    code, _, err = _run([str(tiny_checkpoint), "--data-dir", str(tmp_path / "empty")], capsys)
    assert code == 2 and "wiki.test.raw" in _error_line(err)
    code, _, err = _run([str(tiny_checkpoint), "--split", "valid", "--test-file", str(tmp_path / "x.raw")], capsys)
    assert code == 2 and "validation" in _error_line(err)


def test_bad_flag_value(tiny_checkpoint: Path, capsys) -> None:
    code, _, err = _run([str(tiny_checkpoint), "--memory", "sometimes"], capsys)
    assert code == 2 and "not one of" in err and "sometimes" in err

"""s3cmn-train refuses a model that cannot fit in memory at once, before anything is allocated; --force
overrides the refusal."""

from __future__ import annotations

import time

import pytest

from s3cmn.training import size_guard
from s3cmn.utils.cli_runner import TRACEBACK, run_cli


def one_line_error(result) -> str:
    assert result.returncode == 2, result.output
    assert TRACEBACK not in result.output, result.output
    lines = result.error_lines("s3cmn-train")
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize("flags, what", [
    (["--num-layers", "1000000000"], "params; weights"),  # used to allocate until the machine swapped
    (["--batch-size", "1000000000"], "activations"),  # a batch whose activations alone need ~250 TB
])  # fmt: skip
def test_a_model_too_large_for_memory_is_refused_at_once(tmp_path, train_args, flags, what) -> None:
    out = tmp_path / "run"
    start = time.monotonic()
    result = run_cli("train", [*train_args, *flags, "--max-steps", "1", "--output-dir", str(out)], timeout=120)
    seconds = time.monotonic() - start
    error = one_line_error(result)
    assert "the model needs ~" in error and "GiB to train" in error and what in error, error
    assert "GiB is available in RAM (MemAvailable)" in error and "--force" in error, error
    assert seconds < 60, f"the refusal took {seconds:.0f} s"  # a hang guard; it takes a few seconds
    assert not out.exists(), "the refused run wrote to its output folder"


def test_force_skips_the_check(tmp_path, train_args, monkeypatch, capsys) -> None:
    from s3cmn.cli.train import main

    monkeypatch.setattr(size_guard, "available_memory", lambda device: (1024, "available in RAM (MemAvailable)"))
    args = [*train_args, "--max-steps", "1", "--eval-interval", "1", "--save-interval", "1"]
    with pytest.raises(SystemExit) as refused:
        main([*args, "--output-dir", str(tmp_path / "refused")])
    assert refused.value.code == 2
    error = capsys.readouterr().err
    assert "s3cmn-train: error: the model needs ~" in error and "GiB is available in RAM" in error, error
    assert main([*args, "--force", "--output-dir", str(tmp_path / "forced")]) == 0
    assert (tmp_path / "forced" / "last" / "trainer_state.json").is_file()


def test_a_task_model_too_large_for_memory_is_refused_at_once(tmp_path) -> None:
    out = tmp_path / "run"
    result = run_cli("train", ["--task", "vision", "--num-layers", "1000000000", "--output-dir", str(out)],
                     timeout=120)
    error = one_line_error(result)
    assert "the model needs ~" in error and "GiB is available in RAM (MemAvailable)" in error, error
    assert not out.exists()

"""s3cmn-train as a user meets it: no checkpoint lost, one run per folder, one-line errors, prompt stops.

Each test runs the real CLI in a subprocess on WikiText-2 excerpts with a ~1M-parameter fp32 model.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from s3cmn.utils.cli_runner import TRACEBACK, run_cli, start_cli, wait_for


def trainer_state(folder: Path) -> dict:
    return json.loads((folder / "trainer_state.json").read_text())


def one_line_error(result, prog: str = "s3cmn-train") -> str:
    assert result.returncode == 2, result.output
    assert TRACEBACK not in result.output, result.output
    lines = result.error_lines(prog)
    assert len(lines) == 1, result.stderr
    return lines[0]


# 1. no silent overwrite; bare --resume; --overwrite
def test_rerun_without_resume_is_refused_and_keeps_both_checkpoints(run_copy, train_args) -> None:
    before = {name: (run_copy / name / "model.safetensors").read_bytes() for name in ("last", "best")}
    error = one_line_error(run_cli("train", [*train_args, "--max-steps", "2", "--output-dir", str(run_copy)]))
    assert "--resume" in error and "--overwrite" in error
    for name, weights in before.items():
        assert (run_copy / name / "model.safetensors").read_bytes() == weights, name
    assert trainer_state(run_copy / "last")["step"] == 4


def test_bare_resume_continues_and_overwrite_replaces(run_copy, train_args) -> None:
    result = run_cli("train", [*train_args, "--max-steps", "6", "--output-dir", str(run_copy), "--resume"])
    assert result.returncode == 0, result.output
    assert "after 6 steps" in result.stdout and trainer_state(run_copy / "last")["step"] == 6

    result = run_cli("train", [*train_args, "--max-steps", "2", "--output-dir", str(run_copy), "--overwrite"])
    assert result.returncode == 0, result.output
    assert trainer_state(run_copy / "last")["step"] == 2
    steps = [json.loads(line)["step"] for line in (run_copy / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 2, "the old run's metrics were kept"


# 2. one run per output folder
def test_second_run_on_a_folder_in_use_stops_at_once_naming_the_first(tmp_path, train_args) -> None:
    out = tmp_path / "run"
    first = start_cli("train", [*train_args, "--max-time", "300", "--num-epochs", "1000", "--output-dir", str(out)],
                      tmp_path / "first.log")
    try:
        wait_for(lambda: (out / "train.lock").exists(), 60, "the first run's lock")
        start = time.monotonic()
        second = run_cli("train", [*train_args, "--max-steps", "2", "--output-dir", str(out)])
        error = one_line_error(second)
        assert "in use by another training run" in error and f"process {first.pid}" in error, error
        assert time.monotonic() - start < 30
    finally:
        first.send_signal(signal.SIGTERM)
        assert first.wait(60) == 130, (tmp_path / "first.log").read_text()
    assert (out / "last" / "trainer_state.json").is_file() and not (out / "train.lock").exists()


def test_a_stale_lock_is_taken_over_with_a_log_line(run_copy, train_args) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run_copy / "train.lock").write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename, "started": 0}))
    result = run_cli("train", [*train_args, "--max-steps", "5", "--output-dir", str(run_copy), "--resume"])
    assert result.returncode == 0, result.output
    assert "taking over the stale lock" in result.stderr and f"process {dead.pid}" in result.stderr


# 3. one-line errors instead of tracebacks
def test_resume_with_another_architecture_is_one_line_error(run_copy, train_args) -> None:
    args = [*train_args, "--output-dir", str(run_copy), "--resume", "--hidden-dim", "64"]
    error = one_line_error(run_cli("train", args))
    assert "hidden_dim (checkpoint 32, given 64)" in error, error


def test_edited_config_is_one_line_error_for_resume_eval_and_generate(run_copy, train_args) -> None:
    config_file = run_copy / "last" / "config.json"
    config = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**config, "hidden_dim": 64}))
    error = one_line_error(run_cli("train", [*train_args, "--output-dir", str(run_copy), "--resume", "true"]))
    assert "does not match its config" in error and "size mismatch" not in error, error
    error = one_line_error(run_cli("eval", [str(run_copy / "last"), "--max-eval-tokens", "64"]), "s3cmn-eval")
    assert "does not match its config" in error, error
    result = run_cli("generate", [str(run_copy / "last"), "--prompt", "The"])
    assert result.returncode == 2 and TRACEBACK not in result.output, result.output
    assert "does not match its config" in result.stderr


def test_learned_positions_shorter_than_the_sequence_is_a_config_error_before_training(tmp_path, train_args) -> None:
    out = tmp_path / "run"
    args = [*train_args, "--position-embedding", "learned", "--max-position-embeddings", "16", "--output-dir", str(out)]
    error = one_line_error(run_cli("train", args))
    assert "sequence_length = 32 is longer than max_position_embeddings = 16" in error, error
    assert not out.exists(), "training started"


def test_pickled_optimizer_state_is_refused_without_recommending_unsafe_loading(run_copy, train_args) -> None:
    import argparse

    torch.save({"state": argparse.Namespace(a=1)}, run_copy / "last" / "optimizer.pt")  # needs real unpickling
    error = one_line_error(run_cli("train", [*train_args, "--output-dir", str(run_copy), "--resume"]))
    assert "not in a safe format" in error and "--overwrite" in error, error
    assert "weights_only" not in error


# 4. settings given on resume: applied and said, or refused
def test_settings_given_on_resume_are_applied_and_logged_or_refused(run_copy, train_args) -> None:
    args = [*train_args, "--output-dir", str(run_copy), "--resume", "--max-steps", "6", "--learning-rate", "1e-5"]
    result = run_cli("train", args)
    assert result.returncode == 0, result.output
    assert "learning_rate changed from 0.003 to 1e-05" in result.stderr
    records = [json.loads(line) for line in (run_copy / "metrics.jsonl").read_text().splitlines()]
    lr = {r["step"]: r["lr"] for r in records if r["kind"] == "train"}
    assert lr[4] == pytest.approx(3e-4) and lr[5] <= 1e-5, lr  # the new peak from step 5 on
    error = one_line_error(run_cli("train", [*train_args, "--output-dir", str(run_copy), "--resume",
                                             "--sequence-length", "16"]))
    assert "sequence_length (checkpoint 32, given 16" in error, error


# 5. Ctrl-C stops promptly
def interrupt(args: list[str], log: Path, ready, what: str, signals: tuple[signal.Signals, ...],
              settle: float) -> str:
    """Start s3cmn-train, wait until ``ready()``, wait ``settle`` s, send ``signals`` 0.5 s apart; the run must
    exit with 130 within 30 s of the last one, without a traceback. Returns its log."""
    proc = start_cli("train", args, log)
    try:
        wait_for(ready, 120, what)
        time.sleep(settle)
        for i, sig in enumerate(signals):
            if i:
                time.sleep(0.5)
            sent = time.monotonic()
            proc.send_signal(sig)
        assert proc.wait(30) == 130, log.read_text()
    finally:
        proc.kill()
    assert time.monotonic() - sent < 30 and TRACEBACK not in log.read_text()
    return log.read_text()


def test_first_sigint_stops_after_the_step_without_finishing_a_long_validation(tmp_path, train_args,
                                                                                shared_data) -> None:
    out = tmp_path / "run"
    full_test = shared_data / "wikitext-2-raw" / "wiki.test.raw"  # ~9,000 blocks: a validation of minutes
    args = [*train_args, "--validation-file", str(full_test), "--validation-source", "file", "--eval-batches", "0",
            "--eval-interval", "1", "--max-steps", "100000", "--output-dir", str(out)]
    log = interrupt(args, tmp_path / "log", lambda: (out / "metrics.jsonl").exists(), "the first step",
                    (signal.SIGINT,), settle=0.5)  # the signal comes inside the validation of step 1
    assert trainer_state(out / "last")["step"] >= 1
    assert "not recorded" in log  # the validation under way was cut short


def test_second_sigint_abandons_the_step_under_way(tmp_path, train_args) -> None:
    out = tmp_path / "run"
    args = [*train_args, "--gradient-accumulation-steps", "3000", "--max-steps", "2", "--output-dir", str(out)]
    # one step = 3,000 micro-batches: far more than a minute
    log = interrupt(args, tmp_path / "log", lambda: (out / "train.lock").exists(), "the run to start",
                    (signal.SIGINT, signal.SIGINT), settle=1.0)
    assert "abandoned" in log
    state = trainer_state(out / "last")
    assert state["step"] == 0 and state["sampler"]["position"] == 0  # the data position went back


# 6. a persistent NaN under --nan-policy skip still stops
NAN_FOREVER = ["--learning-rate", "1e30", "--warmup-steps", "0", "--nan-policy", "skip"]  # weights blow up at once


def test_persistent_nan_under_skip_stops_at_max_time_and_max_steps(tmp_path, train_args) -> None:
    # 100,000 epochs of skipped batches: hours on any machine, so only the 3 s budget can stop the first run
    result = run_cli("train", [*train_args, *NAN_FOREVER, "--max-time", "3", "--num-epochs", "100000",
                               "--output-dir", str(tmp_path / "a")], timeout=90)
    assert result.returncode == 0 and "stopped (max_time)" in result.stdout, result.output
    result = run_cli("train", [*train_args, *NAN_FOREVER, "--max-steps", "8", "--output-dir", str(tmp_path / "b")],
                     timeout=90)
    assert result.returncode == 0 and "stopped (max_steps)" in result.stdout, result.output
    assert "batch skipped" in result.stderr


def test_persistent_nan_under_skip_stops_on_sigterm(tmp_path, train_args) -> None:
    out = tmp_path / "run"
    interrupt([*train_args, *NAN_FOREVER, "--output-dir", str(out)], tmp_path / "log",
              lambda: "in a row" in (tmp_path / "log").read_text(), "skipped batches", (signal.SIGTERM,), settle=0)
    assert (out / "last" / "trainer_state.json").is_file()


# 7. generation past the learned position table
@pytest.fixture(scope="module")
def learned_positions_run(tmp_path_factory, train_args) -> Path:
    out = tmp_path_factory.mktemp("learned") / "run"
    args = [*train_args, "--position-embedding", "learned", "--max-position-embeddings", "40", "--max-steps", "2",
            "--output-dir", str(out)]
    result = run_cli("train", args)
    assert result.returncode == 0, result.output
    return out / "last"


def test_generation_past_the_learned_positions_says_how_many_tokens_fit(learned_positions_run) -> None:
    result = run_cli("generate", [str(learned_positions_run), "--prompt", "the", "--max-new-tokens", "100"])
    assert result.returncode == 2 and TRACEBACK not in result.output, result.output
    assert result.stdout == ""  # checked before the first token
    assert "at most 39 new tokens fit (--max-new-tokens 39)" in result.stderr, result.stderr
    result = run_cli("generate", [str(learned_positions_run), "--prompt", "the", "--max-new-tokens", "39"])
    assert result.returncode == 0, result.output


def test_model_generate_checks_the_position_table_first(learned_positions_run) -> None:
    from s3cmn import S3CMNForCausalLM

    model = S3CMNForCausalLM.from_pretrained(learned_positions_run)
    ids = torch.tensor([[101, 102, 103]])
    with pytest.raises(ValueError, match="at most 37 new tokens fit"):
        model.generate(ids, max_new_tokens=38, do_sample=False)
    assert model.generate(ids, max_new_tokens=37, do_sample=False).shape == (1, 40)

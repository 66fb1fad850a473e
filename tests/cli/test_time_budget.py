"""--max-time alone decides how long s3cmn-train runs: the preset's epoch count does not end it first."""

from __future__ import annotations

import json
import re

import pytest

from s3cmn.cli.arguments import settings_from_args
from s3cmn.cli.train import SECTIONS, build_parser
from s3cmn.run_config import TrainingConfig
from s3cmn.training.optim import lr_factor
from s3cmn.utils.cli_runner import TINY_MODEL, TINY_RUN, run_cli
from s3cmn.utils.fields import ConfigError


def training_of(argv: list[str]) -> TrainingConfig:
    args = build_parser().parse_args(["--preset", "tiny", *argv])
    return settings_from_args(args, SECTIONS).build_section("training")


def test_max_time_without_num_epochs_lifts_the_epoch_limit(tmp_path) -> None:
    assert training_of([]).num_epochs == 1  # the tiny preset's epoch count, when no time budget is given
    assert training_of(["--max-time", "60"]).num_epochs == 0  # 0 = no epoch limit
    assert training_of(["--max-time", "60", "--num-epochs", "3"]).num_epochs == 3  # an explicit count still holds
    assert training_of(["--modify", json.dumps({"max_time": 60})]).num_epochs == 0
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"training": {"max_time": 60, "num_epochs": 2}}))
    assert training_of(["--config-path", str(config)]).num_epochs == 2
    assert training_of(["--config-path", str(config), "--max-time", "30"]).num_epochs == 2  # given in the file


def test_no_epoch_limit_needs_another_limit() -> None:
    with pytest.raises(ConfigError, match="num_epochs = 0"):
        TrainingConfig(num_epochs=0)
    assert TrainingConfig(num_epochs=0, max_tokens=1000).num_epochs == 0


def test_without_a_step_horizon_the_schedule_follows_the_budget() -> None:
    training = TrainingConfig(warmup_steps=10, min_lr_ratio=0.1, num_epochs=0, max_time=60)
    assert lr_factor(4, training, None, budget_fraction=0.0) == pytest.approx(0.5)  # warmup: by steps
    assert lr_factor(500, training, None, budget_fraction=0.0) == pytest.approx(1.0)
    assert lr_factor(500, training, None, budget_fraction=0.5) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor(500, training, None, budget_fraction=1.0) == pytest.approx(0.1)


def test_train_with_max_time_runs_past_the_presets_epoch(tmp_path, shared_data) -> None:
    # ~1,000 tokens of real text: an epoch is a few steps, far less than the 5 s budget on any machine
    raw = shared_data / "wikitext-2-raw"
    train, valid = tmp_path / "train.txt", tmp_path / "valid.txt"
    train.write_bytes(raw.joinpath("wiki.valid.raw").read_bytes()[:4_000])
    valid.write_bytes(raw.joinpath("wiki.test.raw").read_bytes()[:4_000])
    args = [*TINY_MODEL, *TINY_RUN, "--train-file", str(train), "--validation-file", str(valid),
            "--tokenizer", str(shared_data / "tokenizers" / "bert-base-uncased"),
            "--cache-dir", str(tmp_path / "cache"),
            "--max-time", "5", "--output-dir", str(tmp_path / "run")]  # the tiny preset says num_epochs = 1
    result = run_cli("train", args, timeout=300)
    assert result.returncode == 0, result.output
    summary = re.search(r"stopped \((\w+)\) after (\d+) steps \(([\d.]+) epochs\) in \d+ s", result.stdout)
    assert summary is not None, result.stdout
    assert summary[1] == "max_time", result.stdout
    assert float(summary[3]) > 1.0, result.stdout

"""fit's stop check: a persistent NaN under nan_policy skip still stops; the progress ETA follows max_time."""

from __future__ import annotations

import io

import torch

from s3cmn.run_config import TrainingConfig
from s3cmn.training import fit, setup_run
from tests.training.conftest import tiny_lm


def _settings(tmp_path, **overrides) -> TrainingConfig:
    fields = dict(learning_rate=3e-3, batch_size=2, sequence_length=32, warmup_steps=1, num_epochs=100000,
                  save_interval=10**6, log_interval=1, output_dir=str(tmp_path / "run"), mixed_precision="no",
                  device="cpu", seed=0)
    return TrainingConfig(**{**fields, **overrides})


BLOCKS = torch.randint(0, 50, (24, 32), generator=torch.Generator().manual_seed(0))


def test_persistent_nan_under_skip_stops_at_max_time_and_max_steps(tmp_path) -> None:
    model = tiny_lm()
    with torch.no_grad():
        model.lm_head.weight[0, 0] = float("nan")  # tied to the embedding: every loss is NaN
    result = fit(model, BLOCKS, None, _settings(tmp_path / "a", nan_policy="skip", max_time=1.0))
    assert result.stopped == "max_time" and result.steps == 0
    result = fit(model, BLOCKS, None, _settings(tmp_path / "b", nan_policy="skip", max_steps=5))
    assert result.stopped == "max_steps" and result.steps == 0


def test_progress_bar_total_is_what_max_time_allows(tmp_path, monkeypatch) -> None:
    bars = []

    def bar(total: int, initial: int, enabled: bool):
        from tqdm import tqdm

        bars.append(tqdm(total=total, initial=initial, file=io.StringIO(), mininterval=0))
        return bars[-1]

    monkeypatch.setattr(setup_run, "progress_bar", bar)
    result = fit(tiny_lm(), BLOCKS, None, _settings(tmp_path, max_time=1.5))
    assert result.stopped == "max_time"
    planned = 100000 * (24 // 2)
    assert bars[0].total < planned / 100, bars[0].total  # the ETA is about the time limit, not 1.2M steps
    assert bars[0].total >= result.steps * 0.5

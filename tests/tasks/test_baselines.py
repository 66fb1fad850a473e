"""The baselines have the S3CMN model's parameter count within 10%."""

from __future__ import annotations

import pytest
import torch

from s3cmn.model_config import S3CMNConfig
from s3cmn.tasks.baselines import CNNBaseline, GRUBaseline, count_parameters, match_parameters
from s3cmn.tasks.config import TASK_PRESETS, TaskConfig, task_preset
from s3cmn.tasks.run import robotics_models, vision_models
from s3cmn.tasks.vision_data import load_digits_splits


@pytest.mark.parametrize("name", [n for n in sorted(TASK_PRESETS) if n != "vision-mnist"])
def test_presets_baseline_matches_within_ten_percent(name: str) -> None:
    preset = task_preset(name)
    config, task = S3CMNConfig(**preset["model"]), TaskConfig(**preset["task"])
    if task.task == "vision":
        models = vision_models(config, task, load_digits_splits(task, 0), seed=0)
    else:
        models = robotics_models(config, task, seed=0)
    s3, base = (count_parameters(models[k][0]) for k in ("s3cmn", "baseline"))
    assert abs(base - s3) <= 0.1 * s3, (s3, base)
    assert models["baseline"][1]["width"] == models["baseline"][0].width


def test_match_parameters_finds_the_closest_width() -> None:
    task = TaskConfig(action_dim=0)
    model = match_parameters(lambda w: GRUBaseline(task, w), target=10_000)
    n = count_parameters(model)
    assert abs(n - 10_000) <= min(abs(count_parameters(GRUBaseline(task, model.width + d)) - 10_000) for d in (-1, 1))


def test_match_parameters_refuses_an_unreachable_target() -> None:
    task = TaskConfig()
    with pytest.raises(ValueError, match="within 10%"):
        match_parameters(lambda w: CNNBaseline(task, (1, 8, 8), 10, w), target=10)


def test_count_parameters_counts_a_shared_parameter_once() -> None:
    lin = torch.nn.Linear(3, 3)
    assert count_parameters(torch.nn.Sequential(lin, lin)) == 12

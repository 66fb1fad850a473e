"""What ``s3cmn-train --task`` and ``s3cmn-eval --task`` do, so the CLIs stay a few lines: the task preset under
the settings given, the run, and its printed summary."""

from __future__ import annotations

import os
from typing import Any

import torch

from s3cmn.settings_file import SECTIONS, Settings
from s3cmn.tasks.config import TASK_PRESETS, task_preset
from s3cmn.tasks.report import render_task_report
from s3cmn.tasks.run import evaluate_task, run_task
from s3cmn.training.loop import TrainingError
from s3cmn.training.size_guard import check_training_fits

__all__ = ["DEFAULT_TASK_PRESET", "evaluate_task_command", "is_task_preset", "task_run_settings",
           "train_task_command"]

# the preset a task run starts from when neither --preset nor --config-path is given
DEFAULT_TASK_PRESET = {"vision": "vision-digits", "robotics": "robotics-pendulum"}


def is_task_preset(name: str | None) -> bool:
    return name in TASK_PRESETS


def task_run_settings(given: Settings, preset: str | None) -> Settings | None:
    """The settings of a task run, or None for a language-model run: ``given`` (config file, --modify and
    flags) over the task preset ``preset``, else over the default preset of the task ``given`` names."""
    task = given.task.get("task", "llm")
    name = preset or DEFAULT_TASK_PRESET.get(task)
    if name is None:
        return None
    merged = Settings()
    merged.update(task_preset(name), f"preset {name}")
    merged.update({section: getattr(given, section) for section in SECTIONS}, "flags")
    return merged


def train_task_command(configs: Any) -> str:
    """Train a task run from built configs (``configs.model``, ``.training``, ``.task``); the summary to print."""
    if configs.training.resume:
        raise TrainingError("a task run cannot --resume: train it again (its checkpoints hold the best state, "
                            "which s3cmn-eval --task scores)")
    # the task models train on the CPU; the LM's estimate for the same blocks (it counts a vocabulary embedding
    # they lack) refuses what cannot fit before anything is allocated
    check_training_fits(configs.model, configs.training, torch.device("cpu"))
    out = configs.training.output_dir
    report = run_task(configs.model, configs.training, configs.task, out)
    stopped = {r["stopped"] for r in report["results"].values()}
    return (render_task_report(report) + f"\nstopped ({', '.join(sorted(stopped))}); checkpoints in "
            f"{os.path.join(out, 's3cmn')} and {os.path.join(out, 'baseline')}\n")


def evaluate_task_command(checkpoint: str | os.PathLike) -> str:
    """Score a task run's checkpoints on their test split; the summary to print."""
    return render_task_report(evaluate_task(checkpoint))

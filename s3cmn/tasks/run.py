"""A task run: the S³CMN model and its parameter-matched baseline trained with the same loop, data and budget,
each left in its validation-selected state, then scored once on the test split.

Output folder::

    <output_dir>/s3cmn/      the S³CMN model's checkpoint (s3cmn.tasks.checkpoint)
    <output_dir>/baseline/   the baseline's (CNN for vision, GRU for robotics)
    <output_dir>/task_run.json   the settings, each model's training history and validation / test scores
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from s3cmn.model_config import S3CMNConfig
from s3cmn.run_config import TrainingConfig
from s3cmn.tasks.adapt import unseen_report
from s3cmn.tasks.baselines import CNNBaseline, GRUBaseline, count_parameters, match_parameters
from s3cmn.tasks.checkpoint import load_task_model
from s3cmn.tasks.config import TaskConfig
from s3cmn.tasks.metrics import classify, rollout_report, vision_report
from s3cmn.tasks.models import DynamicsS3CMN, VisionS3CMN
from s3cmn.tasks.robotics_sim import Trajectories, trajectory_splits
from s3cmn.tasks.train import TaskFitResult, fit_task
from s3cmn.tasks.vision_data import ImageSplits, load_images
from s3cmn.training.checkpoint import CheckpointError
from s3cmn.training.loop import TrainingError, seed_everything

logger = logging.getLogger(__name__)

__all__ = ["RUN_FILE", "evaluate_task", "robotics_models", "run_task", "vision_models"]

RUN_FILE = "task_run.json"
MODEL_NAMES = ("s3cmn", "baseline")


def _spec(kind: str, model_config: S3CMNConfig | None, task: TaskConfig, **extra: Any) -> dict[str, Any]:
    return {"kind": kind, "model": None if model_config is None else model_config.settings_dict(),
            "task": task.to_dict(), **extra}


@dataclass
class _Job:
    """What training and testing the models of one task needs (the data live in the closures)."""

    models: dict[str, tuple[nn.Module, dict[str, Any]]]
    loss: Callable[[nn.Module, Any], Tensor]
    batches: Callable[[torch.Generator], Iterator[Any]]
    batches_per_epoch: int
    score: Callable[[nn.Module], float]  # on the validation split, higher is better
    test: Callable[[nn.Module], dict[str, Any]]


# --------------------------------------------------------------------------------------------------
# vision


def vision_models(model_config: S3CMNConfig, task: TaskConfig, data: ImageSplits,
                  seed: int) -> dict[str, tuple[nn.Module, dict[str, Any]]]:
    """The S³CMN classifier and the CNN with (within 10%) its parameter count, each initialised from ``seed``."""
    shape, K = data.image_shape, data.num_classes
    seed_everything(seed)
    s3 = VisionS3CMN(model_config, task, shape, K)
    seed_everything(seed)
    cnn = match_parameters(lambda w: CNNBaseline(task, shape, K, w), count_parameters(s3))
    extra = {"image_shape": list(shape), "num_classes": K, "data_seed": seed}
    return {"s3cmn": (s3, _spec("vision-s3cmn", model_config, task, **extra)),
            "baseline": (cnn, _spec("vision-cnn", None, task, width=cnn.width, **extra))}


def _image_batches(data: ImageSplits, batch_size: int):
    def batches(generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]:
        order = torch.randperm(len(data.train_y), generator=generator)
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            yield data.train_x[idx], data.train_y[idx]

    return batches, -(-len(data.train_y) // batch_size)


def _classification_loss(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
    images, labels = batch
    return F.cross_entropy(model(images).logits, labels)


def _vision_job(model_config: S3CMNConfig, training: TrainingConfig, task: TaskConfig) -> _Job:
    data = load_images(task, training.seed)
    batches, per_epoch = _image_batches(data, training.batch_size)

    def score(model: nn.Module) -> float:  # validation accuracy
        return float((classify(model, data.valid_x)[0] == data.valid_y).float().mean())

    def test(model: nn.Module) -> dict[str, Any]:
        return vision_report(model, data.test_x, data.test_y, data.num_classes, task.noise_levels)

    models = vision_models(model_config, task, data, training.seed)
    return _Job(models, _classification_loss, batches, per_epoch, score, test)


# --------------------------------------------------------------------------------------------------
# robotics


def robotics_models(model_config: S3CMNConfig, task: TaskConfig,
                    seed: int) -> dict[str, tuple[nn.Module, dict[str, Any]]]:
    """The S³CMN next-state model and the GRU with (within 10%) its parameter count."""
    seed_everything(seed)
    s3 = DynamicsS3CMN(model_config, task)
    seed_everything(seed)
    gru = match_parameters(lambda w: GRUBaseline(task, w), count_parameters(s3))
    return {"s3cmn": (s3, _spec("dynamics-s3cmn", model_config, task, data_seed=seed)),
            "baseline": (gru, _spec("dynamics-gru", None, task, width=gru.width, data_seed=seed))}


def _window_batches(data: Trajectories, window: int, batch_size: int):
    """Random training windows of ``window`` inputs (+1 target): about one pass over every trajectory an epoch."""
    n, L, _ = data.states.shape
    T = min(window, L - 1)
    per_trajectory = max(1, (L - 1) // T)
    total = n * per_trajectory

    def batches(generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]:
        rows = torch.arange(n).repeat_interleave(per_trajectory)[torch.randperm(total, generator=generator)]
        offsets = torch.randint(0, L - T, (total,), generator=generator)
        for i in range(0, total, batch_size):
            r, o = rows[i : i + batch_size, None], offsets[i : i + batch_size, None] + torch.arange(T + 1)
            yield data.states[r, o], data.actions[r, o]  # (b, T+1, S), (b, T+1, A)

    return batches, -(-total // batch_size)


def _next_state_loss(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
    return model.next_state_loss(*batch)


def _robotics_job(model_config: S3CMNConfig, training: TrainingConfig, task: TaskConfig) -> _Job:
    data = trajectory_splits(task, training.seed)
    batches, per_epoch = _window_batches(data.train, training.sequence_length, training.batch_size)

    def score(model: nn.Module) -> float:  # minus the validation rollout error
        return -rollout_report(model, data.valid, task.context_steps, task.horizon, task.error_threshold)[
            "rollout_rmse"]

    def test(model: nn.Module) -> dict[str, Any]:
        return robotics_test(model, task, data.test, training.seed)

    models = robotics_models(model_config, task, training.seed)
    for model, _ in models.values():
        model.fit_normalisation(data.train.states, data.train.actions)
    return _Job(models, _next_state_loss, batches, per_epoch, score, test)


def robotics_test(model: nn.Module, task: TaskConfig, test: Trajectories, seed: int) -> dict[str, Any]:
    """The test rollouts of the trained system; with ``task.unseen_length``, also an unseen pendulum's, frozen
    and adapted to each trajectory's first steps (s3cmn.tasks.adapt), under ``"unseen"``."""
    report = rollout_report(model, test, task.context_steps, task.horizon, task.error_threshold)
    if task.unseen_length > 0:
        report["unseen"] = unseen_report(model, task, seed)
    return report


# --------------------------------------------------------------------------------------------------
# the run


def _train_and_test(job: _Job, training: TrainingConfig, out: Path | None,
                    names: tuple[str, ...]) -> dict[str, Any]:
    """Train each model named in ``names``, then score its validation-selected state on the test split once.
    A stop signal ends the run after the model it interrupted (scored as it stands)."""
    results = {}
    for name, (model, spec) in job.models.items():
        if name not in names:
            continue
        logger.info("training %s (%s, %s parameters)", name, spec["kind"], f"{count_parameters(model):,}")
        fit = fit_task(model, job.loss, job.batches, job.batches_per_epoch, job.score, training,
                       None if out is None else out / name, spec)
        results[name] = _result(model, spec, fit, job.test(model))
        if fit.stopped == "signal":
            logger.warning("stopped by a signal: the models after %s are not trained", name)
            break
    return results


def _result(model: nn.Module, spec: dict[str, Any], fit: TaskFitResult, test: dict[str, Any]) -> dict[str, Any]:
    return {"kind": spec["kind"], "parameters": count_parameters(model), "epochs": fit.epochs, "steps": fit.steps,
            "stopped": fit.stopped, "best_epoch": fit.best_epoch, "validation_score": fit.best_score,
            "train_seconds": fit.seconds, "history": fit.history, "test": test}


def run_task(model_config: S3CMNConfig, training: TrainingConfig, task: TaskConfig,
             output_dir: str | os.PathLike | None = None, names: tuple[str, ...] = MODEL_NAMES) -> dict[str, Any]:
    """Train the S³CMN model and its baseline (or only the ``names`` given) on ``task``; return (and with
    ``output_dir`` write) the report."""
    if task.task not in ("vision", "robotics"):
        raise TrainingError(f"run_task trains the vision and robotics tasks, not task = {task.task!r}")
    unknown = set(names) - set(MODEL_NAMES)
    if unknown:
        raise TrainingError(f"unknown task model {sorted(unknown)[0]!r}: choose from {MODEL_NAMES}")
    out = None if output_dir is None else Path(output_dir)
    if out is not None and (out / RUN_FILE).exists() and not training.overwrite:
        raise TrainingError(f"{out} already holds a task run ({RUN_FILE}): pass --overwrite true to replace it, "
                            "or choose another --output-dir")
    job = (_vision_job if task.task == "vision" else _robotics_job)(model_config, training, task)
    results = _train_and_test(job, training, out, names)
    report = {"task": task.to_dict(), "model": model_config.settings_dict(), "training": training.to_dict(),
              "results": results}
    if out is not None:
        _write_json(out / RUN_FILE, report)
    return report


def _write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def evaluate_task(output_dir: str | os.PathLike) -> dict[str, Any]:
    """Score the checkpoints of a task run (``<dir>/s3cmn``, ``<dir>/baseline``) on the test split of the data
    they were trained on (the task settings and data seed saved in each checkpoint)."""
    out, results = Path(output_dir), {}
    if not any((out / name).exists() or (out / f"{name}.old").exists() for name in MODEL_NAMES):
        raise CheckpointError(f"{out} holds no task run ({' and '.join(f'{n}/' for n in MODEL_NAMES)}): point "
                              "--checkpoint at the --output-dir of an s3cmn-train --task run")
    for name in MODEL_NAMES:
        model, spec = load_task_model(out / name)
        task, seed = TaskConfig.from_dict(spec["task"]), spec["data_seed"]  # the seed that split the data
        if task.task == "vision":
            data = load_images(task, seed)
            results[name] = {"kind": spec["kind"], "parameters": count_parameters(model),
                             "test": vision_report(model, data.test_x, data.test_y, data.num_classes,
                                                   task.noise_levels)}
        else:
            results[name] = {"kind": spec["kind"], "parameters": count_parameters(model),
                             "test": robotics_test(model, task, trajectory_splits(task, seed).test, seed)}
    return {"task": task.task, "checkpoint": str(out), "results": results}


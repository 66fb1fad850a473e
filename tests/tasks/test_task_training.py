"""The task loop (best state on validation, budgets, Ctrl-C) and task checkpoints (atomic, no pickle)."""

from __future__ import annotations

import json
import os
import pickle
import signal

import pytest
import torch
import torch.nn.functional as F

from s3cmn.run_config import TrainingConfig
from s3cmn.tasks.checkpoint import load_task_model, save_task_checkpoint
from s3cmn.tasks.config import TaskConfig
from s3cmn.tasks.report import render_task_report
from s3cmn.tasks.run import evaluate_task, robotics_models, run_task, vision_models
from s3cmn.tasks.train import fit_task
from s3cmn.tasks.vision_data import load_digits_splits
from s3cmn.training.checkpoint import CheckpointError
from s3cmn.training.loop import TrainingError
from s3cmn.training.optim import build_optimizer, build_scheduler

from .conftest import tiny_config


def _all_models(vision_task: TaskConfig, pendulum_task: TaskConfig) -> dict:
    spiking = TaskConfig(**{**vision_task.to_dict(), "spiking_conv": True})
    models = {}
    for prefix, built in (("vision", vision_models(tiny_config(), spiking, load_digits_splits(spiking, 0), 0)),
                          ("robotics", robotics_models(tiny_config(use_liquid=True), pendulum_task, 0))):
        models.update({f"{prefix}-{k}": v for k, v in built.items()})
    return models


def _inputs(name: str) -> tuple:
    if name.startswith("vision"):
        return (torch.rand(2, 1, 8, 8),)
    return torch.randn(2, 7, 2), torch.randn(2, 7, 1)


def _output(model: torch.nn.Module, inputs: tuple) -> torch.Tensor:
    out = model(*inputs)
    return out.logits if hasattr(out, "logits") else out.next_states


def test_every_kind_round_trips_through_save_and_load(tmp_path, vision_task, pendulum_task) -> None:
    training = TrainingConfig()
    for name, (model, spec) in _all_models(vision_task, pendulum_task).items():
        saved = model.state_dict()
        with torch.no_grad():  # non-trivial saved buffers: normalisation and BatchNorm statistics
            for key, buffer in model.named_buffers():
                if key in saved and buffer.is_floating_point():
                    buffer.uniform_(0.5, 1.5)
        optimizer = build_optimizer(model, training)
        save_task_checkpoint(tmp_path / name, model, spec, optimizer, build_scheduler(optimizer, training, 10),
                             {"epoch": 1})
        loaded, loaded_spec = load_task_model(tmp_path / name)
        assert loaded_spec["kind"] == spec["kind"] and type(loaded) is type(model)
        inputs = _inputs(name)
        model.eval()
        with torch.no_grad():
            torch.testing.assert_close(_output(loaded, inputs), _output(model, inputs), rtol=0, atol=0, msg=name)
        assert not (tmp_path / f"{name}.tmp").exists() and not (tmp_path / f"{name}.old").exists()


def _save_one(tmp_path, vision_task, pendulum_task):
    model, spec = _all_models(vision_task, pendulum_task)["robotics-baseline"]
    training = TrainingConfig()
    optimizer = build_optimizer(model, training)
    return save_task_checkpoint(tmp_path / "ckpt", model, spec, optimizer, build_scheduler(optimizer, training, 1),
                                {})


def test_loading_never_unpickles(tmp_path, vision_task, pendulum_task) -> None:
    folder = _save_one(tmp_path, vision_task, pendulum_task)

    class Boom:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    (folder / "model.safetensors").write_bytes(pickle.dumps(Boom()))
    with pytest.raises(CheckpointError, match="model.safetensors is corrupt"):
        load_task_model(folder)
    assert not (tmp_path / "pwned").exists()


def test_an_lm_or_incomplete_checkpoint_is_told_apart(tmp_path, vision_task, pendulum_task) -> None:
    folder = _save_one(tmp_path, vision_task, pendulum_task)
    spec = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({"model_type": "s3cmn", "hidden_dim": 16}))
    with pytest.raises(CheckpointError, match="not a task checkpoint .*without --task"):
        load_task_model(folder)
    (folder / "config.json").write_text(json.dumps({**spec, "width": spec["width"] + 1}))
    with pytest.raises(CheckpointError, match="does not fit its config.json"):
        load_task_model(folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model.safetensors is missing"):
        load_task_model(folder)
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_task_model(tmp_path / "nowhere")


def _toy_fit(training: TrainingConfig, scores: list[float], on_step=None, checkpoint_dir=None):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    x, y = torch.randn(32, 4), torch.randint(0, 2, (32,))
    seen, calls = [], {"steps": 0}

    def loss_fn(m, batch):
        calls["steps"] += 1
        if on_step:
            on_step(calls["steps"])
        return F.cross_entropy(m(batch[0]), batch[1])

    def batches(generator):
        for i in range(0, 32, 8):
            yield x[i : i + 8], y[i : i + 8]

    def score(m):
        seen.append({k: v.clone() for k, v in m.state_dict().items()})
        return scores[len(seen) - 1]

    spec = {"kind": "toy"}
    result = fit_task(model, loss_fn, batches, 4, score, training, checkpoint_dir, spec)
    return model, result, seen


def test_the_best_validation_state_is_kept(tmp_path) -> None:
    model, result, seen = _toy_fit(TrainingConfig(num_epochs=4, warmup_steps=0, learning_rate=0.1),
                                   [0.2, 0.9, 0.5, 0.1], checkpoint_dir=tmp_path / "toy")
    assert (result.best_epoch, result.best_score, result.epochs, result.steps) == (2, 0.9, 4, 16)
    for k, v in model.state_dict().items():
        assert torch.equal(v, seen[1][k])
    assert json.loads((tmp_path / "toy" / "trainer_state.json").read_text())["epoch"] == 2
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4]


def test_max_steps_and_max_time_budgets() -> None:
    _, result, _ = _toy_fit(TrainingConfig(num_epochs=10, max_steps=6, warmup_steps=0), [0.0] * 10)
    assert (result.stopped, result.steps, result.epochs) == ("max_steps", 6, 2)
    _, result, _ = _toy_fit(TrainingConfig(num_epochs=10, max_time=1e-9, warmup_steps=0), [0.0] * 10)
    assert (result.stopped, result.steps) == ("max_time", 1)


def test_ctrl_c_stops_after_the_step_and_keeps_the_best_state() -> None:
    def interrupt(step: int) -> None:
        if step == 6:  # in the second epoch
            os.kill(os.getpid(), signal.SIGINT)

    found = signal.getsignal(signal.SIGINT)  # not always the default: a background launch inherits SIG_IGN
    _, result, seen = _toy_fit(TrainingConfig(num_epochs=5, warmup_steps=0), [0.5] * 5, on_step=interrupt)
    assert (result.stopped, result.steps, result.best_epoch) == ("signal", 6, 1)
    assert len(seen) == 1  # no validation after the signal
    assert signal.getsignal(signal.SIGINT) is found  # the handler it found is restored


def test_a_nan_loss_stops_with_a_clear_error() -> None:
    def poison(step: int) -> None:
        raise_nan["on"] = step == 2

    raise_nan = {"on": False}
    model = torch.nn.Linear(2, 1)

    def loss_fn(m, batch):
        poison(batch)
        return m(torch.ones(1, 2)).sum() * (float("nan") if raise_nan["on"] else 1.0)

    with pytest.raises(TrainingError, match="lower --learning-rate"):
        fit_task(model, loss_fn, lambda g: iter([1, 2, 3]), 3, lambda m: 0.0, TrainingConfig(warmup_steps=0))


@pytest.mark.parametrize("which", ["vision", "robotics"])
def test_run_then_evaluate_gives_the_same_test_scores(tmp_path, which, vision_task, pendulum_task) -> None:
    task = vision_task if which == "vision" else pendulum_task
    training = TrainingConfig(num_epochs=1, batch_size=64, warmup_steps=0, learning_rate=3e-3, seed=1,
                              sequence_length=12)
    report = run_task(tiny_config(num_layers=1), training, task, tmp_path / "run")
    evaluated = evaluate_task(tmp_path / "run")
    for name in ("s3cmn", "baseline"):
        assert evaluated["results"][name]["test"] == report["results"][name]["test"]
    text = render_task_report(evaluated)
    assert ("baseline (vision-cnn)" if which == "vision" else "baseline (dynamics-gru)") in text
    assert f"{report['results']['s3cmn']['parameters']:,}" in text
    saved = json.loads((tmp_path / "run" / "task_run.json").read_text())
    assert saved["results"]["s3cmn"]["test"] == report["results"]["s3cmn"]["test"]
    with pytest.raises(TrainingError, match="--overwrite true"):
        run_task(tiny_config(num_layers=1), training, task, tmp_path / "run")


def test_task_models_refuse_an_external_memory(vision_task) -> None:
    with pytest.raises(ValueError, match="set use_memory = false"):
        vision_models(tiny_config(use_memory=True, memory_compression_dim=8), vision_task,
                      load_digits_splits(vision_task, 0), 0)



def test_two_seeded_runs_give_identical_numbers(pendulum_task) -> None:
    training = TrainingConfig(num_epochs=2, batch_size=4, warmup_steps=0, seed=5, sequence_length=8)
    config = tiny_config(num_layers=1, use_population_coding=True)
    first, second = (run_task(config, training, pendulum_task)["results"] for _ in range(2))
    for name in ("s3cmn", "baseline"):
        assert first[name]["test"] == second[name]["test"]
        assert [h["train_loss"] for h in first[name]["history"]] == [h["train_loss"] for h in second[name]["history"]]

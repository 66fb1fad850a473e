"""Task checkpoints: a folder with ``model.safetensors`` (the weights and the normalisation buffers),
``config.json`` (the spec that rebuilds the model) and the training state of
:func:`s3cmn.training.checkpoint.save_checkpoint`, which writes it atomically. Loading reads JSON and
safetensors only: nothing is unpickled."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from torch import nn

from s3cmn.model_config import S3CMNConfig
from s3cmn.tasks.config import TaskConfig
from s3cmn.training.checkpoint import CheckpointError, resolve_checkpoint, save_checkpoint
from s3cmn.utils.checkpoints import read_checkpoint_json

__all__ = ["FORMAT", "build_task_model", "load_task_model", "save_task_checkpoint"]

FORMAT = "s3cmn-task"
MODEL_FILE = "model.safetensors"
SPEC_FILE = "config.json"
KINDS = ("vision-s3cmn", "vision-cnn", "dynamics-s3cmn", "dynamics-gru")


def build_task_model(spec: dict[str, Any]) -> nn.Module:
    """A freshly initialised model from its spec: ``kind``, ``model`` (S3CMNConfig fields), ``task`` (TaskConfig
    fields) and, by kind, ``image_shape`` / ``num_classes`` / ``width``."""
    from s3cmn.tasks.baselines import CNNBaseline, GRUBaseline
    from s3cmn.tasks.models import DynamicsS3CMN, VisionS3CMN

    kind = spec.get("kind")
    if kind not in KINDS:
        raise CheckpointError(f"unknown task model kind {kind!r}: expected one of {KINDS}")
    task = TaskConfig.from_dict(spec["task"])
    if kind == "vision-s3cmn":
        return VisionS3CMN(S3CMNConfig(**spec["model"]), task, tuple(spec["image_shape"]), spec["num_classes"])
    if kind == "vision-cnn":
        return CNNBaseline(task, tuple(spec["image_shape"]), spec["num_classes"], spec["width"])
    if kind == "dynamics-s3cmn":
        return DynamicsS3CMN(S3CMNConfig(**spec["model"]), task)
    return GRUBaseline(task, spec["width"])


class _TaskWeights:
    """What :func:`save_checkpoint` calls ``save_pretrained`` on: the weights as safetensors, the spec as JSON."""

    def __init__(self, model: nn.Module, spec: dict[str, Any]) -> None:
        self.model, self.spec = model, spec

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        from safetensors.torch import save_file

        tensors = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        save_file(tensors, str(Path(directory) / MODEL_FILE), metadata={"format": FORMAT})
        (Path(directory) / SPEC_FILE).write_text(json.dumps({"format": FORMAT, **self.spec}, indent=1),
                                                 encoding="utf-8")


def save_task_checkpoint(folder: str | os.PathLike, model: nn.Module, spec: dict[str, Any], optimizer: Any,
                         scheduler: Any, trainer_state: dict[str, Any]) -> Path:
    """Write the model, its spec and the training state to ``folder`` atomically."""
    return save_checkpoint(folder, _TaskWeights(model, spec), optimizer, scheduler, trainer_state)


def read_spec(folder: str | os.PathLike) -> dict[str, Any]:
    """The spec (``config.json``) of the task checkpoint in ``folder``; an error if it is not one."""
    path = resolve_checkpoint(folder) / SPEC_FILE
    spec = read_checkpoint_json(path, f"{path.parent} is not a task checkpoint: {SPEC_FILE} is missing")
    if spec.get("format") != FORMAT:
        raise CheckpointError(f"{path.parent} is not a task checkpoint (an LM checkpoint? evaluate it without "
                              "--task)")
    return spec


def load_task_model(folder: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """The model saved in ``folder`` (eval mode) and its spec; safetensors and JSON only, strict keys."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = resolve_checkpoint(folder)  # once: the spec and the weights of one snapshot
    spec = read_spec(path)
    model = build_task_model(spec)
    try:
        tensors = load_file(str(path / MODEL_FILE))
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} is incomplete: {MODEL_FILE} is missing") from None
    except SafetensorError as err:
        raise CheckpointError(f"{path / MODEL_FILE} is corrupt ({err})") from None
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise CheckpointError(f"{path / MODEL_FILE} does not fit its {SPEC_FILE} ({first})") from None
    return model.eval(), spec

"""The checkpoint folder: its file names, which folder to read, its trainer state, and the errors of loading.

Every loader in the package raises one of three errors, all :class:`CheckpointError` (a ``ValueError``),
each a one-line message naming the folder, what is wrong and what to do:

- :class:`MissingCheckpointError`: nothing there (no folder, no checkpoint of a run);
- :class:`CorruptCheckpointError`: the files are there but damaged, incomplete or do not fit together;
- :class:`CheckpointFormatError`: a folder of another kind (a run folder, an int8 checkpoint where an fp32
  one is read, a file format that is never loaded).

The model itself is loaded by :func:`s3cmn.modeling.loading.load_model`; training checkpoints are written
by :mod:`s3cmn.training.checkpoint`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
STATE_FILE = "trainer_state.json"  # written by training: step, tokens, data position, settings
QUANTIZED_MANIFEST = "quantization.json"  # written by s3cmn.quantization.save_quantized
RUN_CHECKPOINTS = ("best", "last")  # the checkpoints in a training run's output folder
SNAPSHOT = ".snapshot-"  # ``last`` is a symlink to ``last.snapshot-<id>`` (s3cmn.training.checkpoint)
DELETING = ".deleting-"  # a replaced snapshot is renamed to ``last.deleting-<id>``, then deleted

T = TypeVar("T")


class CheckpointError(ValueError):
    """A checkpoint cannot be used; the message says why and what to do."""


class MissingCheckpointError(CheckpointError):
    """There is no checkpoint at the path."""


class CorruptCheckpointError(CheckpointError):
    """The checkpoint's files are damaged, incomplete, or do not fit together (weights vs config)."""


class CheckpointFormatError(CheckpointError):
    """The folder is a checkpoint of another kind, or holds a file in a format that is never loaded."""


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type name if it has none), for one-line errors."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def resolve_checkpoint(folder: str | os.PathLike) -> Path:
    """The training checkpoint to read: ``folder`` itself, or ``folder.old`` left by a crash between the
    final renames of a save."""
    final = Path(folder)
    if (final / STATE_FILE).is_file():
        return final.resolve() if final.is_symlink() else final  # the snapshot: one version of the checkpoint
    old = final.with_name(final.name + ".old")
    if (old / STATE_FILE).is_file():
        logger.warning("checkpoint %s is incomplete; using %s left by an interrupted save", final, old)
        return old
    if final.exists():
        raise CorruptCheckpointError(f"checkpoint {final} is incomplete: {STATE_FILE} is missing; start without "
                                     "--resume")
    raise MissingCheckpointError(f"no checkpoint at {final}: train without --resume first (or check --output-dir)")


def read_checkpoint(folder: str | os.PathLike, load: Callable[[Path], T], attempts: int = 20) -> T:
    """``load(path)`` of the checkpoint ``folder``, robust to a training run replacing it meanwhile.

    A symlink (``last``, ``best``) is resolved once and ``load`` reads that snapshot. A save re-points the
    symlink, then renames the old snapshot away and deletes it; a load that overlapped that fails or may
    miss files, so when the snapshot lost its name during the load, the load is repeated on the new one.
    The result is always one whole checkpoint, never a mix of two. A plain folder is loaded once.
    """
    folder = Path(folder)
    for _ in range(attempts):
        if not folder.is_symlink():
            return load(folder)
        snapshot = folder.resolve()
        try:
            result = load(snapshot)
        except (CheckpointError, OSError):
            if snapshot.exists():  # still whole: the error is real
                raise
            continue
        if snapshot.exists():  # it kept its name throughout, so every file read was of this snapshot
            return result
    raise CorruptCheckpointError(f"{folder} was replaced {attempts} times while it was read: a training run saves "
                                 "it faster than it loads; try again, or copy the checkpoint first")


def read_checkpoint_json(path: str | os.PathLike, missing: str | None = None) -> dict[str, Any]:
    """A JSON mapping of a checkpoint folder; ``missing``: the message when the file is not there."""
    path = Path(path)
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MissingCheckpointError(missing or f"{path} is missing") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CorruptCheckpointError(f"{path} is corrupt ({type(err).__name__}: {first_line(err)})") from None
    if not isinstance(values, dict):
        raise CorruptCheckpointError(f"{path} is corrupt: it holds a {type(values).__name__}, not a mapping")
    return values


def read_trainer_state(folder: str | os.PathLike) -> dict[str, Any]:
    """``trainer_state.json`` of a training checkpoint folder, as a mapping."""
    path = Path(folder) / STATE_FILE
    return read_checkpoint_json(path, f"{path} is missing: {folder} is not a training checkpoint")


def model_folder_error(folder: Path) -> CheckpointError | None:
    """Why ``folder`` is not a model folder (``save_pretrained``) that can be read, or None if it may be one."""
    if not folder.is_dir():
        return MissingCheckpointError(f"checkpoint {folder} does not exist or is not a folder")
    if (folder / QUANTIZED_MANIFEST).is_file():
        return CheckpointFormatError(f"{folder} is an int8 checkpoint (save_quantized): load it with "
                                     "s3cmn.quantization.load_for_inference (s3cmn-generate), or give the fp32 folder")
    if not (folder / CONFIG_FILE).is_file():
        inner = [folder / n for n in RUN_CHECKPOINTS if (folder / n / CONFIG_FILE).is_file()]
        hint = f"; it holds training checkpoints: use {inner[0]}" if inner else ""
        return CheckpointFormatError(f"{folder} is not a model checkpoint: {CONFIG_FILE} is missing{hint}")
    return None

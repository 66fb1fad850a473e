"""``load_model``: the one loader of a saved model folder, for evaluation, inference and resumed training.

It is :meth:`S3CMNForCausalLM.from_pretrained` on a local folder, with the failures turned into the
one-line errors of :mod:`s3cmn.utils.checkpoints` (missing, corrupt, another format).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from s3cmn.utils.checkpoints import CorruptCheckpointError, first_line, model_folder_error, read_checkpoint


def load_model(path: str | os.PathLike) -> Any:
    """The ``S3CMNForCausalLM`` saved in the folder ``path`` (weights, config, memory), in eval mode.

    Raises :class:`~s3cmn.utils.checkpoints.MissingCheckpointError` (no folder),
    :class:`~s3cmn.utils.checkpoints.CheckpointFormatError` (a run folder, an int8 checkpoint) or
    :class:`~s3cmn.utils.checkpoints.CorruptCheckpointError` (unreadable, incomplete or mismatched files, a
    config.json this version cannot read).
    """
    # ``last`` of a running training may be replaced while it is read: one snapshot, never a mix
    return read_checkpoint(Path(path).expanduser(), _load_folder)


def _load_folder(folder: Path) -> Any:
    from s3cmn.modeling.lm import S3CMNForCausalLM

    error = model_folder_error(folder)
    if error is not None:
        raise error
    try:
        return S3CMNForCausalLM.from_pretrained(str(folder))
    except FileNotFoundError as err:  # a part of the folder (weights, a memory store) is not there
        raise CorruptCheckpointError(f"checkpoint {folder} is incomplete: {first_line(err)}") from None
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as err:
        raise CorruptCheckpointError(f"cannot load the checkpoint {folder}: {first_line(err)}") from None

"""Training checkpoints: written atomically, loaded without executing pickled code.

A checkpoint is a folder::

    model.safetensors, config.json, memory/     the model (save_pretrained)
    tokenizer files                             the tokenizer, so the folder is self-contained
    optimizer.pt, scheduler.pt                  state dicts of tensors and numbers (loaded weights_only=True)
    trainer_state.json                          step, epoch, tokens, data position, RNG states, best loss

It is written to ``<name>.tmp`` and swapped in with renames, so an interrupted save never leaves a half
checkpoint under ``<name>``; if a crash falls between the renames, ``<name>.old`` is used.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.pt"
SCHEDULER_FILE = "scheduler.pt"


class CheckpointError(ValueError):
    """A checkpoint is missing, incomplete or corrupt."""


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states as JSON-ready values."""
    np_state = np.random.get_state()
    return {
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state().tolist(),
        "cuda": [s.tolist() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


def save_checkpoint(
    folder: str | os.PathLike,
    model: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    trainer_state: dict[str, Any],
    tokenizer: Any = None,
) -> Path:
    """Write a complete checkpoint to ``folder`` atomically (temp folder + renames)."""
    final = Path(folder)
    tmp, old = final.with_name(final.name + ".tmp"), final.with_name(final.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp)
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp)
    torch.save(optimizer.state_dict(), tmp / OPTIMIZER_FILE)
    torch.save(scheduler.state_dict(), tmp / SCHEDULER_FILE)
    state = {**trainer_state, "rng": rng_state()}
    (tmp / STATE_FILE).write_text(json.dumps(state), encoding="utf-8")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def resolve_checkpoint(folder: str | os.PathLike) -> Path:
    """The folder to load: ``folder`` itself, or ``folder.old`` left by a crash between the final renames."""
    final = Path(folder)
    if (final / STATE_FILE).is_file():
        return final
    old = final.with_name(final.name + ".old")
    if (old / STATE_FILE).is_file():
        logger.warning("checkpoint %s is incomplete; using %s left by an interrupted save", final, old)
        return old
    if final.exists():
        raise CheckpointError(f"checkpoint {final} is incomplete: {STATE_FILE} is missing; start without --resume")
    raise CheckpointError(f"no checkpoint at {final}: train without --resume first (or check --output-dir)")


def load_training_state(
    folder: Path, optimizer: torch.optim.Optimizer, scheduler: Any
) -> dict[str, Any]:
    """Restore optimizer, scheduler and RNG states from ``folder``; return the trainer state."""
    try:
        state = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
        optimizer.load_state_dict(torch.load(folder / OPTIMIZER_FILE, weights_only=True))
        scheduler.load_state_dict(torch.load(folder / SCHEDULER_FILE, weights_only=True))
    except FileNotFoundError as err:
        raise CheckpointError(f"checkpoint {folder} is incomplete: {Path(err.filename).name} is missing") from None
    except (json.JSONDecodeError, RuntimeError, ValueError, KeyError) as err:
        raise CheckpointError(f"checkpoint {folder} is corrupt ({type(err).__name__}: {err})") from None
    set_rng_state(state["rng"])
    return state

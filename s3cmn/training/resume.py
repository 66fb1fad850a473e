"""Resuming a run: weights, optimiser, schedule and data position from ``last``, and the settings given now
(applied and logged where they can change, else refused with the reason)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from s3cmn.modeling.loading import load_model
from s3cmn.run_config import TrainingConfig
from s3cmn.training.checkpoint import load_training_state, resolve_checkpoint
from s3cmn.training.state import TrainingError
from s3cmn.utils.checkpoints import CheckpointError, CorruptCheckpointError

logger = logging.getLogger(__name__)

_FIXED_ON_RESUME = {
    "sequence_length": "the training blocks are cut at this length; the saved data position refers to them",
    "seed": "the data order is drawn from it; the saved data position refers to that order",
    "curriculum": "the curriculum decides which blocks each step sees",
    "curriculum_tokens": "the curriculum's ramp would jump",
    "curriculum_min_length": "the curriculum's ramp would jump",
    "curriculum_min_fraction": "the curriculum's ramp would jump",
    "curriculum_pacing": "the curriculum's ramp would jump",
}


_SCHEDULE = ("learning_rate", "warmup_steps", "scheduler", "min_lr_ratio", "num_epochs", "max_steps", "batch_size",
             "gradient_accumulation_steps", "max_time", "max_tokens")  # the last two: runs with no step horizon


_NOT_COMPARED = ("resume", "overwrite", "output_dir", "force")


def resume_run(model: Any, out_dir: Path, optimizer: Any, scheduler: Any, sampler: Any,
            training: TrainingConfig) -> dict[str, Any]:
    """Load ``out_dir/last`` into the model, optimiser, schedule and sampler; the saved trainer state."""
    folder = resolve_checkpoint(out_dir / "last")
    _load_model_state(model, folder)
    state = load_training_state(folder, optimizer, scheduler)
    saved = state.get("settings", {}).get("training")
    if saved is None:
        logger.warning("%s does not record the settings it was trained with (an older checkpoint): the settings "
                       "given now are used as they are", folder)
    else:
        _apply_changed_settings(saved, training, optimizer, scheduler, state["step"])
    sampler.load_state_dict(state["sampler"])
    model.memory_bank.writes = state["memory_writes"]
    logger.info("resumed from %s at step %d (%d tokens)", folder, state["step"], state["tokens"])
    return state


def _apply_changed_settings(saved: dict[str, Any], training: TrainingConfig, optimizer: Any, scheduler: Any,
                            step: int) -> None:
    """Settings that differ from the checkpoint's: refused if they cannot apply, else applied and logged."""
    now = training.to_dict()
    changed = {k: (saved[k], now[k]) for k in now if k in saved and k not in _NOT_COMPARED and saved[k] != now[k]}
    refused = [f"{k} (checkpoint {a!r}, given {b!r}: {_FIXED_ON_RESUME[k]})" for k, (a, b) in changed.items()
               if k in _FIXED_ON_RESUME]
    if refused:
        raise TrainingError("cannot resume with a different " + "; ".join(refused) + ". Resume with the "
                            "checkpoint's value, or start a new run (--overwrite or another --output-dir)")
    if "weight_decay" in changed:
        optimizer.param_groups[0]["weight_decay"] = training.weight_decay  # group 0: the decayed matrices
    if any(k in changed for k in _SCHEDULE):
        scheduler.base_lrs = [training.learning_rate for _ in optimizer.param_groups]
        for group, base, factor in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas, strict=True):
            group["initial_lr"], group["lr"] = base, base * factor(scheduler.last_epoch)
        scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]
    for key, (old, new) in changed.items():
        note = "the schedule is rebuilt from the new settings" if key in _SCHEDULE else "applied from now on"
        logger.warning("resume: %s changed from %r to %r (%s)", key, old, new, note)
    if any(k in changed for k in _SCHEDULE):
        logger.warning("resume: learning rate at step %d is now %.3g", step, optimizer.param_groups[0]["lr"])


def _load_model_state(model: Any, folder: Path) -> None:
    """Weights and memory of a training checkpoint into ``model`` (strict; safetensors only).

    The model's settings must be the checkpoint's: a resumed run keeps its architecture.
    """
    loaded = load_model(folder)
    if len(loaded.memory_bank) and not (folder / "memory").is_dir():  # from_pretrained would start them empty
        raise CorruptCheckpointError(
            f"checkpoint {folder} has no memory/ folder, but its model reads a memory (use_memory): the run would "
            "go on with empty stores; restore the folder, or start a new run (--overwrite or another --output-dir)"
        )
    saved, now = loaded.config.settings_dict(), model.config.settings_dict()
    changed = [f"{k} (checkpoint {saved.get(k)!r}, given {v!r})" for k, v in now.items() if saved.get(k) != v]
    if changed:
        raise CheckpointError(
            f"cannot resume {folder} with different model settings: {', '.join(changed[:6])}"
            f"{' and more' if len(changed) > 6 else ''}. A resumed run keeps its architecture: drop those "
            "settings, or start a new run (--overwrite or another --output-dir)"
        )
    model.load_state_dict(loaded.state_dict())
    model.memory_bank = loaded.memory_bank

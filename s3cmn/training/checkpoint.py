"""Training checkpoints: written atomically, loaded without executing pickled code.

A checkpoint is a folder::

    model.safetensors, config.json, memory/     the model (save_pretrained)
    tokenizer files                             the tokenizer, so the folder is self-contained
    optimizer.pt, scheduler.pt                  state dicts of tensors and numbers (loaded weights_only=True)
    trainer_state.json                          step, epoch, tokens, data position, RNG states, best loss

``<name>`` (``last``, ``best``) is a symlink to the snapshot folder ``<name>.snapshot-<id>`` that holds these
files. A save writes a new snapshot, then replaces the symlink in one ``os.replace``, then deletes the
previous snapshot (renamed to ``<name>.deleting-<id>`` first, so a snapshot that still has its name is whole).
So an interrupted save or a full disk never leaves a half checkpoint under ``<name>``, and a reader that
resolves ``<name>`` once (:func:`~s3cmn.utils.checkpoints.read_checkpoint`) sees the old or the new
checkpoint, never a mix. A ``<name>`` that is a plain folder (written before snapshots, or a copy of a run)
is replaced the old way: renamed to ``<name>.old``, which is used if a crash falls between the renames.

The output folder itself is guarded: :class:`RunLock` (``train.lock``, the PID and host of the run using
it) keeps a second run out, and :func:`check_output_dir` refuses to train over existing checkpoints unless
the run resumes them or was told to overwrite them.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import random
import shutil
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch

from s3cmn.utils.checkpoints import (
    DELETING,
    SNAPSHOT,
    STATE_FILE,
    CheckpointError,
    CheckpointFormatError,
    CorruptCheckpointError,
    first_line,
    read_trainer_state,
    resolve_checkpoint,
)

__all__ = ["CheckpointError", "RunLock", "check_output_dir", "clear_output_dir", "load_training_state",
           "read_run_settings", "remove_checkpoint", "resolve_checkpoint", "save_checkpoint"]

logger = logging.getLogger(__name__)

OPTIMIZER_FILE = "optimizer.pt"
SCHEDULER_FILE = "scheduler.pt"
LOCK_FILE = "train.lock"
CHECKPOINT_NAMES = ("last", "best")  # the order they are listed in messages
RUN_FILES = ("metrics.jsonl", "metrics.csv", "tensorboard")


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
    """Write a complete checkpoint and point ``folder`` (a symlink) at it atomically (module docstring).

    A write that fails (a full disk) deletes the partial snapshot and raises CheckpointError naming the file;
    ``folder`` still holds the previous checkpoint then.
    """
    from safetensors import SafetensorError

    final = Path(folder)
    snapshot = final.with_name(f"{final.name}{SNAPSHOT}{uuid.uuid4().hex[:12]}")
    try:
        _write_snapshot(snapshot, model, optimizer, scheduler, trainer_state, tokenizer)
    except (OSError, RuntimeError, SafetensorError) as err:  # torch reports a failed write as a RuntimeError
        shutil.rmtree(snapshot, ignore_errors=True)
        named = isinstance(err, OSError) and err.filename and err.strerror
        cause = f"{err.filename}: {err.strerror}" if named else f"{snapshot}: {first_line(err)}"
        kept = f"{final} still holds the previous checkpoint" if final.exists() else "no checkpoint was written"
        raise CheckpointError(f"could not write the checkpoint {final} ({cause}); {kept}. Free disk space (or "
                              "choose another --output-dir) and resume") from None
    _point_to(final, snapshot)
    _delete_snapshots(final, keep=snapshot)
    return final


def _write_snapshot(snapshot: Path, model: Any, optimizer: torch.optim.Optimizer, scheduler: Any,
                    trainer_state: dict[str, Any], tokenizer: Any) -> None:
    snapshot.mkdir(parents=True)
    model.save_pretrained(snapshot)
    if tokenizer is not None:
        tokenizer.save_pretrained(snapshot)
    torch.save(optimizer.state_dict(), snapshot / OPTIMIZER_FILE)
    torch.save(scheduler.state_dict(), snapshot / SCHEDULER_FILE)
    state = {**trainer_state, "rng": rng_state()}
    (snapshot / STATE_FILE).write_text(json.dumps(state), encoding="utf-8")


def _point_to(final: Path, snapshot: Path) -> None:
    """Make ``final`` a symlink to ``snapshot`` (relative, so the run folder can be moved) in one rename."""
    link = final.with_name(final.name + ".link")
    link.unlink(missing_ok=True)
    os.symlink(snapshot.name, link)
    if final.is_dir() and not final.is_symlink():  # a plain checkpoint folder: renaming cannot replace it
        old = final.with_name(final.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)  # a crash before the next rename: resolve_checkpoint reads ``old``
        os.replace(link, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(link, final)


def _delete_snapshots(final: Path, keep: Path) -> None:
    """Delete every snapshot of ``final`` but ``keep`` (and what interrupted saves left: .tmp, .deleting-*)."""
    for path in final.parent.glob(f"{final.name}{SNAPSHOT}*"):
        if path.name != keep.name:
            doomed = path.with_name(path.name.replace(SNAPSHOT, DELETING, 1))
            os.replace(path, doomed)  # renamed first: a snapshot that has its name is whole
    for path in [*final.parent.glob(f"{final.name}{DELETING}*"), final.with_name(final.name + ".tmp")]:
        shutil.rmtree(path, ignore_errors=True)


def load_training_state(
    folder: Path, optimizer: torch.optim.Optimizer, scheduler: Any
) -> dict[str, Any]:
    """Restore optimizer, scheduler and RNG states from ``folder``; return the trainer state."""
    state = read_trainer_state(folder)
    try:
        optimizer.load_state_dict(_load_tensors(folder / OPTIMIZER_FILE))
        scheduler.load_state_dict(_load_tensors(folder / SCHEDULER_FILE))
    except FileNotFoundError as err:
        raise CorruptCheckpointError(f"checkpoint {folder} is incomplete: {Path(err.filename).name} is missing") \
            from None
    except CheckpointError:
        raise
    except (RuntimeError, ValueError, KeyError) as err:
        raise CorruptCheckpointError(f"checkpoint {folder} is corrupt ({type(err).__name__}: {first_line(err)})") \
            from None
    set_rng_state(state["rng"])
    return state


def _load_tensors(path: Path) -> Any:
    """``torch.load(weights_only=True)``; a file that needs pickled code is refused, never executed."""
    corrupt = CorruptCheckpointError(f"{path} is corrupt (not a tensor file); restore the checkpoint, or start the "
                                     "run again with --overwrite")
    try:
        return torch.load(path, weights_only=True)
    except pickle.UnpicklingError as err:
        if "global" not in str(err).lower():  # not a refused Python object: the bytes are damaged
            raise corrupt from None
        raise CheckpointFormatError(
            f"{path} is not in a safe format: it holds pickled Python objects, which are never loaded (they "
            "could run code). s3cmn-train writes plain tensors: restore this checkpoint from a copy written by "
            "s3cmn-train, or start the run again with --overwrite"
        ) from None
    except OSError:  # a missing or unreadable file: the caller says which
        raise
    except Exception:  # damaged bytes fail anywhere in torch's restricted unpickler (UnicodeDecodeError,
        raise corrupt from None  # EOFError, IndexError, a bad zip, ...), never reaching any code


def read_run_settings(folder: str | os.PathLike) -> dict[str, dict[str, Any] | None]:
    """The settings a checkpoint was trained with: ``{"model", "training", "data"}`` (None where not saved).

    The model settings come from ``config.json``; training and data settings are in the trainer state of
    checkpoints written since they were recorded there (older ones give None).
    """
    from s3cmn.model_config import S3CMNConfig

    root = resolve_checkpoint(folder)
    state = read_trainer_state(root)
    try:
        model = S3CMNConfig.from_pretrained(str(root)).settings_dict()
    except (OSError, ValueError, TypeError) as err:
        raise CorruptCheckpointError(f"checkpoint {root} is unreadable ({type(err).__name__}: {err})") from None
    return {"model": model, "training": state.get("settings", {}).get("training"),
            "data": state.get("settings", {}).get("data")}


# ------------------------------------------------------------------------------------------------------
# the output folder: one run at a time, and no checkpoint replaced unless asked


def existing_checkpoints(folder: str | os.PathLike) -> list[str]:
    """Names of the checkpoints (and leftovers of interrupted saves) already in ``folder``."""
    root = Path(folder)
    names = [n + suffix for n in CHECKPOINT_NAMES for suffix in ("", ".old")]
    return [n for n in names if (root / n).is_dir()]


def check_output_dir(folder: str | os.PathLike, resume: bool, overwrite: bool) -> None:
    """Refuse to start a new run over checkpoints that are there, unless told how (resume or overwrite)."""
    if resume and overwrite:
        raise CheckpointError("--resume and --overwrite contradict each other: resume continues the run in "
                              "--output-dir, overwrite replaces it; give one of them")
    other = _read_lock(Path(folder) / LOCK_FILE) if (Path(folder) / LOCK_FILE).exists() else None
    if other is not None and other["pid"] != os.getpid() and not _lock_is_stale(other):
        raise CheckpointError(_in_use_message(Path(folder) / LOCK_FILE, other))
    found = existing_checkpoints(folder)
    if found and not resume and not overwrite:
        raise CheckpointError(
            f"{folder} already holds a run ({', '.join(found)}): pass --resume to continue it, or --overwrite "
            "to replace it (or choose another --output-dir)"
        )


def remove_checkpoint(folder: str | os.PathLike) -> list[str]:
    """Delete the checkpoint ``folder`` (``<run>/last``): its symlink, its snapshots and what interrupted saves
    left (.old, .tmp, .link); the names removed. ``shutil.rmtree`` refuses the symlink, and would keep them."""
    final = Path(folder)
    leftovers = [p for p in final.parent.glob(f"{final.name}.*-*") if SNAPSHOT in p.name or DELETING in p.name]
    removed = []
    for path in [final, *(final.with_name(final.name + s) for s in (".old", ".tmp", ".link")), *sorted(leftovers)]:
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)
        else:
            continue
        removed.append(path.name)
    return removed


def clear_output_dir(folder: str | os.PathLike) -> None:
    """Remove the checkpoints and metrics of an earlier run (``--overwrite``); other files stay."""
    root = Path(folder)
    removed = [name for n in CHECKPOINT_NAMES for name in remove_checkpoint(root / n)]
    for name in RUN_FILES:
        path = root / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        else:
            continue
        removed.append(name)
    if removed:
        logger.warning("--overwrite: removed %s from %s", ", ".join(removed), root)


class RunLock:
    """``<folder>/train.lock``: the PID and host of the one training run that may write to ``folder``.

    A lock whose process is gone (same host, PID not running or reused) is stale and taken over, with a
    log line; a live one stops the second run at once with a message naming the process.
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.path = Path(folder) / LOCK_FILE
        self.held = False

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        mine = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                "process_start": _process_start(os.getpid())}
        tmp = self.path.with_name(f"{LOCK_FILE}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(mine), encoding="utf-8")
        try:
            for _ in range(3):
                try:
                    os.link(tmp, self.path)  # atomic: fails if a lock is there, never half-written
                except FileExistsError:
                    self._take_over_if_stale()
                    continue
                self.held = True
                return
            raise CheckpointError(f"could not take the lock {self.path}: another run keeps taking it")
        finally:
            tmp.unlink(missing_ok=True)

    def _take_over_if_stale(self) -> None:
        other = _read_lock(self.path)
        if other is not None and not _lock_is_stale(other):
            raise CheckpointError(_in_use_message(self.path, other))
        what = "unreadable" if other is None else f"process {other['pid']} on {other['host']} is not running"
        logger.warning("taking over the stale lock %s (%s)", self.path, what)
        self.path.unlink(missing_ok=True)

    def release(self) -> None:
        if self.held:
            other = _read_lock(self.path)
            if other is not None and other.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False


def _in_use_message(path: Path, other: dict[str, Any]) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(other.get("started", 0)))
    return (f"{path.parent} is in use by another training run (process {other['pid']} on {other['host']}, "
            f"started {started}): wait for it to finish or stop it; if that process is gone, delete {path}")


def _read_lock(path: Path) -> dict[str, Any] | None:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {"pid": -1, "host": socket.gethostname()}  # removed meanwhile: free
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and isinstance(info.get("pid"), int) and "host" in info else None


def _lock_is_stale(info: dict[str, Any]) -> bool:
    """Only a lock of this host can be checked: its PID must be running and be the same process."""
    if info["host"] != socket.gethostname():
        return False
    pid = info["pid"]
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's live process
        return False
    start = _process_start(pid)
    if start is None:  # a zombie or no /proc: a zombie holds nothing
        return _is_zombie(pid)
    return info.get("process_start") is not None and start != info["process_start"]


def _process_start(pid: int) -> int | None:
    """The process's start time in clock ticks (Linux /proc), to tell a reused PID from the original."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == "Z" else int(fields[19])


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False

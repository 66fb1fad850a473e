"""Faults while a checkpoint is written: a full disk (ENOSPC) part-way through a checkpoint or a memory-store
save keeps the previous save loadable and names the file; a reader of ``last`` while the trainer replaces it
gets the old or the new checkpoint, never a mix."""

from __future__ import annotations

import errno
import io
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from s3cmn import S3CMNConfig, S3CMNForCausalLM
from s3cmn.memory import persist
from s3cmn.memory.settings import MemorySettings
from s3cmn.memory.store import FaissMemory
from s3cmn.modeling.loading import load_model
from s3cmn.training.checkpoint import CheckpointError, save_checkpoint
from s3cmn.training.loop import seed_everything
from s3cmn.utils.checkpoints import read_checkpoint, read_trainer_state

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def tiny_memory_lm() -> S3CMNForCausalLM:
    """A seeded ~20k-parameter LM over 50 tokens whose second block reads a FAISS memory."""
    seed_everything(0)
    return S3CMNForCausalLM(S3CMNConfig.from_preset(
        "tiny", vocab_size=50, embedding_dim=16, hidden_dim=16, num_layers=2, spiking_units=8, mamba_d_state=4,
        hyena_filter_dim=8, hyena_filter_length=16, use_memory=True, num_clusters=2, memory_compression_dim=4,
        memory_size=64, memory_write_stride=4))  # fmt: skip


def save_version(folder: Path, model: S3CMNForCausalLM, optimizer, scheduler, version: int) -> None:
    """Save ``model`` with every weight of its embedding set to ``version``, at trainer step ``version``."""
    with torch.no_grad():
        model.model.embed_tokens.weight.fill_(float(version))
    save_checkpoint(folder, model, optimizer, scheduler, {"step": version})


def loaded_version(folder: Path) -> int:
    """The version of the checkpoint ``folder`` holds; fails if its weights and its state disagree (a mix)."""
    def load(path: Path) -> tuple[S3CMNForCausalLM, dict]:
        return load_model(path), read_trainer_state(path)

    model, state = read_checkpoint(folder, load)
    weights = model.model.embed_tokens.weight
    assert torch.equal(weights, torch.full_like(weights, float(state["step"]))), "weights of one save, state of another"
    assert model.memory_bank.store(1) is not None
    return state["step"]


@pytest.fixture
def trainer() -> tuple:
    model = tiny_memory_lm()
    model(torch.randint(0, 50, (2, 16)), write_memory=True)  # something in the memory store
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return model, optimizer, scheduler


def entries(folder: Path) -> list[str]:
    return sorted(p.name.split("-")[0] for p in folder.iterdir())


# --- a full disk --------------------------------------------------------------------------------------


def test_a_full_disk_during_a_checkpoint_save_keeps_the_previous_one_and_names_the_file(tmp_path, trainer,
                                                                                        monkeypatch) -> None:
    last = tmp_path / "last"
    save_version(last, *trainer, version=1)
    real_save = torch.save

    def full_disk_save(obj, f, *args, **kwargs):  # half the file reaches the disk, then the disk is full
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        Path(f).write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(f))

    monkeypatch.setattr(torch, "save", full_disk_save)
    with pytest.raises(CheckpointError) as err:
        save_version(last, *trainer, version=2)
    message = str(err.value)
    assert "\n" not in message and "No space left on device" in message
    assert f"could not write the checkpoint {last} (" in message and "optimizer.pt" in message, message
    assert f"{last} still holds the previous checkpoint" in message
    assert loaded_version(last) == 1
    assert entries(tmp_path) == ["last", "last.snapshot"], "the partial snapshot was left on the disk"


class FullDiskFile:
    """A file opened for writing on a disk with ``budget`` bytes left: the write that passes it fails (ENOSPC)."""

    def __init__(self, handle, budget: int) -> None:
        self.handle, self.budget = handle, budget

    def write(self, data: bytes) -> int:
        self.handle.write(data[: self.budget])
        self.handle.flush()
        raise OSError(ENOSPC.errno, ENOSPC.strerror)

    def __getattr__(self, name: str):
        return getattr(self.handle, name)

    def __enter__(self) -> FullDiskFile:
        return self

    def __exit__(self, *exc) -> None:
        self.handle.close()


def full_disk_open(budget: int):
    """``open`` whose files for writing take ``budget`` bytes and then fail with ENOSPC, as a full disk does."""
    def fake_open(path, mode="r", *args, **kwargs):
        handle = open(path, mode, *args, **kwargs)
        return FullDiskFile(handle, budget) if "w" in mode else handle

    return fake_open


def test_a_full_disk_during_a_memory_store_save_keeps_the_previous_save(tmp_path, monkeypatch) -> None:
    memory = FaissMemory(MemorySettings(dim=16, memory_size=64, num_clusters=2, memory_compression_dim=4))
    memory.write(torch.randn(20, 16))
    memory.save(tmp_path)
    saved = memory.entries()["values"].copy()
    memory.write(torch.randn(20, 16))
    monkeypatch.setattr(persist, "open", full_disk_open(100), raising=False)
    with pytest.raises(OSError) as err:
        memory.save(tmp_path)
    assert err.value.errno == errno.ENOSPC and Path(err.value.filename).parent == tmp_path
    assert str(tmp_path) in str(err.value) and "No space left on device" in str(err.value)
    monkeypatch.undo()
    assert not [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name], "a half-written file was left"
    np.testing.assert_array_equal(FaissMemory.load(tmp_path).entries()["values"], saved)


def test_a_full_disk_during_the_memory_save_of_a_checkpoint(tmp_path, trainer, monkeypatch) -> None:
    last = tmp_path / "last"
    save_version(last, *trainer, version=1)
    monkeypatch.setattr(persist, "open", full_disk_open(100), raising=False)
    with pytest.raises(CheckpointError) as err:
        save_version(last, *trainer, version=2)
    assert "memory" in str(err.value) and ".safetensors: No space left on device" in str(err.value), str(err.value)
    monkeypatch.undo()
    assert loaded_version(last) == 1
    assert entries(tmp_path) == ["last", "last.snapshot"]


# --- a reader while the trainer replaces `last` --------------------------------------------------------


def test_a_reader_of_last_during_saves_gets_one_whole_version_every_time(tmp_path, trainer) -> None:
    last = tmp_path / "last"
    save_version(last, *trainer, version=1)
    versions = 30
    done = threading.Event()
    loaded = threading.Event()  # a read finished: the writer saves again only then, as a trainer that
    failure: list[BaseException] = []  # saves between steps does, so no machine's speed can starve the reader

    def writer() -> None:
        try:
            for version in range(2, versions + 1):
                loaded.clear()
                save_version(last, *trainer, version=version)  # overlaps the reader's load in progress
                loaded.wait(timeout=60)
        except BaseException as err:  # noqa: BLE001 - reported by the main thread
            failure.append(err)
        finally:
            done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    seen = []
    while not done.is_set() or not seen:
        seen.append(loaded_version(last))  # raises on a failed load or a mix
        loaded.set()
    thread.join()
    assert not failure, failure
    assert seen == sorted(seen) and set(seen) <= set(range(1, versions + 1)), seen
    assert loaded_version(last) == versions
    assert entries(tmp_path) == ["last", "last.snapshot"]


def test_a_load_overlapping_a_save_is_repeated_on_the_new_snapshot(tmp_path, trainer) -> None:
    last = tmp_path / "last"
    save_version(last, *trainer, version=1)
    calls = []

    def load(path: Path) -> dict:
        calls.append(path.name)
        if len(calls) == 1:  # the trainer replaces `last` (and deletes this snapshot) in the middle of the read
            save_version(last, *trainer, version=2)
        return read_trainer_state(path)

    assert read_checkpoint(last, load)["step"] == 2
    assert len(calls) == 2 and calls[0] != calls[1]


def test_a_plain_checkpoint_folder_is_replaced_by_a_snapshot(tmp_path, trainer) -> None:
    last = tmp_path / "last"
    save_version(last, *trainer, version=1)
    os.replace(last.resolve(), tmp_path / "plain")  # a copied run: `last` is a folder
    last.unlink()
    os.replace(tmp_path / "plain", last)
    assert loaded_version(last) == 1
    save_version(last, *trainer, version=2)
    assert last.is_symlink() and loaded_version(last) == 2
    assert entries(tmp_path) == ["last", "last.snapshot"]


def test_overwrite_removes_the_symlinks_their_snapshots_and_leftovers(tmp_path, trainer) -> None:
    from s3cmn.training.checkpoint import clear_output_dir

    for name in ("last", "best"):
        save_version(tmp_path / name, *trainer, version=1)
    (tmp_path / "last.snapshot-0123456789ab").mkdir()  # an interrupted save's snapshot
    (tmp_path / "notes.txt").write_text("kept")
    clear_output_dir(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]

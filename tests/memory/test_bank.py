"""MemoryBank: lookup by layer, staging, commit after the forward, discard, modes, save/load."""

from __future__ import annotations

import shutil

import pytest
import torch

from s3cmn.memory.bank import MemoryBank
from s3cmn.memory.settings import MemorySettings
from s3cmn.memory.store import FaissMemory


def _bank(stride: int = 1) -> MemoryBank:
    kw = dict(memory_size=64, num_clusters=4, memory_compression=False, memory_write_stride=stride,
              max_retrieval_distance=2.0)
    return MemoryBank({layer: FaissMemory(MemorySettings(dim=8, layer_idx=layer, **kw)) for layer in (0, 2)})


def test_lookup_by_layer():
    bank = _bank()
    assert bank.layers == [0, 2] and len(bank) == 2 and 2 in bank and 1 not in bank
    assert bank.store(0) is bank[0] and bank.store(1) is None
    assert [layer for layer, _ in bank] == [0, 2]
    with pytest.raises(KeyError, match="layers are \\[0, 2\\]"):
        bank[1]
    with pytest.raises(TypeError, match="ints"):
        bank["0"] = bank[0]


def test_stage_then_commit_writes_every_stride_position():
    bank = _bank(stride=2)
    h = torch.randn(3, 4, 8)  # (B, T, D)
    ids = torch.randint(0, 50, (3, 4))
    with bank.forward_pass(read=True, write=True):
        bank.stage(0, h)
        bank.stage(1, h)  # no store for layer 1: ignored
        assert bank.pending == [0] and len(bank[0]) == 0  # staged, not written
        written = bank.commit(ids)
    assert written == 3 * 2 and len(bank[0]) == 6 and len(bank[2]) == 0
    assert bank.pending == [] and bank.writes == 1
    torch.testing.assert_close(torch.from_numpy(bank[0].entries()["values"]), h[:, 1::2].reshape(6, 8))
    assert bank[0].entries()["tokens"][0, -2:].tolist() == ids[0, :2].tolist()


def test_discard_and_write_off_write_nothing():
    bank = _bank()
    h, ids = torch.randn(1, 4, 8), torch.zeros(1, 4, dtype=torch.long)
    with bank.forward_pass(write=True):
        bank.stage(0, h)
        bank.discard()
        assert bank.commit(ids) == 0
    with bank.forward_pass(write=False):
        bank.stage(0, h)
        assert bank.pending == []
    assert len(bank[0]) == 0


def test_read_off_hides_the_stores_but_still_writes():
    bank = _bank()
    with bank.forward_pass(read=False, write=True):
        assert bank.store(0) is None
        bank.stage(0, torch.randn(1, 2, 8))
        bank.commit(torch.zeros(1, 2, dtype=torch.long))
    assert len(bank[0]) == 2 and bank.store(0) is bank[0]  # the mode ends with the pass


def test_an_exception_in_the_pass_discards_the_staged_states():
    bank = _bank()
    with pytest.raises(RuntimeError), bank.forward_pass(write=True):
        bank.stage(0, torch.randn(1, 2, 8))
        raise RuntimeError("forward failed")
    assert bank.pending == [] and len(bank[0]) == 0


def test_a_segment_never_reads_what_it_staged():
    """Causality: during the pass the store holds only earlier segments' entries."""
    bank = _bank()
    first, second = torch.randn(1, 4, 8), torch.randn(1, 4, 8)
    ids = torch.zeros(1, 4, dtype=torch.long)
    with bank.forward_pass(write=True):
        bank.stage(0, first)
        bank.commit(ids)
    with bank.forward_pass(write=True):
        bank.stage(0, second)
        found = bank.store(0).search(second[0], k=4)
        stored = torch.from_numpy(bank[0].entries()["values"])
        assert len(bank[0]) == 4
        torch.testing.assert_close(stored, first[0])  # only the first segment
        assert found.hit.any()
        bank.commit(ids)
    assert len(bank[0]) == 8


def test_stage_shape_and_commit_mismatch_errors():
    bank = _bank()
    with bank.forward_pass(write=True):
        with pytest.raises(ValueError, match=r"\(B, T, D\)"):
            bank.stage(0, torch.randn(8))
        bank.stage(0, torch.randn(2, 8))  # step mode: (B, D) is one token
        assert bank.commit(torch.zeros(2, 1, dtype=torch.long)) == 2
        bank.stage(0, torch.randn(1, 3, 8))
        with pytest.raises(ValueError, match="do not match input_ids"):
            bank.commit(torch.zeros(1, 4, dtype=torch.long))


def test_save_load_copy_reset(tmp_path):
    bank = _bank()
    with bank.forward_pass(write=True):
        bank.stage(2, torch.randn(2, 3, 8))
        bank.commit(torch.arange(6).view(2, 3))
    bank.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0", "2"]
    other = _bank()
    other.load(tmp_path)
    assert len(other[2]) == 6 and len(other[0]) == 0
    clone = bank.copy()
    bank.reset()
    assert len(bank[2]) == 0 and len(clone[2]) == 6 and clone.writes == 1
    assert set(clone.stats()) == {0, 2} and clone.stats()[2].entries == 6
    shutil.rmtree(tmp_path / "0")
    with pytest.raises(FileNotFoundError, match="memory of block 0 is missing"):
        other.load(tmp_path)


def test_outside_a_pass_the_stores_are_read_and_nothing_is_staged():
    bank = _bank()
    assert bank.store(0) is bank[0]
    bank.stage(0, torch.randn(1, 2, 8))
    assert bank.pending == []

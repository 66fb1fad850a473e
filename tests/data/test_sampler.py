"""BlockSampler: deterministic, sharded, and resumable mid-epoch."""

from __future__ import annotations

import itertools

import pytest

from s3cmn.data import BlockSampler, DataError


def _take(sampler: BlockSampler, n: int) -> list[int]:
    """The next ``n`` indices, across epoch boundaries, as a training loop would draw them."""
    out: list[int] = []
    while len(out) < n:
        out += list(itertools.islice(iter(sampler), n - len(out)))
    return out


def test_each_epoch_is_a_seeded_permutation() -> None:
    sampler = BlockSampler(50, seed=3)
    epoch0, epoch1 = _take(sampler, 50), _take(sampler, 50)
    assert sorted(epoch0) == sorted(epoch1) == list(range(50))
    assert epoch0 != epoch1
    assert _take(BlockSampler(50, seed=3), 100) == epoch0 + epoch1  # deterministic
    assert _take(BlockSampler(50, seed=4), 50) != epoch0
    assert _take(BlockSampler(50, seed=3, shuffle=False), 50) == list(range(50))


@pytest.mark.parametrize(("num_blocks", "world_size"), [(12, 2), (12, 3), (11, 3), (7, 7)])
def test_shards_are_disjoint_equal_and_cover_the_blocks(num_blocks: int, world_size: int) -> None:
    for epoch in range(2):
        shards = [BlockSampler(num_blocks, seed=1, rank=r, world_size=world_size) for r in range(world_size)]
        for shard in shards:
            shard.set_epoch(epoch)
        taken = [list(shard) for shard in shards]
        assert {len(t) for t in taken} == {num_blocks // world_size}  # ranks stay in lockstep
        union = set().union(*map(set, taken))
        assert sum(map(len, taken)) == len(union)  # disjoint
        assert len(union) == num_blocks - num_blocks % world_size  # all but the remainder
        if num_blocks % world_size == 0:
            assert union == set(range(num_blocks))


@pytest.mark.parametrize("stop", [0, 7, 20, 33, 40])  # start, mid-epoch, exactly at an epoch end, ...
def test_resume_from_state_dict_gives_the_identical_remaining_order(stop: int) -> None:
    uninterrupted = _take(BlockSampler(20, seed=9, rank=1, world_size=2), 45)  # 10 per epoch for rank 1

    first = BlockSampler(20, seed=9, rank=1, world_size=2)
    head = _take(first, stop)
    state = first.state_dict()
    resumed = BlockSampler(20, seed=9, rank=1, world_size=2)
    resumed.load_state_dict(state)
    tail = _take(resumed, 45 - stop)

    assert head + tail == uninterrupted
    assert resumed.epoch == 4 and resumed.position == 5


def test_state_dict_is_plain_and_checked_on_load() -> None:
    sampler = BlockSampler(30, seed=2)
    _take(sampler, 12)
    state = sampler.state_dict()
    assert state == {
        "epoch": 0,
        "position": 12,
        "seed": 2,
        "num_blocks": 30,
        "shuffle": True,
        "world_size": 1,
    }
    with pytest.raises(DataError, match="saved num_blocks=30 but this run has num_blocks=31"):
        BlockSampler(31, seed=2).load_state_dict(state)
    with pytest.raises(DataError, match="seed"):
        BlockSampler(30, seed=5).load_state_dict(state)


def test_bad_arguments() -> None:
    with pytest.raises(DataError, match="rank"):
        BlockSampler(10, seed=0, rank=2, world_size=2)
    with pytest.raises(DataError, match="3 blocks cannot give each of 4 ranks one"):
        BlockSampler(3, seed=0, world_size=4)

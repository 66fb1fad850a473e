"""A deterministic, resumable, sharded order over training blocks.

Epoch ``e`` visits the blocks in the order ``permutation(seed, e)`` (numpy's PCG64 seeded with
``[seed, e]``: the same on every machine and process). With ``world_size`` ranks, the first
``world_size * (num_blocks // world_size)`` entries are dealt round-robin, so every rank gets the same
number of blocks (data-parallel steps stay in lockstep), the shards are disjoint, and together they
cover all blocks except at most ``world_size - 1`` per epoch (a different few each epoch when shuffled).

The sampler counts the indices it has handed out; ``state_dict()`` saves ``(epoch, position)`` and
``load_state_dict()`` continues with exactly the remaining order. Use it with a ``DataLoader`` with
``num_workers=0`` (the blocks are already in memory): worker processes prefetch indices ahead of the
training step, so the count would run ahead of what was trained on.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from torch.utils.data import Sampler

from s3cmn.data.errors import DataError


class BlockSampler(Sampler[int]):
    """Block indices for one rank: a seeded permutation per epoch, dealt round-robin over ranks."""

    def __init__(
        self, num_blocks: int, seed: int, shuffle: bool = True, rank: int = 0, world_size: int = 1
    ) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise DataError(
                f"BlockSampler: need 0 <= rank < world_size, got rank={rank}, world_size={world_size}"
            )
        if num_blocks < world_size:
            raise DataError(
                f"BlockSampler: {num_blocks} blocks cannot give each of {world_size} ranks one: "
                "give more text or a shorter --sequence-length"
            )
        self.num_blocks = num_blocks
        self.seed = seed
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.num_samples = num_blocks // world_size  # per rank and epoch
        self.epoch = 0
        self.position = 0  # indices of this epoch already handed out

    def epoch_order(self, epoch: int) -> np.ndarray:
        """This rank's block indices for ``epoch``, in order (num_samples,)."""
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(self.num_blocks)
        else:
            order = np.arange(self.num_blocks)
        return order[self.rank : self.num_samples * self.world_size : self.world_size]

    def __iter__(self) -> Iterator[int]:
        """The rest of the current epoch, from ``position``; when it is exhausted the next epoch starts."""
        order = self.epoch_order(self.epoch)
        while self.position < self.num_samples:
            index = int(order[self.position])
            self.position += 1
            yield index
        self.epoch += 1
        self.position = 0

    def __len__(self) -> int:
        """Blocks per epoch for this rank."""
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` from its beginning (as ``DistributedSampler.set_epoch``)."""
        self.epoch = epoch
        self.position = 0

    def state_dict(self) -> dict[str, Any]:
        """The position to resume from, with the settings it is only valid for (plain ints and bools)."""
        return {
            "epoch": self.epoch,
            "position": self.position,
            "seed": self.seed,
            "num_blocks": self.num_blocks,
            "shuffle": self.shuffle,
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a saved position; the data, seed, shuffling and world size must be the same."""
        for key in ("seed", "num_blocks", "shuffle", "world_size"):
            if state[key] != getattr(self, key):
                raise DataError(
                    f"cannot resume the data order: saved {key}={state[key]!r} but this run has "
                    f"{key}={getattr(self, key)!r} (resume with the same data, tokenizer, sequence length, "
                    "seed and number of processes)"
                )
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        if self.position >= self.num_samples:  # saved at the very end of an epoch
            self.epoch, self.position = self.epoch + 1, 0

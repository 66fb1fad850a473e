"""Keep every data-parallel replica's memory identical.

Two things differ between ranks after a training step: what each rank wants to write (its own batch) and the
usage each rank's reads recorded (its own queries). ``synced_write(memory, values, provenance, step)`` fixes
both, in this order, on every rank:
1. :func:`sync_usage`: all-reduce the pending usage (sum of counts and attention mass, max of last-used step)
   so pruning decisions agree;
2. :func:`gather_writes`: all-gather the writes, in rank order (rank 0's first, then rank 1's, ...);
3. ``memory.write`` with the same step: the same entries in the same slots, the same PCA fits and indexes.
All three are no-ops (plain ``write``) when torch.distributed is not initialised. ``group`` is the process
group to use (default: the world); the usage arrays are CPU tensors, so under NCCL pass a gloo group
(``dist.new_group(backend="gloo")``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from s3cmn.memory.records import Provenance

if TYPE_CHECKING:
    from s3cmn.memory.store import FaissMemory


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _all_gather_rows(x: Tensor, sizes: list[int], group: dist.ProcessGroup | None) -> Tensor:
    """All-gather ``x`` (m, ...) whose row count m differs across ranks: pad to the largest, gather, trim."""
    longest = max(sizes)
    padded = x.new_zeros((longest, *x.shape[1:]))
    padded[: x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded, group=group)
    return torch.cat([p[:n] for p, n in zip(parts, sizes, strict=True)])


def gather_writes(
    values: Tensor, provenance: Provenance, group: dist.ProcessGroup | None = None
) -> tuple[Tensor, Provenance]:
    """values (m_r, D) and provenance of m_r rows on rank r -> (sum_r m_r, D) and provenance, in rank order.

    A no-op when torch.distributed is not initialised (or world size 1). Tensors are gathered on ``values``'
    device (CPU for gloo, CUDA for NCCL); values are cast to float32.
    """
    if not _active():
        return values, provenance
    device = values.device
    count = torch.tensor([values.shape[0]], dtype=torch.long, device=device)
    counts = [torch.zeros_like(count) for _ in range(dist.get_world_size(group))]
    dist.all_gather(counts, count, group=group)
    sizes = [int(c.item()) for c in counts]
    # One gather for the three provenance fields: [token_ids | position | segment] as (m, W + 2) int64.
    packed = torch.cat(
        [provenance.token_ids, provenance.positions[:, None], provenance.segment_ids[:, None]], dim=1
    ).to(device=device, dtype=torch.long)
    all_values = _all_gather_rows(values.detach().float(), sizes, group)  # (M, D)
    all_packed = _all_gather_rows(packed, sizes, group)  # (M, W + 2)
    return all_values, Provenance(all_packed[:, :-2], all_packed[:, -2], all_packed[:, -1])


def all_finite(finite: bool, group: dist.ProcessGroup | None = None) -> bool:
    """True when ``finite`` holds on every rank (a MIN all-reduce; just ``finite`` without torch.distributed)."""
    if not _active():
        return finite
    flag = torch.tensor([float(finite)])
    dist.all_reduce(flag, op=dist.ReduceOp.MIN, group=group)
    return bool(flag.item())


def sync_usage(memory: FaissMemory, group: dist.ProcessGroup | None = None) -> None:
    """All-reduce the usage each rank recorded since the last commit, then commit it (CPU tensors: gloo)."""
    if _active():
        counts, mass, last = (torch.from_numpy(a) for a in memory.pending_usage())
        dist.all_reduce(counts, op=dist.ReduceOp.SUM, group=group)
        dist.all_reduce(mass, op=dist.ReduceOp.SUM, group=group)
        dist.all_reduce(last, op=dist.ReduceOp.MAX, group=group)
        # torch.from_numpy shares memory, so the all-reduces wrote the global values into the pending arrays
    memory.commit_usage()


def synced_write(
    memory: FaissMemory,
    values: Tensor,
    provenance: Provenance,
    step: int,
    group: dist.ProcessGroup | None = None,
) -> np.ndarray:
    """Sync usage, gather every rank's writes, write them (see the module docstring); returns the ids."""
    sync_usage(memory, group)
    values, provenance = gather_writes(values, provenance, group)
    return memory.write(values, provenance, step=step)

"""Curriculum learning: sequence-length warm-up and difficulty ordering, both pure functions of (seed, step).

Because what a step sees depends only on the seed, the step and the tokens seen so far, a run resumed
mid-curriculum sees exactly what an uninterrupted run sees.

- ``seq-length``: the first ``length(tokens)`` tokens of each block are used, growing from
  ``curriculum_min_length`` to ``sequence_length`` over ``curriculum_tokens`` training tokens (Li et al. 2022,
  "sequence length warmup"), rounded to a multiple of 8.
- ``difficulty``: blocks are ranked by mean unigram surprisal (−log p(token) under the training set's unigram
  distribution), easiest first; step ``s`` draws its blocks uniformly from the easiest ``c(s)·N`` blocks, where
  the competence ``c = min(1, sqrt(f·(1 − c0²) + c0²))`` grows with the fraction ``f`` of ``curriculum_tokens``
  seen (Platanios et al. 2019, square-root pacing; ``linear`` pacing uses ``c0 + (1 − c0)·f``).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from s3cmn.run_config import TrainingConfig


def pacing(fraction: float, start: float, kind: str) -> float:
    """Competence in [start, 1] after ``fraction`` of the curriculum (square-root or linear pacing)."""
    f = min(max(fraction, 0.0), 1.0)
    if kind == "linear":
        return start + (1 - start) * f
    return min(1.0, math.sqrt(f * (1 - start**2) + start**2))


def warmup_length(tokens_seen: int, training: TrainingConfig) -> int:
    """Sequence length for the next step under ``seq-length`` warm-up (a multiple of 8, at least 8)."""
    full = training.sequence_length
    if not training.curriculum_tokens:
        return full
    start = min(training.curriculum_min_length, full)
    frac = pacing(tokens_seen / training.curriculum_tokens, 0.0, training.curriculum_pacing)
    length = start + (full - start) * frac
    return int(min(full, max(8, round(length / 8) * 8)))


def unigram_surprisal(blocks: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Mean −log p(token) of each block (num_blocks,), with p the add-one unigram distribution of ``blocks``."""
    counts = torch.bincount(blocks.flatten(), minlength=vocab_size).double() + 1.0
    log_p = counts.log() - counts.sum().log()  # (V,)
    return -log_p[blocks].mean(dim=1)  # (num_blocks,)


class DifficultyCurriculum:
    """Blocks drawn from the easiest fraction that the competence allows, deterministically per step."""

    def __init__(self, blocks: torch.Tensor, vocab_size: int, training: TrainingConfig, rank: int = 0) -> None:
        self.order = torch.argsort(unigram_surprisal(blocks, vocab_size), stable=True).numpy()  # easiest first
        self.training = training
        self.rank = rank
        self.start = min(1.0, max(training.curriculum_min_fraction, 1.0 / len(self.order)))

    def competence(self, tokens_seen: int) -> float:
        if not self.training.curriculum_tokens:
            return 1.0
        return pacing(tokens_seen / self.training.curriculum_tokens, self.start, self.training.curriculum_pacing)

    def indices(self, step: int, micro: int, tokens_seen: int, n: int) -> list[int]:
        """Block indices of micro-batch ``micro`` of optimiser step ``step`` (0-based)."""
        available = max(1, math.ceil(self.competence(tokens_seen) * len(self.order)))
        rng = np.random.default_rng([self.training.seed, step, micro, self.rank])
        return [int(i) for i in self.order[rng.integers(0, available, size=n)]]

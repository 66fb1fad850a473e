"""What one training run holds while it runs (:class:`Run`), what a step and a run give back, and its errors."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from s3cmn.run_config import TrainingConfig
from s3cmn.training.checkpoint import save_checkpoint
from s3cmn.training.curriculum import DifficultyCurriculum
from s3cmn.training.metrics import MetricsLogger
from s3cmn.training.optim import BudgetSpent
from s3cmn.training.signals import StopSignal
from s3cmn.utils.precision import PrecisionChoice


class TrainingError(RuntimeError):
    """Training cannot go on (a NaN/inf loss with nan_policy = "stop", bad settings for the data)."""


@dataclass
class TrainResult:
    """What a run did: steps, tokens, losses, throughput, why it stopped, where the checkpoints are."""

    steps: int
    tokens: int
    train_loss: float
    val_loss: float | None
    best_val_loss: float | None
    tokens_per_s: float
    stopped: str
    output_dir: str
    history: list[dict[str, Any]] = field(default_factory=list)
    precision: str = "fp32"  # the autocast dtype the precision policy picked (fp32 = none)
    epochs: float = 0.0  # passes over the training blocks (fractional)
    seconds: float = 0.0  # the training time, what max_time limits (the final validation and checkpoint follow)

    @property
    def val_ppl(self) -> float | None:
        return math.exp(self.val_loss) if self.val_loss is not None else None


class Batches:
    """Batches of block indices from a resumable BlockSampler, rolling over epochs."""

    def __init__(self, sampler: Any) -> None:
        self.sampler = sampler
        self._it = None

    def next(self, n: int) -> list[int]:
        out: list[int] = []
        while len(out) < n:
            if self._it is None:
                self._it = iter(self.sampler)
            try:
                out.append(next(self._it))
            except StopIteration:
                self._it = None
        return out

    def rewind(self, position: dict[str, Any]) -> None:
        """Go back to a saved sampler position (the indices drawn since are handed out again)."""
        self.sampler.load_state_dict(position)
        self._it = None

    @property
    def epochs_done(self) -> float:
        return self.sampler.epoch + self.sampler.position / max(1, len(self.sampler))


@dataclass
class Run:
    """What the steps of one :func:`fit` share: model, optimiser, data position, counters, outputs."""

    model: Any
    train_model: Any  # the model as trained: wrapped in DDP and/or torch.compile
    ddp: Any  # the DistributedDataParallel wrapper, or None
    training: TrainingConfig
    device: torch.device
    precision: PrecisionChoice  # the autocast of every forward: steps and validation use its autocast()
    scaler: torch.amp.GradScaler
    optimizer: torch.optim.Optimizer
    scheduler: Any
    sampler: Any
    batches: Batches
    difficulty: DifficultyCurriculum | None
    train_blocks: torch.Tensor
    valid_blocks: torch.Tensor | None
    tokenizer: Any
    metrics: MetricsLogger
    out_dir: Path
    main: bool
    world: int
    total_steps: int | None  # None: no epoch or step limit (max_time or max_tokens ends the run)
    state: dict[str, Any]
    settings: dict[str, Any]  # the run's settings, recorded in every checkpoint
    signals: StopSignal
    should_stop: Callable[[int, dict[str, Any]], bool] | None
    progress: Any = None
    history: list[dict[str, Any]] = field(default_factory=list)
    last_loss: float = float("nan")
    val_loss: float | None = None
    pending_stop: str | None = None  # early stopping or the callback, decided after a step
    consecutive_skips: int = 0
    budget: BudgetSpent = field(default_factory=BudgetSpent)  # the schedule's progress without a step limit
    run_start: float = 0.0
    window_start: float = 0.0
    window_tokens: int = 0


@dataclass
class StepResult:
    """The micro-batches of one optimiser step: mean loss, statistics, tokens, and whether all were finite."""

    loss: float
    finite: bool
    length: int
    tokens: int
    spike: list[float]
    hit: list[float]


def save_run(run: Run, name: str) -> None:
    if run.main:
        trainer_state = {**run.state, "sampler": run.sampler.state_dict(),
                         "memory_writes": run.model.memory_bank.writes, "settings": run.settings}
        save_checkpoint(run.out_dir / name, run.model, run.optimizer, run.scheduler, trainer_state, run.tokenizer)
    if dist.is_initialized():
        dist.barrier()

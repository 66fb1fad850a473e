"""Setting a run up: device, seeds, precision, the output folder's lock, optimiser, schedule and data order
(or their state resumed from ``last``), and the model wrapped for DDP / torch.compile."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from s3cmn.run_config import DataConfig, TrainingConfig
from s3cmn.training.checkpoint import CheckpointError, RunLock, check_output_dir, clear_output_dir
from s3cmn.training.curriculum import DifficultyCurriculum
from s3cmn.training.metrics import MetricsLogger
from s3cmn.training.optim import BudgetSpent, build_optimizer, build_scheduler
from s3cmn.training.resume import resume_run
from s3cmn.training.signals import StopSignal
from s3cmn.training.state import Batches, Run, TrainingError
from s3cmn.utils.precision import PrecisionChoice, PrecisionError, log_precision, resolve_precision

logger = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise TrainingError("device = 'cuda' was asked for, but torch sees no CUDA device; use --device cpu")
    return torch.device(device)


def is_main_process() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


@contextlib.contextmanager
def claim_output_dir(training: TrainingConfig, main: bool) -> Any:
    """Lock the output folder (rank 0) and apply resume / overwrite to what is in it; unlock at the end."""
    out_dir = Path(training.output_dir)
    lock = RunLock(out_dir)
    error = None
    if main:
        try:
            lock.acquire()
            check_output_dir(out_dir, training.resume, training.overwrite)
        except CheckpointError as err:
            lock.release()
            error = str(err)
    if dist.is_initialized():  # every rank stops if rank 0 could not claim the folder
        message = [error]
        dist.broadcast_object_list(message, src=0)
        error = message[0]
    if error is not None:
        raise CheckpointError(error)
    try:
        if main and training.overwrite:
            clear_output_dir(out_dir)
        yield
    finally:
        lock.release()


def training_precision(training: TrainingConfig,
                       device: torch.device) -> tuple[PrecisionChoice, torch.amp.GradScaler]:
    """The one place that decides the autocast dtype and the loss scaling: s3cmn's precision policy.

    Returns (the :class:`~s3cmn.utils.precision.PrecisionChoice`, a GradScaler enabled only where the choice
    needs one: fp16; disabled, its calls pass straight through).
    """
    try:
        choice = resolve_precision(training.mixed_precision, device)
    except PrecisionError as err:
        raise TrainingError(str(err)) from None
    log_precision(choice, "training")
    return choice, torch.amp.GradScaler(device.type, enabled=choice.use_grad_scaler)


def start_run(model: Any, train_blocks: torch.Tensor, valid_blocks: torch.Tensor | None,
               training: TrainingConfig, tokenizer: Any, should_stop: Any, data: DataConfig | None,
               signals: StopSignal) -> Run:
    """Build optimiser, schedule and data order; resume them from ``last`` when asked; wrap the model."""
    from s3cmn.data import BlockSampler

    device = resolve_device(training.device)
    precision, scaler = training_precision(training, device)
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    if training.curriculum != "none" and not training.curriculum_tokens:
        raise TrainingError(f"curriculum = {training.curriculum!r} needs --curriculum-tokens > 0 (its ramp length)")
    model.to(device).train()
    sampler = BlockSampler(train_blocks.shape[0], seed=training.seed, shuffle=True, rank=rank, world_size=world)
    micro_batches = max(1, len(sampler) // training.batch_size)
    steps_per_epoch = max(1, micro_batches // training.gradient_accumulation_steps)
    total_steps = step_limit(training, steps_per_epoch)
    budget = BudgetSpent()
    optimizer = build_optimizer(model, training)
    scheduler = build_scheduler(optimizer, training, total_steps, budget)
    state: dict[str, Any] = {"step": 0, "tokens": 0, "elapsed": 0.0, "best_val_loss": None, "bad_evals": 0,
                             "skipped": 0, "memory_writes": 0, "sequence_length": training.sequence_length}
    out_dir = Path(training.output_dir)
    if training.resume:
        state = resume_run(model, out_dir, optimizer, scheduler, sampler, training)
    ddp, train_model = _wrap_model(model, train_blocks, training, device)
    difficulty = None
    if training.curriculum == "difficulty":
        difficulty = DifficultyCurriculum(train_blocks, model.config.vocab_size, training, rank)
    settings = {"training": training.to_dict(), "data": data.to_dict() if data is not None else None}
    run = Run(model, train_model, ddp, training, device, precision, scaler, optimizer, scheduler,
               sampler, Batches(sampler), difficulty, train_blocks, valid_blocks, tokenizer,
               MetricsLogger(out_dir, enabled=is_main_process()), out_dir, is_main_process(), world, total_steps,
               state, settings, signals, should_stop)
    run.budget = budget
    budget.update(state["elapsed"], state["tokens"], training)
    run.progress = progress_bar(total_steps, state["step"], enabled=run.main)
    run.run_start = time.perf_counter() - state["elapsed"]
    run.window_start = time.perf_counter()
    return run


def step_limit(training: TrainingConfig, steps_per_epoch: int) -> int | None:
    """The optimiser steps the run may take: epochs x steps per epoch, capped by max_steps; None = no step limit
    (num_epochs 0 and no max_steps: max_time or max_tokens ends the run)."""
    limits = [training.num_epochs * steps_per_epoch if training.num_epochs else 0, training.max_steps]
    return min((n for n in limits if n), default=None)


def _wrap_model(model: Any, train_blocks: torch.Tensor, training: TrainingConfig,
                device: torch.device) -> tuple[Any, Any]:
    """(the DDP wrapper or None, the module the training step calls: DDP and/or torch.compile around model)."""
    ddp, train_model = None, model
    if dist.is_initialized():
        unused = _unused_parameters(model, train_blocks[: training.batch_size].to(device))
        if unused:  # DDP must then search the graph every step: only when the model needs it
            logger.info("parameters without a gradient (%s%s): DDP runs with find_unused_parameters",
                        ", ".join(unused[:3]), "..." if len(unused) > 3 else "")
        ddp = train_model = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=bool(unused))
    if training.compile:
        train_model = torch.compile(train_model)
    return ddp, train_model


def _unused_parameters(model: Any, batch: torch.Tensor) -> list[str]:
    """Names of trainable parameters that one forward/backward leaves without a gradient.

    The probe runs in eval mode with the RNG forked and the buffers restored, so it changes nothing.
    """
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    was_training = model.training
    with torch.random.fork_rng(devices=[]):
        model.eval()
        model(batch, labels=batch, use_cache=False, write_memory=False).loss.backward()
    unused = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        for name, b in model.named_buffers():
            b.copy_(buffers[name])
    model.train(was_training)
    return unused


def progress_bar(total: int, initial: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True)


def init_distributed(training: TrainingConfig) -> None:
    """Join the torchrun process group (gloo on the CPU, NCCL on CUDA) when WORLD_SIZE > 1."""
    if dist.is_initialized() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    device = resolve_device(training.device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    logger.info("distributed: rank %d of %d (%s)", dist.get_rank(), dist.get_world_size(), backend)

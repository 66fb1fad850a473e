"""The training loop: AdamW, schedules, accumulation, clipping, mixed precision, validation, checkpoints.

``train(model_config, training, data)`` prepares the data and runs :func:`fit`. ``fit`` is also the
entry point for tests and sweeps: it takes a model, blocks of token ids and the run settings.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from s3cmn.config import S3CMNConfig
from s3cmn.run_config import DataConfig, TrainingConfig
from s3cmn.training.checkpoint import (
    CheckpointError,
    RunLock,
    check_output_dir,
    clear_output_dir,
    load_training_state,
    resolve_checkpoint,
    save_checkpoint,
)
from s3cmn.training.curriculum import DifficultyCurriculum, warmup_length
from s3cmn.training.metrics import MetricsLogger
from s3cmn.training.optim import build_optimizer, build_scheduler
from s3cmn.utils.precision import PrecisionError, log_precision, resolve_precision

logger = logging.getLogger(__name__)

SAMPLE_PROMPTS = ("The", "In the early 20th century ,")


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

    @property
    def val_ppl(self) -> float | None:
        return math.exp(self.val_loss) if self.val_loss is not None else None


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


class _StopSignal:
    """SIGINT / SIGTERM: the first stops the run after the current step; the second also abandons that step.

    First signal: the optimiser step under way finishes, a validation under way is cut short (not recorded),
    no final validation runs, and the ``last`` checkpoint is written. Second signal: the step under way is
    abandoned too (its gradients dropped, the data position rewound to its start; single process only). A
    third SIGINT raises KeyboardInterrupt. The checkpoint write itself is atomic either way.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self.count = 0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopSignal:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread: no handler
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    @property
    def hurry(self) -> bool:
        """A second signal came: skip everything but the checkpoint write."""
        return self.count >= 2

    def _handle(self, signum: int, frame: Any) -> None:
        self.count += 1
        self.received = self.received or signum
        name = signal.Signals(signum).name
        if self.count == 1:
            logger.warning("received %s: stopping after this step and writing the checkpoint (no validation); "
                           "send it again to abandon the step under way", name)
        elif self.count == 2:
            logger.warning("received %s again: abandoning the step under way; writing the checkpoint", name)
        elif signum == signal.SIGINT:
            raise KeyboardInterrupt

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class ValidationInterrupted(Exception):
    """A validation pass was cut short (a stop signal): its partial loss is not a result."""


class _Batches:
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


def is_main_process() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


@torch.no_grad()
def evaluate_loss(model: Any, blocks: torch.Tensor, batch_size: int, max_batches: int = 0,
                  device: torch.device | None = None, amp: torch.dtype | None = None,
                  should_abort: Callable[[], bool] | None = None) -> float:
    """Mean next-token loss over validation blocks (num_blocks, T); never writes into the memory.

    ``should_abort()`` is asked before each batch; True raises :class:`ValidationInterrupted`.
    """
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    device = device or next(model.parameters()).device
    try:
        for b, start in enumerate(range(0, blocks.shape[0], batch_size)):
            if max_batches and b >= max_batches:
                break
            if should_abort is not None and should_abort():
                raise ValidationInterrupted(f"validation stopped after {b} batches")
            batch = blocks[start : start + batch_size].to(device)
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                loss = model(batch, labels=batch, use_cache=False, write_memory=False).loss
            n = batch.numel() - batch.shape[0]
            total += loss.float().item() * n
            count += n
    finally:
        model.train(was_training)
    return total / max(1, count)


@torch.no_grad()
def generate_samples(model: Any, tokenizer: Any, length: int, prompts: tuple[str, ...] = SAMPLE_PROMPTS) -> list[dict]:
    """Greedy continuations of fixed prompts (greedy, so sampling consumes no random numbers)."""
    was_training = model.training
    model.eval()
    samples = []
    device = next(model.parameters()).device
    for prompt in prompts:
        ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").input_ids.to(device)
        if ids.shape[1] == 0:
            continue
        out = model.generate(ids, max_new_tokens=length, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        samples.append({"prompt": prompt, "text": tokenizer.decode(out[0], skip_special_tokens=True)})
    model.train(was_training)
    return samples


# ------------------------------------------------------------------------------------------------------
# fit: one run as a short loop over named steps


@dataclass
class _Run:
    """What the steps of one :func:`fit` share: model, optimiser, data position, counters, outputs."""

    model: Any
    train_model: Any  # the model as trained: wrapped in DDP and/or torch.compile
    ddp: Any  # the DistributedDataParallel wrapper, or None
    training: TrainingConfig
    device: torch.device
    amp: torch.dtype | None
    scaler: torch.amp.GradScaler
    optimizer: torch.optim.Optimizer
    scheduler: Any
    sampler: Any
    batches: _Batches
    difficulty: DifficultyCurriculum | None
    train_blocks: torch.Tensor
    valid_blocks: torch.Tensor | None
    tokenizer: Any
    metrics: MetricsLogger
    out_dir: Path
    main: bool
    world: int
    total_steps: int
    state: dict[str, Any]
    settings: dict[str, Any]  # the run's settings, recorded in every checkpoint
    signals: _StopSignal
    should_stop: Callable[[int, dict[str, Any]], bool] | None
    progress: Any = None
    history: list[dict[str, Any]] = field(default_factory=list)
    last_loss: float = float("nan")
    val_loss: float | None = None
    pending_stop: str | None = None  # early stopping or the callback, decided after a step
    precision: str = "fp32"  # the precision policy's choice, as reported
    consecutive_skips: int = 0
    run_start: float = 0.0
    window_start: float = 0.0
    window_tokens: int = 0


@dataclass
class _StepResult:
    """The micro-batches of one optimiser step: mean loss, statistics, tokens, and whether all were finite."""

    loss: float
    finite: bool
    length: int
    tokens: int
    spike: list[float]
    hit: list[float]


def fit(
    model: Any,
    train_blocks: torch.Tensor,
    valid_blocks: torch.Tensor | None,
    training: TrainingConfig,
    tokenizer: Any = None,
    should_stop: Callable[[int, dict[str, Any]], bool] | None = None,
    data: DataConfig | None = None,
    validation_text: dict[str, Any] | None = None,
) -> TrainResult:
    """Train ``model`` on blocks (num_blocks, T) with the run settings; checkpoints go to ``output_dir``.

    ``should_stop(step, record)`` is called after every validation (and, with record {}, after every step);
    returning True stops the run like a signal does (checkpoint, then return) — used by sweeps for pruning.
    The output folder is locked for the run; existing checkpoints are only resumed (``resume``) or replaced
    (``overwrite``). ``data`` (the data settings) is recorded in the checkpoints, for resuming from the CLI, and
    so is ``validation_text``, the record of which text ``valid_blocks`` came from (``s3cmn.data.validation``).
    """
    check_length = getattr(getattr(model, "config", None), "check_sequence_length", None)  # baselines: other configs
    if check_length is not None:
        check_length(training.sequence_length)
    main = is_main_process()
    with _claim_output_dir(training, main), _StopSignal() as signals:
        run = _start_run(model, train_blocks, valid_blocks, training, tokenizer, should_stop, data, signals)
        run.settings["validation_text"] = validation_text  # what `best` is selected on, for s3cmn-eval's report
        try:
            while (stopped := _stop_reason(run)) is None:
                step = _forward_backward(run)  # 1. the micro-batches (the memory is written after each forward)
                if step is None:  # abandoned by a second stop signal
                    continue
                if not step.finite:  # 2. a NaN/inf loss is never stepped on
                    _skip_step(run, step)
                    continue
                _optimizer_step(run)  # 3. unscale, clip, step, schedule
                _count_step(run, step)
                _log_validate_save(run, step)  # 4. log, validate, checkpoint
            return _finish(run, stopped)
        finally:
            run.progress.close()
            run.metrics.close()


@contextlib.contextmanager
def _claim_output_dir(training: TrainingConfig, main: bool) -> Any:
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


def _precision(training: TrainingConfig, device: torch.device) -> tuple[Any, torch.amp.GradScaler]:
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


def _start_run(model: Any, train_blocks: torch.Tensor, valid_blocks: torch.Tensor | None,
               training: TrainingConfig, tokenizer: Any, should_stop: Any, data: DataConfig | None,
               signals: _StopSignal) -> _Run:
    """Build optimiser, schedule and data order; resume them from ``last`` when asked; wrap the model."""
    from s3cmn.data import BlockSampler

    device = resolve_device(training.device)
    precision, scaler = _precision(training, device)
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    if training.curriculum != "none" and not training.curriculum_tokens:
        raise TrainingError(f"curriculum = {training.curriculum!r} needs --curriculum-tokens > 0 (its ramp length)")
    model.to(device).train()
    sampler = BlockSampler(train_blocks.shape[0], seed=training.seed, shuffle=True, rank=rank, world_size=world)
    micro_batches = max(1, len(sampler) // training.batch_size)
    steps_per_epoch = max(1, micro_batches // training.gradient_accumulation_steps)
    total_steps = training.num_epochs * steps_per_epoch
    if training.max_steps:
        total_steps = min(total_steps, training.max_steps)
    optimizer = build_optimizer(model, training)
    scheduler = build_scheduler(optimizer, training, total_steps)
    state: dict[str, Any] = {"step": 0, "tokens": 0, "elapsed": 0.0, "best_val_loss": None, "bad_evals": 0,
                             "skipped": 0, "memory_writes": 0, "sequence_length": training.sequence_length}
    out_dir = Path(training.output_dir)
    if training.resume:
        state = _resume(model, out_dir, optimizer, scheduler, sampler, training)
    ddp, train_model = _wrap_model(model, train_blocks, training, device)
    difficulty = None
    if training.curriculum == "difficulty":
        difficulty = DifficultyCurriculum(train_blocks, model.config.vocab_size, training, rank)
    settings = {"training": training.to_dict(), "data": data.to_dict() if data is not None else None}
    run = _Run(model, train_model, ddp, training, device, precision.autocast_dtype, scaler, optimizer, scheduler,
               sampler, _Batches(sampler), difficulty, train_blocks, valid_blocks, tokenizer,
               MetricsLogger(out_dir, enabled=is_main_process()), out_dir, is_main_process(), world, total_steps,
               state, settings, signals, should_stop)
    run.precision = precision.name
    run.progress = _progress_bar(total_steps, state["step"], enabled=run.main)
    run.run_start = time.perf_counter() - state["elapsed"]
    run.window_start = time.perf_counter()
    return run


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


def _stop_reason(run: _Run) -> str | None:
    """Why the run stops now, or None: checked at the top of every iteration, skipped steps included."""
    state, training = run.state, run.training
    state["elapsed"] = time.perf_counter() - run.run_start
    signalled = run.signals.received is not None
    time_up = bool(training.max_time and state["elapsed"] >= training.max_time)
    if dist.is_initialized():  # the ranks must agree, or one would wait for the others forever
        flags = torch.tensor([float(signalled), float(time_up)])
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        signalled, time_up = bool(flags[0]), bool(flags[1])
    if run.pending_stop is not None:
        return run.pending_stop
    if signalled:
        return f"signal {signal.Signals(run.signals.received or signal.SIGTERM).name}"
    if state["step"] + state["skipped"] >= run.total_steps:  # a skipped batch uses up its step of the budget
        return "max_steps" if training.max_steps and run.total_steps == training.max_steps else "max_epochs"
    if training.max_tokens and state["tokens"] >= training.max_tokens:
        return "max_tokens"
    if time_up:
        return "max_time"
    return None


def _forward_backward(run: _Run) -> _StepResult | None:
    """Forward and backward over the step's micro-batches; DDP syncs the gradients on the last one only.

    Returns None when a second stop signal abandons the step: the gradients are dropped and the data
    position goes back to the step's start (single process; under DDP the ranks finish the step together).
    """
    state, training = run.state, run.training
    length = run.train_blocks.shape[1]
    if training.curriculum == "seq-length":
        length = warmup_length(state["tokens"], training)
    accumulation = training.gradient_accumulation_steps
    start_position = run.sampler.state_dict()
    loss_sum, finite, spike, hit = 0.0, True, [], []
    for micro in range(accumulation):
        if run.signals.hurry and run.ddp is None:
            run.optimizer.zero_grad(set_to_none=True)
            run.batches.rewind(start_position)
            logger.warning("step %d abandoned after %d of %d micro-batches", state["step"] + 1, micro, accumulation)
            return None
        if run.difficulty is not None:
            indices = run.difficulty.indices(state["step"], micro, state["tokens"], training.batch_size)
        else:
            indices = run.batches.next(training.batch_size)
        batch = run.train_blocks[indices, :length].to(run.device)  # (B, T)
        sync = run.ddp is None or micro == accumulation - 1
        with contextlib.nullcontext() if sync else run.ddp.no_sync():
            with torch.autocast(run.device.type, dtype=run.amp, enabled=run.amp is not None):
                out = run.train_model(batch, labels=batch, use_cache=False, write_memory=True)
            loss = out.loss / accumulation
            run.scaler.scale(loss).backward()  # a NaN loss too: every rank runs the same collectives
        loss_value = loss.item()
        finite = finite and math.isfinite(loss_value)
        loss_sum += loss_value
        if out.spike_rate is not None:
            spike.append(out.spike_rate.item())
        if out.memory_hit_rate is not None:
            hit.append(out.memory_hit_rate.item())
    if dist.is_initialized():  # skip on every rank if any rank saw a NaN
        flag = torch.tensor([float(finite)])
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        finite = bool(flag.item())
    tokens = training.batch_size * accumulation * length * run.world
    return _StepResult(loss_sum, finite, length, tokens, spike, hit)


def _skip_step(run: _Run, step: _StepResult) -> None:
    """A NaN/inf loss: drop the gradients and stop (nan_policy "stop") or skip the batch ("skip")."""
    state = run.state
    run.optimizer.zero_grad(set_to_none=True)
    message = f"loss is {step.loss} at step {state['step'] + 1} (lr {run.scheduler.get_last_lr()[0]:.3g})"
    if run.training.nan_policy == "stop":
        raise TrainingError(message + ": stopped without writing a checkpoint of this state; lower "
                            "--learning-rate, check the data, or use --nan-policy skip")
    state["skipped"] += 1
    run.consecutive_skips += 1
    if run.consecutive_skips <= 3 or math.log2(run.consecutive_skips).is_integer():
        logger.warning("%s: batch skipped (nan_policy = skip; %d in a row)", message, run.consecutive_skips)


def _optimizer_step(run: _Run) -> None:
    """Unscale (fp16), clip, step, advance the schedule; rank 0's buffers win under DDP."""
    run.scaler.unscale_(run.optimizer)
    if run.training.gradient_clip:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.training.gradient_clip)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    if dist.is_initialized():  # buffers updated after the forward (homeostatic thresholds): rank 0's win
        for buffer in run.model.buffers():
            dist.broadcast(buffer, src=0)


def _count_step(run: _Run, step: _StepResult) -> None:
    run.state["step"] += 1
    run.state["tokens"] += step.tokens
    run.state["elapsed"] = time.perf_counter() - run.run_start
    run.window_tokens += step.tokens
    run.last_loss = _mean_over_ranks(step.loss)
    run.consecutive_skips = 0


def _log_validate_save(run: _Run, step: _StepResult) -> None:
    """Log every ``log_interval`` steps, validate every ``eval_interval``, write ``last`` every ``save_interval``."""
    state, training = run.state, run.training
    if state["step"] % training.log_interval == 0 or state["step"] == run.total_steps:
        _log_train(run, step)
    run.progress.update(1)
    if run.valid_blocks is not None and state["step"] % training.eval_interval == 0:
        record = _validate(run)
        if record is not None:
            if training.early_stopping_patience and state["bad_evals"] >= training.early_stopping_patience:
                run.pending_stop = "early_stopping"
                return
            if run.should_stop is not None and run.should_stop(state["step"], record):
                run.pending_stop = "callback"
                return
    if state["step"] % training.save_interval == 0:
        _save(run, "last")
    if run.signals.received is None and run.should_stop is not None and run.should_stop(state["step"], {}):
        run.pending_stop = "callback"


def _log_train(run: _Run, step: _StepResult) -> None:
    state = run.state
    now = time.perf_counter()
    record = {"kind": "train", "step": state["step"], "tokens": state["tokens"], "loss": run.last_loss,
              "ppl": math.exp(min(run.last_loss, 50.0)), "lr": run.scheduler.get_last_lr()[0],
              "tokens_per_s": run.window_tokens / max(now - run.window_start, 1e-9),
              "spike_rate": float(np.mean(step.spike)) if step.spike else None,
              "memory_hit_rate": float(np.mean(step.hit)) if step.hit else None, "elapsed_s": state["elapsed"],
              "sequence_length": step.length}
    if run.difficulty is not None:
        record["competence"] = run.difficulty.competence(state["tokens"])
    run.metrics.log(record)
    _progress_total_for_time(run)
    run.progress.set_postfix(
        loss=f"{run.last_loss:.3f}", ppl=f"{record['ppl']:.1f}", tok_s=f"{record['tokens_per_s']:.0f}",
        lr=f"{record['lr']:.2e}", spikes=f"{record['spike_rate'] or 0:.3f}",
        mem_hit=f"{record['memory_hit_rate'] or 0:.2f}",
    )
    run.window_start, run.window_tokens = now, 0


def _validate(run: _Run) -> dict[str, Any] | None:
    """One validation pass: log it, keep ``best``; None if a stop signal cut it short (nothing recorded)."""
    state, training, model = run.state, run.training, run.model
    abort = None if dist.is_initialized() else (lambda: run.signals.received is not None)
    try:
        val_loss = evaluate_loss(model, run.valid_blocks, training.batch_size, training.eval_batches, run.device,
                                 run.amp, should_abort=abort)
    except ValidationInterrupted as err:
        logger.warning("%s at step %d by the stop signal: not recorded", err, state["step"])
        return None
    blocks = run.valid_blocks
    scored_blocks = min(blocks.shape[0], training.eval_batches * training.batch_size or blocks.shape[0])
    record = {"kind": "validation", "step": state["step"], "tokens": state["tokens"], "loss": val_loss,
              "ppl": math.exp(min(val_loss, 50.0)), "elapsed_s": state["elapsed"],
              "tokens_scored": scored_blocks * (blocks.shape[1] - 1),
              "tokens_available": blocks.shape[0] * (blocks.shape[1] - 1)}
    if len(model.memory_bank):  # the stores' health, logged at each validation (occupancy left to s3cmn-memory)
        record["memory"] = {str(layer): {k: v for k, v in m.stats().to_dict().items() if k != "cluster_occupancy"}
                            for layer, m in model.memory_bank}
    if run.tokenizer is not None and training.num_samples and run.main and run.signals.received is None:
        record["samples"] = generate_samples(model, run.tokenizer, training.sample_length,
                                             SAMPLE_PROMPTS[: training.num_samples])
    run.metrics.log(record)
    run.history.append(record)
    run.val_loss = val_loss
    best = state["best_val_loss"]
    if best is None or val_loss < best:
        state["best_val_loss"], state["bad_evals"] = val_loss, 0
        _save(run, "best")
    else:
        state["bad_evals"] += 1
    logger.info("step %d: validation loss %.4f, ppl %.2f (on %d of %d validation tokens)", state["step"], val_loss,
                record["ppl"], record["tokens_scored"], record["tokens_available"])
    return record


def _save(run: _Run, name: str) -> None:
    if run.main:
        trainer_state = {**run.state, "sampler": run.sampler.state_dict(),
                         "memory_writes": run.model.memory_bank.writes, "settings": run.settings}
        save_checkpoint(run.out_dir / name, run.model, run.optimizer, run.scheduler, trainer_state, run.tokenizer)
    if dist.is_initialized():
        dist.barrier()


def _finish(run: _Run, stopped: str) -> TrainResult:
    """The final validation (not after a stop signal: the user wants out), the ``last`` checkpoint, the result."""
    state = run.state
    validated = run.history and run.history[-1]["step"] == state["step"]
    if stopped.startswith("signal"):
        logger.info("stopped by %s at step %d: writing the checkpoint, no final validation", stopped[7:],
                    state["step"])
    elif run.valid_blocks is not None and not validated and state["step"]:
        _validate(run)
    _save(run, "last")
    throughput = state["tokens"] / max(state["elapsed"], 1e-9)
    return TrainResult(state["step"], state["tokens"], run.last_loss, run.val_loss, state["best_val_loss"],
                       throughput, stopped, str(run.out_dir), run.history, run.precision)


def _progress_bar(total: int, initial: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True)


def _progress_total_for_time(run: _Run) -> None:
    """With --max-time, the bar's total (hence its ETA) is the steps that fit in the time left, if fewer."""
    state, limit = run.state, run.training.max_time
    if not limit or not state["step"] or run.progress.disable:
        return
    per_step = state["elapsed"] / max(1, state["step"] - run.progress.initial + state["skipped"])
    reachable = state["step"] + int(max(0.0, limit - state["elapsed"]) / max(per_step, 1e-9))
    total = min(run.total_steps, max(reachable, state["step"]))
    if total != run.progress.total:
        run.progress.total = total
        run.progress.refresh()


def _mean_over_ranks(value: float) -> float:
    if not dist.is_initialized():
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return t.item() / dist.get_world_size()


# ------------------------------------------------------------------------------------------------------
# resuming: weights, optimiser, schedule and data position from ``last``, and the settings given now

# Settings that cannot change on resume: the data the saved position and state refer to would change.
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
             "gradient_accumulation_steps")
_NOT_COMPARED = ("resume", "overwrite", "output_dir")


def _resume(model: Any, out_dir: Path, optimizer: Any, scheduler: Any, sampler: Any,
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
    from s3cmn.modeling.lm import S3CMNForCausalLM

    try:
        loaded = S3CMNForCausalLM.from_pretrained(folder)
    except (ValueError, RuntimeError, OSError, KeyError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"cannot load the checkpoint {folder}: {reason}") from None
    if len(loaded.memory_bank) and not (folder / "memory").is_dir():  # from_pretrained would start them empty
        raise CheckpointError(
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


# ------------------------------------------------------------------------------------------------------
def prepare_data(data: DataConfig, training: TrainingConfig
                 ) -> tuple[Any, torch.Tensor, torch.Tensor | None, dict[str, Any]]:
    """Tokenizer, packed train / validation blocks (num_blocks, sequence_length) and the validation text's
    record, from the data settings (a held-out slice of the training text unless an honest validation text
    is given: ``s3cmn.data.validation``)."""
    from s3cmn.data import load_tokenizer, load_training_texts, pack_blocks, tokenize_cached

    texts = load_training_texts(data)
    tokenizer = load_tokenizer(data.tokenizer, train_text=texts.train)  # bpe:N never sees the validation text
    train_ids = tokenize_cached(texts.train, tokenizer, data.cache_dir)
    train_blocks = pack_blocks(train_ids, training.sequence_length)
    valid_blocks = None
    if texts.validation is not None:
        valid_blocks = pack_blocks(tokenize_cached(texts.validation, tokenizer, data.cache_dir),
                                   training.sequence_length)
    if train_blocks.shape[0] < training.batch_size:
        logger.warning("only %d training blocks for batch_size %d: batches repeat blocks within a step",
                       train_blocks.shape[0], training.batch_size)
    return tokenizer, train_blocks, valid_blocks, texts.selection


def train(model_config: S3CMNConfig, training: TrainingConfig, data: DataConfig,
          should_stop: Callable[[int, dict[str, Any]], bool] | None = None) -> TrainResult:
    """Prepare data and tokenizer, build (or resume) the model, and run :func:`fit`."""
    from s3cmn.modeling.lm import S3CMNForCausalLM

    model_config.check_sequence_length(training.sequence_length)  # settings errors before any data is read
    check_output_dir(training.output_dir, training.resume, training.overwrite)
    _init_distributed(training)
    tokenizer, train_blocks, valid_blocks, validation_text = prepare_data(data, training)
    vocab = len(tokenizer)
    changes: dict[str, Any] = {"pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id}
    if model_config.vocab_size != vocab:
        logger.info("vocab_size set to the tokenizer's %d (was %d)", vocab, model_config.vocab_size)
        changes["vocab_size"] = vocab
    model_config = model_config.replace(**changes)
    seed_everything(training.seed)
    model = S3CMNForCausalLM(model_config)
    logger.info("model: %.2fM parameters", sum(p.numel() for p in model.parameters()) / 1e6)
    Path(training.output_dir).mkdir(parents=True, exist_ok=True)
    return fit(model, train_blocks, valid_blocks, training, tokenizer, should_stop, data, validation_text)


def _init_distributed(training: TrainingConfig) -> None:
    """Join the torchrun process group (gloo on the CPU, NCCL on CUDA) when WORLD_SIZE > 1."""
    if dist.is_initialized() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    device = resolve_device(training.device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    logger.info("distributed: rank %d of %d (%s)", dist.get_rank(), dist.get_world_size(), backend)

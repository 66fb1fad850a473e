"""The named steps of :func:`~s3cmn.training.loop.fit`: the stop check, the micro-batches, the optimiser
step, and logging / validating / checkpointing after it."""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import time

import numpy as np
import torch
import torch.distributed as dist

from s3cmn.training.curriculum import warmup_length
from s3cmn.training.state import Run, StepResult, TrainingError, save_run
from s3cmn.training.validate import validate

logger = logging.getLogger(__name__)


def stop_reason(run: Run) -> str | None:
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
    if run.total_steps is not None and state["step"] + state["skipped"] >= run.total_steps:  # skips count
        return "max_steps" if training.max_steps and run.total_steps == training.max_steps else "max_epochs"
    if training.max_tokens and state["tokens"] >= training.max_tokens:
        return "max_tokens"
    if time_up:
        return "max_time"
    return None


def forward_backward(run: Run) -> StepResult | None:
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
            with run.precision.autocast():
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
    return StepResult(loss_sum, finite, length, tokens, spike, hit)


def skip_step(run: Run, step: StepResult) -> None:
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


def optimizer_step(run: Run) -> None:
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


def count_step(run: Run, step: StepResult) -> None:
    run.state["step"] += 1
    run.state["tokens"] += step.tokens
    run.state["elapsed"] = time.perf_counter() - run.run_start
    run.budget.update(run.state["elapsed"], run.state["tokens"], run.training)
    run.window_tokens += step.tokens
    run.last_loss = _mean_over_ranks(step.loss)
    run.consecutive_skips = 0


def log_validate_save(run: Run, step: StepResult) -> None:
    """Log every ``log_interval`` steps, validate every ``eval_interval``, write ``last`` every ``save_interval``."""
    state, training = run.state, run.training
    if state["step"] % training.log_interval == 0 or state["step"] == run.total_steps:
        _log_train(run, step)
    run.progress.update(1)
    if run.valid_blocks is not None and state["step"] % training.eval_interval == 0:
        record = validate(run)
        if record is not None:
            if training.early_stopping_patience and state["bad_evals"] >= training.early_stopping_patience:
                run.pending_stop = "early_stopping"
                return
            if run.should_stop is not None and run.should_stop(state["step"], record):
                run.pending_stop = "callback"
                return
    if state["step"] % training.save_interval == 0:
        save_run(run, "last")
    if run.signals.received is None and run.should_stop is not None and run.should_stop(state["step"], {}):
        run.pending_stop = "callback"


def _log_train(run: Run, step: StepResult) -> None:
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


def _progress_total_for_time(run: Run) -> None:
    """With --max-time, the bar's total (hence its ETA) is the steps that fit in the time left, if fewer."""
    state, limit = run.state, run.training.max_time
    if not limit or not state["step"] or run.progress.disable:
        return
    per_step = state["elapsed"] / max(1, state["step"] - run.progress.initial + state["skipped"])
    reachable = state["step"] + int(max(0.0, limit - state["elapsed"]) / max(per_step, 1e-9))
    total = max(reachable, state["step"])
    if run.total_steps is not None:
        total = min(run.total_steps, total)
    if total != run.progress.total:
        run.progress.total = total
        run.progress.refresh()


def _mean_over_ranks(value: float) -> float:
    if not dist.is_initialized():
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return t.item() / dist.get_world_size()

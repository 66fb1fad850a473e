"""Validation during training: the mean next-token loss on validation blocks, samples, and keeping ``best``."""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

from s3cmn.training.state import Run, save_run
from s3cmn.utils.precision import PrecisionChoice

logger = logging.getLogger(__name__)

SAMPLE_PROMPTS = ("The", "In the early 20th century ,")


class ValidationInterrupted(Exception):
    """A validation pass was cut short (a stop signal): its partial loss is not a result."""


@torch.no_grad()
def evaluate_loss(model: Any, blocks: torch.Tensor, batch_size: int, max_batches: int = 0,
                  device: torch.device | None = None, precision: PrecisionChoice | None = None,
                  should_abort: Callable[[], bool] | None = None) -> float:
    """Mean next-token loss over validation blocks (num_blocks, T); never writes into the memory.

    ``precision`` is the run's :class:`~s3cmn.utils.precision.PrecisionChoice` (None: plain fp32).

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
            with precision.autocast() if precision is not None else contextlib.nullcontext():
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


def validate(run: Run) -> dict[str, Any] | None:
    """One validation pass: log it, keep ``best``; None if a stop signal cut it short (nothing recorded)."""
    state, training, model = run.state, run.training, run.model
    abort = None if dist.is_initialized() else (lambda: run.signals.received is not None)
    try:
        val_loss = evaluate_loss(model, run.valid_blocks, training.batch_size, training.eval_batches, run.device,
                                 run.precision, should_abort=abort)
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
        save_run(run, "best")
    else:
        state["bad_evals"] += 1
    logger.info("step %d: validation loss %.4f, ppl %.2f (on %d of %d validation tokens)", state["step"], val_loss,
                record["ppl"], record["tokens_scored"], record["tokens_available"])
    return record

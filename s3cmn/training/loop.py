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
from s3cmn.training.checkpoint import load_training_state, resolve_checkpoint, save_checkpoint
from s3cmn.training.curriculum import DifficultyCurriculum, warmup_length
from s3cmn.training.metrics import MetricsLogger
from s3cmn.training.optim import build_optimizer, build_scheduler

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


def autocast_dtype(mixed_precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 on the CPU and on CUDA when supported, fp16 on older GPUs; None for full precision."""
    if mixed_precision == "no":
        return None
    if mixed_precision == "fp16":
        if device.type != "cuda":
            raise TrainingError("mixed_precision = 'fp16' needs CUDA (fp16 on the CPU is very slow): use bf16")
        return torch.float16
    if mixed_precision == "bf16" or device.type == "cpu":
        return torch.bfloat16
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


class _StopSignal:
    """SIGINT / SIGTERM set a flag; the loop saves a checkpoint at the end of the current step and exits."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopSignal:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread: no handler
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        logger.warning("received %s: saving a checkpoint after this step, then stopping", signal.Signals(signum).name)
        self.received = signum

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


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

    @property
    def epochs_done(self) -> float:
        return self.sampler.epoch + self.sampler.position / max(1, len(self.sampler))


def is_main_process() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


@torch.no_grad()
def evaluate_loss(model: Any, blocks: torch.Tensor, batch_size: int, max_batches: int = 0,
                  device: torch.device | None = None, amp: torch.dtype | None = None) -> float:
    """Mean next-token loss over validation blocks (num_blocks, T); never writes into the memory."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    device = device or next(model.parameters()).device
    for b, start in enumerate(range(0, blocks.shape[0], batch_size)):
        if max_batches and b >= max_batches:
            break
        batch = blocks[start : start + batch_size].to(device)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            loss = model(batch, labels=batch, use_cache=False, write_memory=False).loss
        n = batch.numel() - batch.shape[0]
        total += loss.float().item() * n
        count += n
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


def fit(
    model: Any,
    train_blocks: torch.Tensor,
    valid_blocks: torch.Tensor | None,
    training: TrainingConfig,
    tokenizer: Any = None,
    should_stop: Callable[[int, dict[str, Any]], bool] | None = None,
) -> TrainResult:
    """Train ``model`` on blocks (num_blocks, T) with the run settings; checkpoints go to ``output_dir``.

    ``should_stop(step, record)`` is called after every validation (and, with record {}, after every step);
    returning True stops the run like a signal does (checkpoint, then return) — used by sweeps for pruning.
    """
    from s3cmn.data import BlockSampler

    out_dir = Path(training.output_dir)
    device = resolve_device(training.device)
    amp = autocast_dtype(training.mixed_precision, device)
    scaler = torch.amp.GradScaler("cuda") if amp == torch.float16 else None
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    main = rank == 0

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
    if training.resume:
        folder = resolve_checkpoint(out_dir / "last")
        _load_model_state(model, folder)
        state = load_training_state(folder, optimizer, scheduler)
        sampler.load_state_dict(state["sampler"])
        model.memory_writes = state["memory_writes"]
        logger.info("resumed from %s at step %d (%d tokens)", folder, state["step"], state["tokens"])
    train_model = model
    if dist.is_initialized():
        train_model = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
    if training.compile:
        train_model = torch.compile(train_model)
    metrics = MetricsLogger(out_dir, enabled=main)
    batches = _Batches(sampler)
    difficulty = None
    if training.curriculum == "difficulty":
        difficulty = DifficultyCurriculum(train_blocks, model.config.vocab_size, training, rank)
    if training.curriculum != "none" and not training.curriculum_tokens:
        raise TrainingError(f"curriculum = {training.curriculum!r} needs --curriculum-tokens > 0 (its ramp length)")
    history: list[dict[str, Any]] = []

    def trainer_state() -> dict[str, Any]:
        return {**state, "sampler": sampler.state_dict(), "memory_writes": model.memory_writes}

    def save(name: str) -> None:
        if main:
            save_checkpoint(out_dir / name, model, optimizer, scheduler, trainer_state(), tokenizer)
        if dist.is_initialized():
            dist.barrier()

    def validate() -> dict[str, Any]:
        val_loss = evaluate_loss(model, valid_blocks, training.batch_size, training.eval_batches, device, amp)
        record = {"kind": "validation", "step": state["step"], "tokens": state["tokens"], "loss": val_loss,
                  "ppl": math.exp(min(val_loss, 50.0)), "elapsed_s": state["elapsed"]}
        if model.memories:  # the stores' health, logged at each validation (occupancy left to s3cmn-memory)
            record["memory"] = {layer: {k: v for k, v in m.stats().to_dict().items() if k != "cluster_occupancy"}
                                for layer, m in model.memories.items()}
        if tokenizer is not None and training.num_samples and main:
            record["samples"] = generate_samples(model, tokenizer, training.sample_length,
                                                 SAMPLE_PROMPTS[: training.num_samples])
        metrics.log(record)
        history.append(record)
        best = state["best_val_loss"]
        if best is None or val_loss < best:
            state["best_val_loss"], state["bad_evals"] = val_loss, 0
            save("best")
        else:
            state["bad_evals"] += 1
        logger.info("step %d: validation loss %.4f, ppl %.2f", state["step"], val_loss, record["ppl"])
        return record

    stopped, last_loss, val_loss = "max_epochs", float("nan"), None
    tokens_per_step = 0
    window_start, window_tokens = time.perf_counter(), 0
    run_start = time.perf_counter() - state["elapsed"]
    progress = _progress_bar(total_steps, state["step"], enabled=main)
    with _StopSignal() as stop_signal:
        while True:
            if state["step"] >= total_steps:
                stopped = "max_steps" if training.max_steps and state["step"] >= training.max_steps else "max_epochs"
                break
            if training.max_tokens and state["tokens"] >= training.max_tokens:
                stopped = "max_tokens"
                break
            if training.max_time and state["elapsed"] >= training.max_time:
                stopped = "max_time"
                break
            # 1. forward / backward over the accumulated micro-batches (the memory is written after each forward)
            length = train_blocks.shape[1]
            if training.curriculum == "seq-length":
                length = warmup_length(state["tokens"], training)
            tokens_per_step = training.batch_size * training.gradient_accumulation_steps * length * world
            loss_sum, spike, hit = 0.0, [], []
            for micro in range(training.gradient_accumulation_steps):
                if difficulty is not None:
                    indices = difficulty.indices(state["step"], micro, state["tokens"], training.batch_size)
                else:
                    indices = batches.next(training.batch_size)
                batch = train_blocks[indices, :length].to(device)  # (B, T)
                with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                    out = train_model(batch, labels=batch, use_cache=False, write_memory=True)
                loss = out.loss / training.gradient_accumulation_steps
                if not torch.isfinite(loss):
                    break
                (scaler.scale(loss) if scaler else loss).backward()
                loss_sum += loss.item()
                if out.spike_rate is not None:
                    spike.append(out.spike_rate.item())
                if out.memory_hit_rate is not None:
                    hit.append(out.memory_hit_rate.item())
            # 2. a NaN/inf loss is never stepped on
            if not torch.isfinite(loss):
                optimizer.zero_grad(set_to_none=True)
                message = f"loss is {loss.item()} at step {state['step'] + 1} (lr {scheduler.get_last_lr()[0]:.3g})"
                if training.nan_policy == "stop":
                    metrics.close()
                    raise TrainingError(message + ": stopped without writing a checkpoint of this state; lower "
                                        "--learning-rate, check the data, or use --nan-policy skip")
                logger.warning("%s: batch skipped (nan_policy = skip)", message)
                state["skipped"] += 1
                continue
            # 3. clip, step, schedule
            if scaler:
                scaler.unscale_(optimizer)
            if training.gradient_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), training.gradient_clip)
            if scaler:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if dist.is_initialized():  # buffers updated after the forward (homeostatic thresholds): rank 0's win
                for buffer in model.buffers():
                    dist.broadcast(buffer, src=0)
            state["step"] += 1
            state["tokens"] += tokens_per_step
            state["elapsed"] = time.perf_counter() - run_start
            window_tokens += tokens_per_step
            last_loss = _mean_over_ranks(loss_sum)
            # 4. log, validate, save
            if state["step"] % training.log_interval == 0 or state["step"] == total_steps:
                now = time.perf_counter()
                record = {"kind": "train", "step": state["step"], "tokens": state["tokens"], "loss": last_loss,
                          "ppl": math.exp(min(last_loss, 50.0)), "lr": scheduler.get_last_lr()[0],
                          "tokens_per_s": window_tokens / max(now - window_start, 1e-9),
                          "spike_rate": float(np.mean(spike)) if spike else None,
                          "memory_hit_rate": float(np.mean(hit)) if hit else None, "elapsed_s": state["elapsed"],
                          "sequence_length": length}
                if difficulty is not None:
                    record["competence"] = difficulty.competence(state["tokens"])
                metrics.log(record)
                progress.set_postfix(
                    loss=f"{last_loss:.3f}", ppl=f"{record['ppl']:.1f}", tok_s=f"{record['tokens_per_s']:.0f}",
                    lr=f"{record['lr']:.2e}", spikes=f"{record['spike_rate'] or 0:.3f}",
                    mem_hit=f"{record['memory_hit_rate'] or 0:.2f}",
                )
                window_start, window_tokens = now, 0
            progress.update(1)
            if valid_blocks is not None and state["step"] % training.eval_interval == 0:
                record = validate()
                val_loss = record["loss"]
                if training.early_stopping_patience and state["bad_evals"] >= training.early_stopping_patience:
                    stopped = "early_stopping"
                    break
                if should_stop is not None and should_stop(state["step"], record):
                    stopped = "callback"
                    break
            if state["step"] % training.save_interval == 0:
                save("last")
            if stop_signal.received is not None:
                stopped = f"signal {signal.Signals(stop_signal.received).name}"
                break
            if should_stop is not None and should_stop(state["step"], {}):
                stopped = "callback"
                break
        progress.close()
        if valid_blocks is not None and (not history or history[-1]["step"] != state["step"]) and state["step"]:
            val_loss = validate()["loss"]
        save("last")
    metrics.close()
    throughput = state["tokens"] / max(state["elapsed"], 1e-9)
    return TrainResult(state["step"], state["tokens"], last_loss, val_loss, state["best_val_loss"], throughput,
                       stopped, str(out_dir), history)


def _progress_bar(total: int, initial: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True)


def _mean_over_ranks(value: float) -> float:
    if not dist.is_initialized():
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return t.item() / dist.get_world_size()


def _load_model_state(model: Any, folder: Path) -> None:
    """Weights and memory of a training checkpoint into ``model`` (strict; safetensors only)."""
    from s3cmn.modeling.lm import S3CMNForCausalLM

    loaded = S3CMNForCausalLM.from_pretrained(folder)
    model.load_state_dict(loaded.state_dict())
    model.memories = loaded.memories


# ------------------------------------------------------------------------------------------------------
def prepare_data(data: DataConfig, training: TrainingConfig) -> tuple[Any, torch.Tensor, torch.Tensor | None]:
    """Tokenizer and packed train / validation blocks (num_blocks, sequence_length) from the data settings."""
    from s3cmn.data import load_text_splits, load_tokenizer, pack_blocks, tokenize_cached

    has_validation = data.validation_file is not None or data.train_file is None
    splits = load_text_splits(data, ("train", "validation") if has_validation else ("train",))
    tokenizer = load_tokenizer(data.tokenizer, train_text=splits["train"])
    train_ids = tokenize_cached(splits["train"], tokenizer, data.cache_dir)
    train_blocks = pack_blocks(train_ids, training.sequence_length)
    valid_blocks = None
    if has_validation:
        valid_blocks = pack_blocks(tokenize_cached(splits["validation"], tokenizer, data.cache_dir),
                                   training.sequence_length)
    if train_blocks.shape[0] < training.batch_size:
        logger.warning("only %d training blocks for batch_size %d: batches repeat blocks within a step",
                       train_blocks.shape[0], training.batch_size)
    return tokenizer, train_blocks, valid_blocks


def train(model_config: S3CMNConfig, training: TrainingConfig, data: DataConfig,
          should_stop: Callable[[int, dict[str, Any]], bool] | None = None) -> TrainResult:
    """Prepare data and tokenizer, build (or resume) the model, and run :func:`fit`."""
    from s3cmn.modeling.lm import S3CMNForCausalLM

    _init_distributed(training)
    tokenizer, train_blocks, valid_blocks = prepare_data(data, training)
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
    return fit(model, train_blocks, valid_blocks, training, tokenizer, should_stop)


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

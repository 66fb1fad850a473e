"""The training loop: ``fit`` as a short loop over named steps, and ``train``, which prepares the data first.

``train(model_config, training, data)`` prepares the data and runs :func:`fit`. ``fit`` is also the
entry point for tests and sweeps: it takes a model, blocks of token ids and the run settings. The steps
are in :mod:`.steps`, their shared state in :mod:`.state`, the set-up in :mod:`.setup_run`, validation in
:mod:`.validate`, resuming in :mod:`.resume` and the stop signals in :mod:`.signals`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from s3cmn.model_config import S3CMNConfig
from s3cmn.run_config import DataConfig, TrainingConfig
from s3cmn.training.checkpoint import check_output_dir
from s3cmn.training.setup_run import (
    claim_output_dir,
    init_distributed,
    is_main_process,
    resolve_device,
    seed_everything,
    start_run,
)
from s3cmn.training.signals import StopSignal
from s3cmn.training.size_guard import check_training_fits
from s3cmn.training.state import Run, TrainingError, TrainResult, save_run
from s3cmn.training.steps import count_step, forward_backward, log_validate_save, optimizer_step, skip_step, stop_reason
from s3cmn.training.validate import evaluate_loss, validate

__all__ = ["TrainResult", "TrainingError", "evaluate_loss", "fit", "prepare_data", "seed_everything", "train"]

logger = logging.getLogger(__name__)

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
    with claim_output_dir(training, main), StopSignal() as signals:
        run = start_run(model, train_blocks, valid_blocks, training, tokenizer, should_stop, data, signals)
        run.settings["validation_text"] = validation_text  # what `best` is selected on, for s3cmn-eval's report
        try:
            while (stopped := stop_reason(run)) is None:
                step = forward_backward(run)  # 1. the micro-batches (the memory is written after each forward)
                if step is None:  # abandoned by a second stop signal
                    continue
                if not step.finite:  # 2. a NaN/inf loss is never stepped on
                    skip_step(run, step)
                    continue
                optimizer_step(run)  # 3. unscale, clip, step, schedule
                count_step(run, step)
                log_validate_save(run, step)  # 4. log, validate, checkpoint
            return _finish(run, stopped)
        finally:
            run.progress.close()
            run.metrics.close()


def _finish(run: Run, stopped: str) -> TrainResult:
    """The final validation (not after a stop signal: the user wants out), the ``last`` checkpoint, the result."""
    state = run.state
    validated = run.history and run.history[-1]["step"] == state["step"]
    if stopped.startswith("signal"):
        logger.info("stopped by %s at step %d: writing the checkpoint, no final validation", stopped[7:],
                    state["step"])
    elif run.valid_blocks is not None and not validated and state["step"]:
        validate(run)
    save_run(run, "last")
    throughput = state["tokens"] / max(state["elapsed"], 1e-9)
    return TrainResult(state["step"], state["tokens"], run.last_loss, run.val_loss, state["best_val_loss"],
                       throughput, stopped, str(run.out_dir), run.history, run.precision.name,
                       run.batches.epochs_done, state["elapsed"])


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
    model_config.check_sequence_length(training.sequence_length)  # settings errors before any data is read
    check_output_dir(training.output_dir, training.resume, training.overwrite)
    init_distributed(training)
    device = resolve_device(training.device)
    check_training_fits(model_config, training, device)  # before the data is read and the model allocated
    tokenizer, train_blocks, valid_blocks, validation_text = prepare_data(data, training)
    vocab = len(tokenizer)
    changes: dict[str, Any] = {"pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id}
    if model_config.vocab_size != vocab:
        logger.info("vocab_size set to the tokenizer's %d (was %d)", vocab, model_config.vocab_size)
        changes["vocab_size"] = vocab
    model_config = model_config.replace(**changes)
    if "vocab_size" in changes:  # the embedding and head follow the tokenizer's vocabulary
        check_training_fits(model_config, training, device)
    from s3cmn.modeling.lm import S3CMNForCausalLM  # here: transformers' import takes seconds, a refusal none

    seed_everything(training.seed)
    model = S3CMNForCausalLM(model_config)
    logger.info("model: %.2fM parameters", sum(p.numel() for p in model.parameters()) / 1e6)
    Path(training.output_dir).mkdir(parents=True, exist_ok=True)
    return fit(model, train_blocks, valid_blocks, training, tokenizer, should_stop, data, validation_text)

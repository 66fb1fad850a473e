"""evaluate_checkpoint: WikiText-2 perplexity (memory off and on), spike sparsity, memory statistics, speed, size
and peak memory of a checkpoint, in fp32 and optionally 8-bit, gathered into one JSON-ready report.

The memory a model is scored with: ``memory_start`` "saved" (as loaded from the checkpoint) or "empty"; each
memory-on run starts from a fresh copy of it and adds only what the scored windows write, after they are
scored (:mod:`s3cmn.evaluation.perplexity`). Memory-off runs neither read nor write. The report states the
starting and final entries, and how many starting entries already hold a 16-token window of the scored text.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import torch

from s3cmn.evaluation.memory_state import (
    memory_content,
    provenance_overlap,
    restore_memories,
    snapshot_memories,
    summarise_reads,
)
from s3cmn.evaluation.perplexity import EvalText, nll_summary, prepare_text, score_stream
from s3cmn.evaluation.readouts import (
    readout_generation_cost,
    readout_inputs,
    readout_summary,
    resolve_memory_modes,
    score_modes,
)
from s3cmn.evaluation.sparsity import ENERGY_NOTE, model_sparsity
from s3cmn.evaluation.speed import PeakMemory, folder_size, measure_speed, parameter_count, serialized_size
from s3cmn.memory.nexttoken.stream import READOUT_MODES
from s3cmn.run_config import DataConfig, EvalConfig, TrainingConfig

logger = logging.getLogger(__name__)

MemoryStart = Literal["saved", "empty"]
REPORT_FORMAT = "s3cmn-eval-report"
REPORT_VERSION = 1
CURVE_CONTEXTS = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json")


class EvaluationError(ValueError):
    """A checkpoint or a setting cannot be evaluated; the message says why and what to do."""


# --------------------------------------------------------------------------------------------------
# inputs


def load_checkpoint(path: str | os.PathLike) -> Any:
    """``S3CMNForCausalLM.from_pretrained(path)`` with one-line errors for a missing or broken checkpoint."""
    from s3cmn.modeling.lm import S3CMNForCausalLM

    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise EvaluationError(f"checkpoint {folder} does not exist or is not a folder")
    if not (folder / "config.json").is_file():
        inner = [folder / n for n in ("best", "last") if (folder / n / "config.json").is_file()]
        hint = f"; it holds training checkpoints: evaluate {inner[0]}" if inner else ""
        raise EvaluationError(f"{folder} is not a model checkpoint: config.json is missing{hint}")
    try:
        return S3CMNForCausalLM.from_pretrained(str(folder))
    except (OSError, ValueError, KeyError, TypeError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise EvaluationError(f"cannot load the checkpoint {folder}: {reason}") from err


def load_eval_tokenizer(folder: Path, data: DataConfig) -> tuple[Any, str]:
    """The tokenizer saved in the checkpoint folder, else the one named by ``data.tokenizer`` (logged)."""
    from s3cmn.data import load_tokenizer

    if any((folder / name).is_file() for name in _TOKENIZER_FILES):
        return load_tokenizer(str(folder)), "checkpoint"
    logger.warning("checkpoint %s holds no tokenizer: using the tokenizer setting %r", folder, data.tokenizer)
    return load_tokenizer(data.tokenizer), "data.tokenizer"


def training_sequence_length(folder: Path) -> tuple[int, str]:
    """The training ``sequence_length``: from ``trainer_state.json`` when it records it, else the default."""
    state_file = folder / "trainer_state.json"
    if state_file.is_file():
        state = json.loads(state_file.read_text(encoding="utf-8"))
        if "sequence_length" in state:
            return int(state["sequence_length"]), "trainer_state.json sequence_length"
    return TrainingConfig().sequence_length, "TrainingConfig default sequence_length (not recorded in the checkpoint)"


def resolve_window(evaluation: EvalConfig, config: Any, folder: Path) -> dict[str, Any]:
    """Context and stride: 0 means the training sequence length and context // 2; learned positions cap it."""
    context, source = evaluation.context_length, "context_length"
    if context == 0:
        context, source = training_sequence_length(folder)
    if config.position_embedding == "learned" and context > config.max_position_embeddings:
        if evaluation.context_length:
            raise EvaluationError(f"context_length {context} exceeds the model's max_position_embeddings "
                                  f"{config.max_position_embeddings} (learned positions)")  # fmt: skip
        context, source = config.max_position_embeddings, "max_position_embeddings (learned positions)"
    stride = evaluation.stride or max(1, context // 2)
    if context < 2 or not 1 <= stride < context:
        raise EvaluationError(f"stride {stride} must be in [1, context_length - 1] with context_length {context} "
                              ">= 2, so that every token is scored exactly once")  # fmt: skip
    return {"context_length": context, "context_source": source, "stride": stride}


def text_source(data: DataConfig, split: str) -> dict[str, Any]:
    """Where the split's text came from: a file (path and its SHA-256) or a hub dataset."""
    from s3cmn.data.text import _local_paths, canonical_split

    if any(p is not None for p in (data.train_file, data.validation_file, data.test_file, data.data_dir)):
        name = canonical_split(split)
        path = _local_paths(data, [name])[name].resolve()
        return {"kind": "file", "path": str(path), "file_sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    return {"kind": "hub", "dataset": data.dataset_name, "config": data.dataset_config}


# --------------------------------------------------------------------------------------------------
# runs


def _layer_names(model: Any, count: int) -> list[str]:
    names = [str(layer) for layer in model.memory_bank.layers]
    return names if len(names) == count else [str(i) for i in range(count)]


def score_run(model: Any, precision: str, mode: str, text: EvalText, window: dict[str, Any], batch_size: int,
              snapshot: Any, device: torch.device, progress: bool) -> dict[str, Any]:
    """One perplexity run: memory ``mode`` "off" (no reads, no writes) or "on" (fresh starting copy, writes)."""
    use = mode == "on"
    if use:
        restore_memories(model, snapshot)
    start = memory_content(model.memory_bank) if use else None
    with PeakMemory(device) as peak:
        score = score_stream(model, text.stream, window["context_length"], window["stride"], batch_size,
                             use_memory=use, write_memory=use, progress=progress, desc=f"{precision} memory {mode}")
    run: dict[str, Any] = {
        "precision": precision,
        "memory": mode,
        "perplexity": nll_summary(score.nll_sum, text.num_tokens, text.words, text.bytes),
        "windows": score.windows,
        "forwards": score.forwards,
        "tokens_processed": score.tokens_processed,
        "seconds": score.seconds,
        "scored_tokens_per_s": text.num_tokens / max(score.seconds, 1e-9),
        "peak_memory": peak.result,
        "sparsity": [s.to_dict() for s in model_sparsity(model, score.spike_stats, score.tokens_processed)],
        "memory_state": None,
    }
    if use:
        reads = score.memory_reads or []
        names = _layer_names(model, len(reads))
        run["memory_state"] = {
            "start": start,
            "end": memory_content(model.memory_bank),
            "reads": {name: summarise_reads(r) for name, r in zip(names, reads, strict=True)},
            "store": {str(layer): m.stats().to_dict() for layer, m in model.memory_bank},
            "hit_rate_trace": score.hit_rate_trace,
        }
        restore_memories(model, snapshot)  # leave the model holding the starting memory
    ppl = run["perplexity"]
    logger.info("%s memory %s: token ppl %.3f, word ppl %.3f, %.4f bits/byte (%d tokens, %.1f s)", precision,
                mode, ppl["token_perplexity"], ppl["word_perplexity"], ppl["bits_per_byte"], text.num_tokens,
                score.seconds)  # fmt: skip
    return run


def context_curve(model: Any, text: EvalText, contexts: Sequence[int], tokens: int, batch_size: int,
                  progress: bool) -> list[dict[str, Any]]:
    """Token perplexity (memory off) on the first ``tokens`` tokens, for each context (stride = context // 2)."""
    stream = text.stream[: tokens + 1]
    rows = []
    for c in contexts:
        score = score_stream(model, stream, c, max(1, c // 2), batch_size, progress=progress, desc=f"context {c}")
        n = stream.numel() - 1
        rows.append({"context_length": c, "stride": max(1, c // 2), "tokens": n,
                     "nll_per_token": score.nll_sum / n, "token_perplexity": nll_summary(
                         score.nll_sum, n, 1, 1)["token_perplexity"]})  # fmt: skip
    return rows


def speed_and_size(model: Any, text: EvalText, use_memory: bool, device: torch.device, prompt_tokens: int,
                   new_tokens: int, repeats: int) -> dict[str, Any]:
    """Parameters, serialised size, prefill / generation speed and the peak memory while timing."""
    limit = prompt_tokens
    if model.config.position_embedding == "learned":  # prompt + generated tokens must have positions
        limit = min(limit, model.config.max_position_embeddings - new_tokens)
    prompt = text.stream[1 : 1 + max(1, min(limit, text.num_tokens))][None]  # (1, T): real text
    with PeakMemory(device) as peak:
        speed = measure_speed(model, prompt, new_tokens, repeats, use_memory=use_memory)
    return {"parameters": parameter_count(model), "serialized_state_dict_bytes": serialized_size(model),
            "speed": speed.to_dict(), "speed_peak_memory": peak.result}  # fmt: skip


def import_quantizer() -> Any:
    """``quantize_model`` of :mod:`s3cmn.quantization` (the quantization issue), or a clear ImportError."""
    try:
        from s3cmn.quantization import quantize_model
    except ImportError:
        try:
            from s3cmn.quantization.backends import quantize_model
        except ImportError as err:
            raise ImportError(f"--quantize int8 needs s3cmn.quantization.quantize_model, which is not available "
                              f"({err}); run without --quantize") from err  # fmt: skip
    return quantize_model


# --------------------------------------------------------------------------------------------------
# the whole evaluation



def selection_note(folder: Path) -> str:
    """Which text the checkpoint was selected on (its validation text), as one report note."""
    from s3cmn.data.errors import DataError
    from s3cmn.data.validation import describe_selection, validation_selection
    from s3cmn.training.checkpoint import CheckpointError

    try:
        record = validation_selection(folder)
    except (DataError, CheckpointError):  # a bare model folder (save_pretrained) has no trainer state
        record = None
    return f"checkpoint selected (best, early stopping) on: {describe_selection(record)}"

def evaluate_checkpoint(
    checkpoint: str | os.PathLike,
    data: DataConfig,
    evaluation: EvalConfig,
    *,
    memory_start: MemoryStart = "saved",
    memory_modes: Sequence[str] | None = None,
    device: str | None = None,
    progress: bool = False,
    speed_prompt_tokens: int = 256,
    speed_new_tokens: int = 32,
    speed_repeats: int = 3,
    curve_contexts: Sequence[int] | None = None,
    curve_tokens: int = 2048,
) -> dict[str, Any]:
    """Evaluate ``checkpoint`` on the ``evaluation.split`` text; returns the report (see :mod:`.report`).

    ``memory_modes``: any of :data:`MEMORY_MODES` (default: from ``evaluation.memory``: off, on = learned,
    both = off + learned). ``curve_contexts`` None: the perplexity-against-context curve is computed (powers
    of two up to the context) only when ``evaluation.plot_dir`` is set; an empty sequence: never.
    """
    from s3cmn.data import load_text_splits
    from s3cmn.evaluation.report import environment, tokenizer_info

    if memory_start not in ("saved", "empty"):
        raise EvaluationError(f"memory_start must be 'saved' or 'empty', got {memory_start!r}")
    started = time.time()
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    folder = Path(checkpoint).expanduser()
    model = load_checkpoint(folder).to(dev).eval()
    tokenizer, tokenizer_source = load_eval_tokenizer(folder, data)
    window = resolve_window(evaluation, model.config, folder)
    raw = load_text_splits(data, (evaluation.split,))[evaluation.split]
    text = prepare_text(raw, tokenizer, evaluation.max_eval_tokens, data.cache_dir, model.config.vocab_size)
    notes: list[str] = [selection_note(folder)]

    # 1. the starting memory
    has_memory = len(model.memory_bank) > 0
    if memory_start == "empty":
        model.memory_bank.reset()
    elif has_memory and not (folder / "memory").is_dir():
        notes.append("the checkpoint holds no saved memory: the 'saved' starting memory is empty")
    snapshot = snapshot_memories(model, memory_start)
    overlap = provenance_overlap(model, text.stream) if has_memory else {}
    if any(overlap.values()):
        msg = (f"the starting memory holds {sum(overlap.values())} entries whose 16-token window occurs in the "
               "scored text: it may have been written from this text")  # fmt: skip
        logger.warning(msg)
        notes.append(msg)
    modes = resolve_memory_modes(memory_modes, evaluation.memory)
    if not has_memory and "learned" in modes:
        modes = [m for m in modes if m != "learned"] or ["off"]
        notes.append("the model has no external memory (use_memory = False): the learned reader was not scored")
    readouts, datastore = readout_inputs(folder, modes, text, window, notes)

    if "learned" in modes:
        notes.append(f"memory learned: the {evaluation.eval_batch_size} windows of one forward (eval_batch_size) read "
                     "the memory as it was before that forward and are written to it after they are scored")
    # 2. fp32: perplexity runs, speed, size, the context curve
    runs = score_modes(model, "fp32", modes, text, window, evaluation.eval_batch_size, snapshot, dev, progress,
                       readouts, datastore)  # fmt: skip
    use_memory = has_memory and "learned" in modes
    models = {"fp32": {**speed_and_size(model, text, use_memory, dev, speed_prompt_tokens,
                                        speed_new_tokens, speed_repeats), "disk": folder_size(folder)}}  # fmt: skip
    generation_modes = [m for m in modes if m in READOUT_MODES and m != "off"]
    if generation_modes:
        models["fp32"]["readout_generation"] = readout_generation_cost(
            model, text, generation_modes, readouts, datastore, speed_new_tokens, speed_repeats)
    if curve_contexts is None:
        c = window["context_length"]
        curve_contexts = [x for x in CURVE_CONTEXTS if x < c][-5:] + [c] if evaluation.plot_dir else []
    curve = context_curve(model, text, curve_contexts, curve_tokens, evaluation.eval_batch_size, progress) \
        if curve_contexts else []  # fmt: skip
    model_config = model.config.settings_dict()

    # 3. int8: a fresh copy from disk, quantized, with the same starting memory
    if evaluation.quantize == "int8":
        quantize_model = import_quantizer()
        del model
        gc.collect()
        with PeakMemory(dev) as peak:
            qmodel = load_checkpoint(folder).to(dev).eval()
            qmodel, qreport = quantize_model(qmodel, evaluation.backend)
        restore_memories(qmodel, snapshot)
        runs += score_modes(qmodel, "int8", modes, text, window, evaluation.eval_batch_size, snapshot, dev,
                            progress, readouts, datastore)  # fmt: skip
        models["int8"] = {**speed_and_size(qmodel, text, use_memory, dev, speed_prompt_tokens,
                                           speed_new_tokens, speed_repeats),
                          "parameters": qreport.params_total,  # counted before quantization
                          "load_and_quantize_peak_memory": peak.result,
                          "quantization": {**asdict(qreport), "int8_fraction": qreport.int8_fraction}}  # fmt: skip

    return {
        "format": REPORT_FORMAT,
        "version": REPORT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "seconds": time.time() - started,
        "checkpoint": {"path": str(folder.resolve()), "model_config": model_config},
        "settings": {"evaluation": evaluation.to_dict(), "data": data.to_dict(), **window,
                     "memory_modes": modes, "memory_start": memory_start, "device": str(dev),
                     "speed": {"prompt_tokens": speed_prompt_tokens, "new_tokens": speed_new_tokens,
                               "repeats": speed_repeats},
                     "context_curve": {"contexts": list(curve_contexts), "tokens": curve_tokens}},  # fmt: skip
        "data": {"split": evaluation.split, "source": text_source(data, evaluation.split),
                 "split_text_sha256": hashlib.sha256(raw.encode("utf-8")).hexdigest(),
                 "split_bytes": len(raw.encode("utf-8")), "truncated": text.truncated, "lines": text.lines,
                 "words": text.words, "bytes": text.bytes, "tokens": text.num_tokens,
                 "prefix_token_id": text.prefix_token_id},  # fmt: skip
        "tokenizer": tokenizer_info(tokenizer, tokenizer_source),
        "memory_start": {"content": memory_start, "layers": memory_content(snapshot.bank),
                         "entries_holding_scored_text": overlap},  # fmt: skip
        "readouts": readout_summary(readouts, datastore, modes),
        "runs": runs,
        "models": models,
        "context_curve": curve,
        "energy_note": ENERGY_NOTE,
        "notes": notes,
        "environment": environment(dev),
    }


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
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from s3cmn.evaluation.dynamic_runs import dynamic_inputs
from s3cmn.evaluation.errors import EvaluationError
from s3cmn.evaluation.memory_state import (
    MemorySnapshot,
    memory_content,
    provenance_overlap,
    restore_memories,
    snapshot_memories,
)
from s3cmn.evaluation.perplexity import EvalText, prepare_text
from s3cmn.evaluation.readouts import (
    readout_generation_cost,
    readout_inputs,
    readout_summary,
    resolve_memory_modes,
    score_modes,
)
from s3cmn.evaluation.runs import context_curve, speed_and_size
from s3cmn.evaluation.sparsity import ENERGY_NOTE
from s3cmn.evaluation.speed import PeakMemory, folder_size
from s3cmn.modeling.loading import load_model
from s3cmn.nexttoken.stream import READOUT_MODES
from s3cmn.run_config import DataConfig, EvalConfig, TrainingConfig
from s3cmn.utils.checkpoints import STATE_FILE, CheckpointError, read_trainer_state

__all__ = ["EvaluationError", "evaluate_checkpoint", "load_eval_tokenizer", "resolve_window", "selection_note"]

logger = logging.getLogger(__name__)

MemoryStart = Literal["saved", "empty"]
REPORT_FORMAT = "s3cmn-eval-report"
REPORT_VERSION = 1
PROTOCOL = "sliding"  # the split as one stream, overlapping windows; the other: lm_eval_protocol ("lm-eval")
CURVE_CONTEXTS = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


# --------------------------------------------------------------------------------------------------
# inputs


def load_eval_tokenizer(folder: Path, data: DataConfig) -> tuple[Any, str]:
    """The tokenizer saved in the checkpoint folder, else the one named by ``data.tokenizer`` (logged)."""
    from s3cmn.data import checkpoint_tokenizer, load_tokenizer

    saved = checkpoint_tokenizer(folder)
    if saved is not None:
        return saved, "checkpoint"
    logger.warning("checkpoint %s holds no tokenizer: using the tokenizer setting %r", folder, data.tokenizer)
    return load_tokenizer(data.tokenizer), "data.tokenizer"


def training_sequence_length(folder: Path) -> tuple[int, str]:
    """The training ``sequence_length``: from ``trainer_state.json`` when it records it, else the default."""
    if (folder / STATE_FILE).is_file():
        state = read_trainer_state(folder)
        if "sequence_length" in state:
            return int(state["sequence_length"]), f"{STATE_FILE} sequence_length"
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
# the whole evaluation


def selection_note(folder: Path) -> str:
    """Which text the checkpoint was selected on (its validation text), as one report note."""
    from s3cmn.data.validation import describe_selection, validation_selection

    try:
        record = validation_selection(folder)
    except CheckpointError:  # a bare model folder (save_pretrained) has no trainer state
        record = None
    return f"checkpoint selected (best, early stopping) on: {describe_selection(record)}"


@dataclass
class _Scoring:
    """What every run of one evaluation shares: the text, the window, the modes and the starting memory."""

    folder: Path
    device: torch.device
    raw: str
    text: EvalText
    tokenizer: Any
    tokenizer_source: str
    window: dict[str, Any]
    modes: list[str]
    snapshot: Any
    overlap: dict[str, int]
    use_memory: bool  # the learned memory is read in the speed runs
    readouts: Any
    datastore: Any
    notes: list[str]
    learned_writes: bool = False  # the learned memory also stores the scored text (memory_writes)
    readout_overlap: dict[str, Any] | None = None  # the scored text's n-gram overlap with the read-outs' texts
    dynamic: Any = None  # dynamic evaluation's fitted settings (s3cmn.evaluation.dynamic_runs.DynamicInputs)


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
    if memory_start not in ("saved", "empty"):
        raise EvaluationError(f"memory_start must be 'saved' or 'empty', got {memory_start!r}")
    started = time.time()
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    folder = Path(checkpoint).expanduser()
    speed = {"prompt_tokens": speed_prompt_tokens, "new_tokens": speed_new_tokens, "repeats": speed_repeats}
    model = load_model(folder).to(dev).eval()
    # 1. the text, the window and the starting memory
    scoring = _prepare(model, folder, data, evaluation, memory_start, memory_modes, dev)
    scoring.dynamic = dynamic_inputs(folder, scoring.modes, scoring.text, scoring.tokenizer, scoring.notes,
                                     evaluation.readout_max_overlap)
    # 2. fp32: perplexity runs, speed, size, the context curve
    runs, models = _score_fp32(model, scoring, evaluation, speed, progress)
    if curve_contexts is None:
        c = scoring.window["context_length"]
        curve_contexts = [x for x in CURVE_CONTEXTS if x < c][-5:] + [c] if evaluation.plot_dir else []
    curve = context_curve(model, scoring.text, curve_contexts, curve_tokens, evaluation.eval_batch_size, progress) \
        if curve_contexts else []  # fmt: skip
    model_config = model.config.settings_dict()
    # 3. int8: a fresh copy from disk, quantized, with the same starting memory
    if evaluation.quantize == "int8":
        del model
        gc.collect()
        int8_runs, models["int8"] = _score_int8(scoring, evaluation, speed, progress)
        runs += int8_runs
    settings = {"protocol": PROTOCOL, "evaluation": evaluation.to_dict(), "data": data.to_dict(), **scoring.window,
                "memory_modes": scoring.modes, "memory_start": memory_start, "device": str(dev), "speed": speed,
                "context_curve": {"contexts": list(curve_contexts), "tokens": curve_tokens}}  # fmt: skip
    return _report(scoring, data, evaluation, started, model_config, settings, runs, models, curve)


def learned_writes(evaluation: EvalConfig, snapshot: MemorySnapshot) -> bool:
    """Whether the learned memory stores the text it scores: ``memory_writes``, where auto = only when the
    starting memory holds no entries (from a filled saved memory, reading alone scored better on held-out
    text: benchmarks/memory_stride.py)."""
    if evaluation.memory_writes == "auto":
        return sum(memory.num_entries for _, memory in snapshot.bank) == 0
    return evaluation.memory_writes == "on"


def _prepare(model: Any, folder: Path, data: DataConfig, evaluation: EvalConfig, memory_start: MemoryStart,
             memory_modes: Sequence[str] | None, device: torch.device) -> _Scoring:
    """Tokenizer, window and text; the starting memory (saved or emptied) and its overlap with the text;
    the memory modes to score and the read-outs they need."""
    from s3cmn.data import load_text_splits

    tokenizer, tokenizer_source = load_eval_tokenizer(folder, data)
    window = resolve_window(evaluation, model.config, folder)
    raw = load_text_splits(data, (evaluation.split,))[evaluation.split]
    text = prepare_text(raw, tokenizer, evaluation.max_eval_tokens, data.cache_dir, model.config.vocab_size)
    notes: list[str] = [selection_note(folder)]
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
    readouts, datastore, readout_overlap = readout_inputs(folder, modes, text, window, notes,
                                                          evaluation.readout_max_overlap)
    writes = learned_writes(evaluation, snapshot)
    if "learned" in modes and writes:
        notes.append(f"memory learned: the {evaluation.eval_batch_size} windows of one forward (eval_batch_size) read "
                     "the memory as it was before that forward and are written to it after they are scored")
    elif "learned" in modes:
        notes.append(f"memory learned: read only (memory_writes = {evaluation.memory_writes}): every window reads "
                     "the starting memory, and nothing of the scored text is stored")
    return _Scoring(folder, device, raw, text, tokenizer, tokenizer_source, window, modes, snapshot, overlap,
                    has_memory and "learned" in modes, readouts, datastore, notes, writes, readout_overlap)


def _score_fp32(model: Any, scoring: _Scoring, evaluation: EvalConfig, speed: dict[str, int],
                progress: bool) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The fp32 runs of every mode, and the fp32 model's speed, size and read-out generation cost."""
    s = scoring
    runs = score_modes(model, "fp32", s.modes, s.text, s.window, evaluation.eval_batch_size, s.snapshot, s.device,
                       progress, s.readouts, s.datastore, s.learned_writes, s.dynamic)  # fmt: skip
    fp32 = {**speed_and_size(model, s.text, s.use_memory, s.device, **speed), "disk": folder_size(s.folder)}
    generation_modes = [m for m in s.modes if m in READOUT_MODES and m != "off"]
    if generation_modes:
        fp32["readout_generation"] = readout_generation_cost(
            model, s.text, generation_modes, s.readouts, s.datastore, speed["new_tokens"], speed["repeats"])
    return runs, {"fp32": fp32}


def _score_int8(scoring: _Scoring, evaluation: EvalConfig, speed: dict[str, int],
                progress: bool) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The checkpoint loaded again and quantized (its peak memory measured), then scored like the fp32 one."""
    from s3cmn.quantization.backends import quantize_model

    s = scoring
    with PeakMemory(s.device) as peak:
        model = load_model(s.folder).to(s.device).eval()
        model, report = quantize_model(model, evaluation.backend)
    restore_memories(model, s.snapshot)
    runs = score_modes(model, "int8", s.modes, s.text, s.window, evaluation.eval_batch_size, s.snapshot, s.device,
                       progress, s.readouts, s.datastore, s.learned_writes, s.dynamic)  # fmt: skip
    int8 = {**speed_and_size(model, s.text, s.use_memory, s.device, **speed),
            "parameters": report.params_total,  # counted before quantization
            "load_and_quantize_peak_memory": peak.result,
            "quantization": {**asdict(report), "int8_fraction": report.int8_fraction}}  # fmt: skip
    return runs, int8


def report_header(protocol: str, started: float, folder: Path, model_config: dict[str, Any]) -> dict[str, Any]:
    """The fields every evaluation report opens with, whichever protocol scored it."""
    return {"format": REPORT_FORMAT, "version": REPORT_VERSION, "protocol": protocol,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
            "seconds": time.time() - started,
            "checkpoint": {"path": str(folder.resolve()), "model_config": model_config}}  # fmt: skip


def _report(scoring: _Scoring, data: DataConfig, evaluation: EvalConfig, started: float,
            model_config: dict[str, Any], settings: dict[str, Any], runs: list[dict[str, Any]],
            models: dict[str, Any], curve: list[dict[str, Any]]) -> dict[str, Any]:
    from s3cmn.evaluation.report import environment, tokenizer_info

    s, raw, text = scoring, scoring.raw, scoring.text
    return {
        **report_header(PROTOCOL, started, s.folder, model_config),
        "settings": settings,
        "data": {"split": evaluation.split, "source": text_source(data, evaluation.split),
                 "split_text_sha256": hashlib.sha256(raw.encode("utf-8")).hexdigest(),
                 "split_bytes": len(raw.encode("utf-8")), "truncated": text.truncated, "lines": text.lines,
                 "words": text.words, "bytes": text.bytes, "tokens": text.num_tokens,
                 "prefix_token_id": text.prefix_token_id},  # fmt: skip
        "tokenizer": tokenizer_info(s.tokenizer, s.tokenizer_source),
        "memory_start": {"content": settings["memory_start"], "layers": memory_content(s.snapshot.bank),
                         "entries_holding_scored_text": s.overlap},  # fmt: skip
        "readouts": readout_summary(s.readouts, s.datastore, s.modes, s.readout_overlap),
        "runs": runs,
        "models": models,
        "context_curve": curve,
        "energy_note": ENERGY_NOTE,
        "notes": s.notes,
        "environment": environment(s.device),
    }

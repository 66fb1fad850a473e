"""Quality at equal compute: s3cmn (memory off / on) vs GPT-2, an LSTM and a Mamba-only model on WikiText-2.

Every model is trained by ``s3cmn.training.fit`` (AdamW β = (0.9, 0.95), weight decay on matrices, warmup +
cosine to 10% of the peak, gradient clip 1.0, the same precision, batch, block length and data order for a
given seed) until it has seen the **token budget** or used the **wall-clock limit**, whichever comes first
(each run reports which: ``tokens`` or ``time``); the cosine schedule is laid out over the token
budget. Then each model scores the same test text with ``s3cmn.evaluation.perplexity.score_stream``
(sliding windows of the training length, stride half of it, every token scored once, fp32) and
``nll_summary`` gives token perplexity, word perplexity and bits per byte (normalised by the words and UTF-8
bytes of the scored raw text, so they compare across tokenizers).

Models (sizes in ``s3cmn/evaluation/baselines.py``): ``s3cmn`` (the preset, memory off), ``s3cmn+mem`` (memory on:
written during training and while scoring; also scored with the memory read switched off), ``gpt2``
(``GPT2LMHeadModel``), ``lstm`` (PyTorch's word_language_model LSTM, tied), ``mamba`` (s3cmn with only the
Mamba mixer) — same width, vocabulary and tied embeddings, total parameters matched within ~1% (GPT-2 and
Mamba keep s3cmn's depth and solve their MLP width; the tied LSTM solves its number of layers).

Honest splits: every model trains on the training text, validates ``--evals`` times on text held out from
it (offline WikiText-2: the last 6 of the 60 articles of ``wiki.valid.raw``, by s3cmn.data.validation's rule;
``--data-dir``: the real ``wiki.valid.raw``; ``--corpus python``: the standard library's validation files), and
the weights of its best validation are scored on the test text (``wiki.test.raw`` / the test files) once, at
the end. Nothing is chosen on the test text. The report says which text selected the checkpoint.

Equal tuning (``--lr-grid 1e-3,3e-3,6e-3``): the peak rate is chosen per model, on the validation text. Every
model trains at every rate at the first seed (the test split is not scored), keeps the rate of its lowest best
validation loss (a choice at either end of the grid is flagged: widen it), then every seed runs at that rate and
is scored on the test text once (the first seed's tuning run is scored, not retrained). Without it every model
trains at ``--lr``, a rate chosen for s3cmn alone.

Tokenizer: ``--tokenizer gpt2`` (default: GPT-2's byte-level BPE from ``../shared/data/tokenizers/gpt2``,
lossless: newlines and capitals are predicted and counted), ``bert`` (bert-base-uncased, lossy), ``bpe:N``
(trained on the training text only) or a path; the report says whether ``decode(encode(text)) == text``.

    python benchmarks/compare.py --quick --out results/compare-quick     # 1 seed, 1k tokens, 4 x 64 (< 1 min)
    python benchmarks/compare.py --out results/compare                   # 2 seeds, 512k tokens per run
    python benchmarks/compare.py --equal-time 600 --lr-from results/compare/tiny-wikitext2-tuned \
        --out results/compare/tiny-wikitext2-equal-time      # equal wall-clock, rates from a tuned comparison
    python benchmarks/compare.py --corpus python --out results/compare-python
    python benchmarks/compare.py --lr-grid 1e-3,3e-3,6e-3 --out results/compare-tuned   # a rate per model

Equal wall-clock (``--equal-time SECONDS``): every model trains for the seconds given, on this machine, at its
fastest native precision. Its training tokens/s is measured first with the real training loop (``calibrate``;
kept in ``calibration.json`` so a rerun reuses it), and its token budget is that rate times the seconds, so each
model gets a whole cosine schedule and its ``--evals`` validations spread over its own budget. Validation time
is not counted. ``--lr-from DIR`` takes each model's rate from a tuned comparison (chosen there on its
validation text, at its token budget; the report says which).

Seeds run seed-major (every model at seed 0, then every model at seed 1), so a change in the machine's load
spreads over the models instead of hitting one. Writes ``compare.json``, ``compare.md`` and
``compare_loss_curves.png`` (when matplotlib is installed) into ``--out``. Every finished run is kept in
``--out/runs/<model>-seed<N>[-lr<rate>]/record.json`` with the settings it ran with: the same command again (or
with more seeds) reuses the finished runs and trains only the rest (``--no-resume`` retrains all).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

# Before torch loads OpenMP: idle OpenMP threads sleep instead of spinning. On a shared, oversubscribed machine
# spinning threads wait for a descheduled partner and one step gets 4-30x slower (measured here); export
# OMP_WAIT_POLICY=ACTIVE to measure the spinning default.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from s3cmn.evaluation.baselines import MODEL_KINDS, build_model, count_params, embedding_params  # noqa: E402
from s3cmn.evaluation.benchmarking import close_meta, fmt_load, parse_overrides, run_meta, write_results  # noqa: E402
from s3cmn.evaluation.corpora import CORPORA, load_corpus  # noqa: E402
from s3cmn.evaluation.tuning import parse_grid, tune, tuning_markdown  # noqa: E402
from s3cmn.model_config import S3CMNConfig  # noqa: E402
from s3cmn.presets import preset_training  # noqa: E402
from s3cmn.training.checkpoint import remove_checkpoint  # noqa: E402
from s3cmn.utils.precision import cpu_model_name  # noqa: E402

logger = logging.getLogger("compare")
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
METRICS = ("word_perplexity", "bits_per_byte", "token_perplexity")
# fit() stops at max_steps (the budget in steps, checked first) or max_tokens when the budget is spent.
STOPPED = {"max_steps": "tokens", "max_tokens": "tokens", "max_time": "time", "max_epochs": "epochs"}


# ------------------------------------------------------------------------------------------------------
# data


def load_data(args: argparse.Namespace) -> Any:
    """The corpus's tokenizer and train / validation ids and test text (``s3cmn.evaluation.corpora.load_corpus``)."""
    return load_corpus(args.corpus, args.tokenizer, args.shared_data, args.data_dir)


# ------------------------------------------------------------------------------------------------------
# one run


def training_config(args: argparse.Namespace, seed: int, lr: float, run_dir: Path, num_blocks: int) -> Any:
    """The same TrainingConfig for every model: the budget in steps, a 10% warmup, ``--evals`` validations
    on the held-out text (each keeps ``best`` when it improves; the last one is at the end of training); peak
    rate ``lr`` (0 = the preset's)."""
    from s3cmn.run_config import TrainingConfig

    tokens_per_step = args.batch_size * args.seq_len
    steps = max(1, math.ceil(args.max_tokens / tokens_per_step))
    steps_per_epoch = max(1, num_blocks // args.batch_size)
    fields = {**preset_training(args.preset), "batch_size": args.batch_size, "sequence_length": args.seq_len,
              "learning_rate": lr or preset_training(args.preset).get("learning_rate", 1e-3),
              "num_epochs": math.ceil(steps / steps_per_epoch) + 1, "max_steps": steps,
              "max_tokens": args.max_tokens, "max_time": args.max_time, "warmup_steps": max(1, round(0.1 * steps)),
              "mixed_precision": args.precision, "device": "cpu", "seed": seed,
              "eval_interval": max(1, steps // max(args.evals, 1)), "eval_batches": args.eval_batches,
              "save_interval": 10**9, "log_interval": 1, "num_samples": 0, "output_dir": str(run_dir)}
    return TrainingConfig(**fields)


def score(model: torch.nn.Module, text: Any, args: argparse.Namespace, memory: bool) -> dict[str, Any]:
    """Sliding-window scores of the test text (memory read and written while scoring when ``memory``)."""
    from s3cmn.evaluation.perplexity import nll_summary, score_stream

    model.eval()
    stride = args.stride or args.seq_len // 2
    s = score_stream(model, text.stream, args.seq_len, stride, args.eval_batch_size, use_memory=memory,
                     write_memory=memory)
    return {**nll_summary(s.nll_sum, text.num_tokens, text.words, text.bytes), "seconds": s.seconds,
            "scored_tokens_per_s": text.num_tokens / max(s.seconds, 1e-9), "context_length": args.seq_len,
            "stride": stride, "memory": memory}


def load_best(model: torch.nn.Module, run_dir: Path) -> None:
    """The weights of the ``best`` checkpoint (lowest validation loss) into ``model``, in place."""
    from safetensors.torch import load_model

    path = run_dir / "best" / "model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: training never validated (raise the budget or --evals)")
    load_model(model, str(path))


def run_one(kind: str, seed: int, args: argparse.Namespace, reference: S3CMNConfig, data: dict[str, torch.Tensor],
            text: Any, out: Path, lr: float | None = None, scored: bool = True,
            resume: bool | None = None) -> dict[str, Any]:
    """Train ``kind`` at ``seed`` and peak rate ``lr`` (default ``--lr``) on ``data["train"]`` (num_blocks, T),
    select the checkpoint with the lowest loss on ``data["valid"]`` and, when ``scored``, score the test text with
    it (once); the run's record. With ``resume`` (default ``--resume``) a run saved with the same settings is
    reused; one trained but not yet scored (a tuning run) is scored from the ``best`` checkpoint it kept."""
    lr = args.lr if lr is None else lr
    args = model_args(args, kind)
    name = f"{kind}-seed{seed}" + (f"-lr{lr:g}" if args.lr_grid else "")
    run_dir = out / "runs" / name
    key = run_key(args, lr)
    saved = read_record(run_dir / RECORD)
    if (args.resume if resume is None else resume) and saved is not None:
        record = saved["record"]
        if saved.get("key") != key:
            logger.info("%s seed %d: %s was run with other settings: retraining", kind, seed, run_dir / RECORD)
        elif str(record.get("stopped", "")).startswith("signal"):  # recorded by an older compare.py
            logger.info("%s seed %d: %s was interrupted (%s): retraining", kind, seed, run_dir, record["stopped"])
        elif "eval" in record or not scored:
            logger.info("%s seed %d: reusing the finished run in %s (--no-resume retrains)", kind, seed, run_dir)
            if "eval" in record:  # killed after saving its scores, before removing the checkpoints
                remove_checkpoints(run_dir)
            return record
        elif (run_dir / "best").exists():
            logger.info("%s seed %d: scoring the trained run in %s", kind, seed, run_dir)
            return score_run(record, restore(kind, seed, args, reference, run_dir), args, text, run_dir, key)
        else:
            logger.info("%s seed %d: %s has no best checkpoint left to score: retraining", kind, seed, run_dir)
    record, model = train_run(kind, seed, lr, args, reference, data, run_dir, key)
    return score_run(record, model, args, text, run_dir, key) if scored else record


def this_cpu() -> dict[str, str]:
    """The CPU a run trained (or a calibration measured) on: its model name and torch's capability level."""
    return {"cpu": cpu_model_name(), "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def train_run(kind: str, seed: int, lr: float, args: argparse.Namespace, reference: S3CMNConfig,
              data: dict[str, torch.Tensor], run_dir: Path, key: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """Train from scratch; the record (no test scores yet) and the model holding its best weights. The record is
    saved and the ``best`` and ``last`` checkpoints kept until :func:`score_run` scores the run."""
    from s3cmn.training import fit
    from s3cmn.training.loop import seed_everything

    shutil.rmtree(run_dir, ignore_errors=True)
    training = training_config(args, seed, lr, run_dir, data["train"].shape[0])
    seed_everything(seed)
    model = build_model(kind, reference, positions=args.seq_len)
    logger.info("%s seed %d: %.3fM parameters, lr %g", kind, seed, count_params(model) / 1e6, training.learning_rate)
    cpu_start = time.process_time()
    result = fit(model, data["train"], data["valid"], training)
    train_cpu_s = time.process_time() - cpu_start  # this process's CPU time: all threads, training + saving
    if result.stopped.startswith("signal"):  # an interrupted run is not a result: no record, a rerun retrains it
        raise KeyboardInterrupt(f"{kind} seed {seed} interrupted by {result.stopped[7:]} at step {result.steps}")
    log = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    curve = [{k: r[k] for k in ("step", "tokens", "loss", "elapsed_s", "tokens_per_s")} for r in log
             if r["kind"] == "train"]
    validations = [{k: r[k] for k in ("step", "tokens", "loss", "ppl")} for r in log if r["kind"] == "validation"]
    best = min(validations, key=lambda r: r["loss"]) if validations else None
    load_best(model, run_dir)
    steady = [r["tokens_per_s"] for r in curve[1:]] or [result.tokens_per_s]  # the first step is the warm-up
    record = {"model": kind, "seed": seed, "lr": training.learning_rate, "run_dir": str(run_dir),
              "params": count_params(model), "embedding_params": embedding_params(model),
              "description": model.description, "steps": result.steps,
              "train_tokens": result.tokens, "stopped": STOPPED.get(result.stopped, result.stopped),
              "train_seconds": curve[-1]["elapsed_s"] if curve else 0.0, "train_cpu_seconds": train_cpu_s,
              "train_tokens_per_s": result.tokens_per_s, "train_tokens_per_s_median": statistics.median(steady),
              "final_train_loss": result.train_loss, "curve": curve, "validations": validations,
              "best_step": best and best["step"], "best_val_loss": best and best["loss"],
              "machine": this_cpu()}
    write_json_atomic(run_dir / RECORD, {"key": key, "record": record})
    return record, model


def restore(kind: str, seed: int, args: argparse.Namespace, reference: S3CMNConfig, run_dir: Path) -> Any:
    """The model of a trained run as :func:`train_run` left it: the best weights and, for ``s3cmn+mem``, the
    memory as training left it (saved with the ``last`` checkpoint)."""
    from s3cmn.training.loop import seed_everything

    seed_everything(seed)
    model = build_model(kind, reference, positions=args.seq_len)
    if kind == "s3cmn+mem":
        model.memory_bank.load(run_dir / "last" / "memory")
    load_best(model, run_dir)
    return model


def score_run(record: dict[str, Any], model: Any, args: argparse.Namespace, text: Any, run_dir: Path,
              key: dict[str, Any]) -> dict[str, Any]:
    """Score the test text once with the run's best weights; save the record, then remove the checkpoints."""
    kind = record["model"]
    record = {**record, "eval": {"default": score(model, text, args, memory=kind == "s3cmn+mem")}}
    if kind == "s3cmn+mem":  # the same weights with the read switched off (before the scoring writes matter)
        record["eval"]["memory_off"] = score(model, text, args, memory=False)
        record["memory_entries"] = {str(k): m.num_entries for k, m in model.memory_bank}
    record["finished"] = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "threads": args.threads,
                          "loadavg": list(os.getloadavg())}
    write_json_atomic(run_dir / RECORD, {"key": key, "record": record})
    remove_checkpoints(run_dir)
    return record


def remove_checkpoints(run_dir: Path) -> None:
    for name in ("last", "best"):  # the checkpoints fit() saves (symlinks to snapshots); metrics.jsonl stays
        remove_checkpoint(run_dir / name)


# ------------------------------------------------------------------------------------------------------
# equal wall-clock and reused rates

CALIBRATION = "calibration.json"
CALIBRATION_STEPS = 24  # optimiser steps per measurement (the first is the warm-up, left out of the median)
# measurements per model and precision, in alternating model order; the budget is from their median, so one
# measurement disturbed by the machine (seen: one model 34% slower in one round only) does not set it
CALIBRATION_ROUNDS = 3


def model_args(args: argparse.Namespace, kind: str) -> argparse.Namespace:
    """``args`` for one model: under ``--equal-time`` its own token budget and precision (the calibration's),
    and no wall-clock limit (the budget ends the run; its validations add to its wall time, not its budget)."""
    if not args.equal_time:
        return args
    mine = args.calibration["models"][kind]
    return argparse.Namespace(**{**vars(args), "max_tokens": mine["max_tokens"], "precision": mine["precision"],
                                 "max_time": 0.0, "calibration": None})


def precisions() -> list[str]:
    """The training precisions this CPU runs natively: fp32, and bf16 where the CPU has it (an emulated bf16 is
    ~100x slower and never the fastest)."""
    from s3cmn.utils.precision import cpu_bf16_support

    return ["no", "bf16"] if cpu_bf16_support().native else ["no"]


def calibration_key(args: argparse.Namespace) -> dict[str, Any]:
    keep = ("corpus", "preset", "override", "batch_size", "seq_len", "threads", "tokenizer", "equal_time", "data_dir",
            "shared_data")
    return json.loads(json.dumps({**{k: getattr(args, k) for k in keep}, **this_cpu(),
                                  "rounds": CALIBRATION_ROUNDS, "statistic": "median"}))


def calibrate(args: argparse.Namespace, reference: S3CMNConfig, data: dict[str, torch.Tensor],
              out: Path) -> dict[str, Any]:
    """Equal wall-clock (``--equal-time T``): each model's token budget is what it trains in T seconds here, at
    its fastest precision. Its training tokens/s is measured with the real loop (``fit``, CALIBRATION_STEPS steps
    on the training blocks, no validation), for each native precision, CALIBRATION_ROUNDS times in alternating
    model order; the median of the rounds (each a median over steps), times T, rounded down to whole steps, is its
    budget (a calibration.json from before the rounds were in its key, two rounds and their mean, is measured
    again). Saved as ``calibration.json``
    in ``out`` and reused by a rerun with the same settings on the same CPU, so finished runs stay valid."""
    import tempfile

    from s3cmn.training import fit
    from s3cmn.training.loop import seed_everything

    key = calibration_key(args)
    out.mkdir(parents=True, exist_ok=True)
    saved = read_record(out / CALIBRATION)
    if saved is not None and saved.get("key") == key:
        logger.info("equal time: reusing the calibration in %s", out / CALIBRATION)
        return saved["record"]
    def settings(k: dict[str, Any]) -> dict[str, Any]:  # the key without the CPU that measured it
        return {name: v for name, v in k.items() if name not in this_cpu()}

    if (saved is not None and args.keep_calibration and isinstance(saved.get("key"), dict)
            and settings(saved["key"]) == settings(key)):
        logger.warning("equal time: --keep-calibration: reusing %s, measured on %s (%s), not this CPU (%s): the "
                       "budgets are what each model trains in %g s there", out / CALIBRATION, saved["key"].get("cpu"),
                       saved["key"].get("cpu_capability"), this_cpu()["cpu_capability"], args.equal_time)
        return saved["record"]
    if saved is not None:
        logger.info("equal time: %s was measured with other settings or on another CPU: measuring again",
                    out / CALIBRATION)
    kinds, rates = list(args.models), {}
    blocks = data["train"][: CALIBRATION_STEPS * args.batch_size]
    for round_ in range(CALIBRATION_ROUNDS):
        for kind in kinds if round_ % 2 == 0 else kinds[::-1]:
            for precision in precisions():
                with tempfile.TemporaryDirectory(dir=out) as tmp:
                    margs = argparse.Namespace(**{**vars(args), "precision": precision, "evals": 1,
                                                  "max_tokens": CALIBRATION_STEPS * args.batch_size * args.seq_len})
                    training = training_config(margs, 0, args.lr or 1e-3, Path(tmp) / "run", blocks.shape[0])
                    seed_everything(0)
                    model = build_model(kind, reference, positions=args.seq_len)
                    fit(model, blocks, None, training)
                    log = [json.loads(line) for line in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
                rate = statistics.median(r["tokens_per_s"] for r in log if r["kind"] == "train" and r["step"] > 1)
                rates.setdefault(kind, {}).setdefault(precision, []).append(rate)
                logger.info("equal time: %s at %s trains %.0f tokens/s", kind, precision, rate)
    tokens_per_step = args.batch_size * args.seq_len
    models = {}
    for kind in kinds:
        typical = {p: statistics.median(v) for p, v in rates[kind].items()}
        fastest = max(typical, key=lambda p: typical[p])
        steps = max(1, int(typical[fastest] * args.equal_time // tokens_per_step))
        models[kind] = {"precision": fastest, "tokens_per_s": typical[fastest], "measured": rates[kind],
                        "max_tokens": steps * tokens_per_step}
    record = {"seconds": args.equal_time, "steps_per_measurement": CALIBRATION_STEPS,
              "rounds": CALIBRATION_ROUNDS, "statistic": "median", "models": models,
              "date": time.strftime("%Y-%m-%d %H:%M:%S"), "loadavg": list(os.getloadavg())}
    write_json_atomic(out / CALIBRATION, {"key": key, "record": record})
    return record


def rates_from(path: str, models: list[str]) -> dict[str, Any]:
    """Each model's rate as a tuned comparison chose it (``--lr-from``: its compare.json's tuning)."""
    file = Path(path) / "compare.json" if Path(path).is_dir() else Path(path)
    try:
        result = json.loads(file.read_text(encoding="utf-8"))
        tuning = result["tuning"]
        chosen = {kind: tuning["chosen"][kind]["lr"] for kind in models}
        max_tokens = result["settings"]["max_tokens"]
    except FileNotFoundError:
        raise SystemExit(f"--lr-from {path}: {file} not found: give a folder written by compare.py --lr-grid") from None
    except (ValueError, KeyError, TypeError) as err:
        raise SystemExit(f"--lr-from {path}: {file} holds no tuned rate for every model ({err!r}): give a "
                         "comparison run with --lr-grid and the same --models") from None
    return {"path": str(file), "chosen": chosen, "validation": tuning.get("validation"),
            "max_tokens": max_tokens}


RECORD = "record.json"  # a run's record and the settings it ran with (a rerun reuses it); "eval" once scored
# settings that do not change one run (under --equal-time the calibration sets max_tokens and precision, in the key)
NOT_IN_KEY = ("out", "threads", "seeds", "models", "resume", "lr_grid", "calibration", "lr_from", "keep_calibration")


def run_key(args: argparse.Namespace, lr: float) -> dict[str, Any]:
    """The settings one run's result depends on, its own peak rate ``lr`` included (a saved run is reused only
    when they are all equal)."""
    settings = {**{k: v for k, v in vars(args).items() if k not in NOT_IN_KEY}, "lr": lr}
    if not settings.get("equal_time"):  # off: the key of a run from before --equal-time existed, still valid
        settings.pop("equal_time", None)
    return json.loads(json.dumps(dict(sorted(settings.items()))))


TUNING = "tuning.json"  # the grid's choice, saved when the grid completes and reused by every rerun


def tuning_key(args: argparse.Namespace) -> dict[str, Any]:
    """What a grid's choice depends on: one run's settings (its rate aside), the grid, the models, the seed."""
    return json.loads(json.dumps({**run_key(args, 0.0), "lr": None, "lr_grid": args.lr_grid,
                                  "models": list(args.models), "seed": args.seeds[0]}))


def saved_choice(out: Path, args: argparse.Namespace) -> dict[str, Any] | None:
    """The tuning this grid chose when it completed (``tuning.json`` with the same key), or None.

    The choice is made once. A run retrained afterwards (a final run whose checkpoint was gone, on another CPU)
    changes its record, and recomputing the choice from the records would then move it and retrain the seeds
    already run at the old rate."""
    try:
        saved = json.loads((out / TUNING).read_text(encoding="utf-8"))
        if saved.get("key") == tuning_key(args):
            return saved["tuning"]
        logger.warning("%s was chosen with other settings: the grid's choice is made again", out / TUNING)
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        logger.warning("%s is unreadable (%s): the grid's choice is made again", out / TUNING, err)
    return None


def read_record(path: Path) -> dict[str, Any] | None:
    """A finished run's saved record, or None when absent or unreadable (then the run is trained again)."""
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        logger.warning("%s is unreadable (%s): the run is trained again", path, err)
        return None
    return saved if isinstance(saved, dict) and "record" in saved else None


def write_json_atomic(path: Path, value: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=1, allow_nan=False), encoding="utf-8")
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------------------
# summary


def spread(values: list[float]) -> dict[str, Any]:
    """Mean, sample standard deviation (0 for one value), min, max and the values."""
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "values": values}


PARAM_TOLERANCE = 0.01  # the issue's "parameters matched within 1%"


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (model, scoring variant): metrics over seeds as mean ± std; ``param_ratio`` = the model's
    parameters over s3cmn's (memory off), ``params_matched`` whether it is within 1%."""
    rows = []
    reference = next((r["params"] for r in runs if r["model"] == "s3cmn"), None)
    for kind in dict.fromkeys(r["model"] for r in runs):
        mine = [r for r in runs if r["model"] == kind]
        for variant in mine[0]["eval"]:
            name = kind if variant == "default" else f"{kind} (read off at test)"
            row = {"name": name, "model": kind, "variant": variant, "seeds": [r["seed"] for r in mine],
                   "lr": mine[0].get("lr"),  # absent from records saved before the rate was recorded
                   "params": mine[0]["params"], "embedding_params": mine[0]["embedding_params"],
                   "stopped": sorted({r["stopped"] for r in mine}),
                   "param_ratio": mine[0]["params"] / reference if reference else None,
                   "params_matched": abs(mine[0]["params"] / reference - 1) <= PARAM_TOLERANCE if reference else None,
                   "best_val_loss": spread([r["best_val_loss"] for r in mine]),
                   "train_tokens": spread([float(r["train_tokens"]) for r in mine]),
                   "train_tokens_per_s": spread([r["train_tokens_per_s_median"] for r in mine]),
                   "train_cpu_seconds": spread([r["train_cpu_seconds"] for r in mine])}
            for metric in METRICS:
                row[metric] = spread([r["eval"][variant][metric] for r in mine])
            rows.append(row)
    return rows


def markdown(result: dict[str, Any]) -> str:
    s = result["settings"]
    corpus = {"wikitext2": "WikiText-2", "python": "Python standard library"}[s["corpus"]]
    lossless = "lossless" if s["lossless_tokenizer"] else "LOSSY: decode(encode(text)) != text"
    lr_from, calibration = s.get("lr_from"), s.get("calibration")
    rate = ("tuned per model (below)" if s["lr_grid"] else
            f"per model from the tuned comparison {lr_from['path']} (chosen on its validation text at "
            f"{lr_from['max_tokens']:,} tokens: " + ", ".join(f"{k} {v:g}" for k, v in lr_from["chosen"].items()) + ")"
            if lr_from else s["lr"] or "preset")
    budget = (f"equal wall-clock: {s['equal_time']:.0f} s of training per run, each model's token budget its "
              "training tokens/s measured here times that (calibration below)" if calibration else
              f"budget {s['max_tokens']:,} tokens or {s['max_time']:.0f} s")
    precision = "each model's fastest (below)" if calibration else s["precision"]
    lines = [
        f"{corpus}, trained on {s['data']['train']}; checkpoint (best of {s['evals']} validations) selected on "
        f"{s['data']['validation']} ({s['valid_tokens']:,} tokens); test scored once, on "
        f"{'the first' if s['eval_truncated'] else 'all'} {s['eval_tokens_scored']:,} tokens of "
        f"{s['data']['test']} ({s['eval_words']:,} words, "
        f"{s['eval_bytes']:,} bytes); tokenizer {s['tokenizer']} ({lossless}, V = {s['vocab_size']:,}); "
        f"lr {rate}; {budget}, batch {s['batch_size']} x {s['seq_len']}, precision {precision}, "
        f"{result['meta']['threads']} threads; seeds {s['seeds']}; mean ± std over seeds.",
        "",
        "| model | params (non-emb.) | / s3cmn | stopped by | train tokens | train tok/s | train CPU s | best val loss "
        "| word ppl | bits/byte | token ppl |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]

    def pm(d: dict[str, Any], f: str) -> str:
        return f"{d['mean']:{f}} ± {d['std']:{f}}"

    def ratio(r: dict[str, Any]) -> str:
        if r["param_ratio"] is None:
            return "–"
        return f"{r['param_ratio']:.3f}" + ("" if r["params_matched"] else " (NOT within 1%)")

    for r in result["rows"]:
        lines.append(
            f"| {r['name']} | {r['params'] / 1e6:.2f}M ({(r['params'] - r['embedding_params']) / 1e3:.0f}k) | "
            f"{ratio(r)} | {', '.join(r['stopped'])} | {r['train_tokens']['mean']:,.0f} | "
            f"{pm(r['train_tokens_per_s'], ',.0f')} | {pm(r['train_cpu_seconds'], '.0f')} | "
            f"{pm(r['best_val_loss'], '.3f')} | "
            f"{pm(r['word_perplexity'], ',.1f')} | {pm(r['bits_per_byte'], '.3f')} | "
            f"{pm(r['token_perplexity'], ',.1f')} |")
    solved = {"gpt2": "n_inner", "lstm": "nlayers", "mamba": "mlp_ratio"}
    lines += ["", "How the baselines are matched to s3cmn (memory off): " + "; ".join(
        f"{kind}: {d['matched']} ({solved[kind]} = {d[solved[kind]]:g})" for kind, d in result["descriptions"].items()
        if kind in solved) + ".",
              ""]
    if calibration:
        lines += [f"Equal wall-clock calibration: each model's training tokens/s with the training loop "
                  f"({calibration['steps_per_measurement']} steps, the first left out, "
                  f"{calibration.get('rounds', 2)} times in alternating model order, the "
                  f"{calibration.get('statistic', 'mean')} of the rounds' medians) at each precision this CPU runs "
                  f"natively; the fastest sets the "
                  f"budget = tokens/s x {calibration['seconds']:.0f} s, in whole steps.", "",
                  "| model | measured tokens/s | precision used | token budget |", "| --- | --- | --- | ---: |"]
        for kind, c in calibration["models"].items():
            measured = "; ".join(f"{'fp32' if p == 'no' else p}: " + ", ".join(f"{v:,.0f}" for v in values)
                                 for p, values in c["measured"].items())
            lines.append(f"| {kind} | {measured} | {'fp32' if c['precision'] == 'no' else c['precision']} | "
                         f"{c['max_tokens']:,} |")
        lines.append("")
    if result["tuning"]:
        lines += tuning_markdown(result["tuning"])
    lines += [fmt_load(result["meta"]) + f"; wall time {result['meta']['wall_s']:.0f} s.", ""]
    return "\n".join(lines)


def plot_curves(runs: list[dict[str, Any]], path: Path) -> str | None:
    """Training loss against tokens and against seconds (EMA-smoothed, one line per seed); None if no matplotlib."""
    try:
        import matplotlib
    except ImportError:
        logger.warning("matplotlib is not installed: no loss-curve PNG (pip install 's3cmn[eval]')")
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    colors = dict(zip(MODEL_KINDS, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    labelled: set[str] = set()
    for r in runs:
        smooth, ema = [], None
        for p in r["curve"]:
            ema = p["loss"] if ema is None else 0.8 * ema + 0.2 * p["loss"]
            smooth.append(ema)
        label = None if r["model"] in labelled else r["model"]
        labelled.add(r["model"])
        for ax, key in zip(axes, ("tokens", "elapsed_s"), strict=True):
            ax.plot([p[key] for p in r["curve"]], smooth, color=colors[r["model"]], alpha=0.8, label=label)
    axes[0].set_xlabel("training tokens")
    axes[1].set_xlabel("wall-clock seconds (training)")
    axes[0].set_ylabel("training loss (nats/token, EMA 0.8)")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


# ------------------------------------------------------------------------------------------------------
# command line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="1 seed, batch 4 x 64, 1k-token budget, 1k scored tokens")
    p.add_argument("--out", default="results/compare", help="output folder")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--models", nargs="+", choices=MODEL_KINDS, default=list(MODEL_KINDS))
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="default: 0 1 (quick: 0)")
    p.add_argument("--max-tokens", type=int, default=None, help="token budget per run (default 524288; quick 1024)")
    p.add_argument("--max-time", type=float, default=None,
                   help="wall-clock limit per run, s (default 7200; quick 10); with a huge --max-tokens: equal time")
    p.add_argument("--eval-tokens", type=int, default=None, help="score the first N test tokens (default 0 = the whole "
                   "split; quick 1024)")
    p.add_argument("--preset", default="tiny", help="s3cmn preset all models are sized from")
    p.add_argument("--override", nargs="*", default=[], metavar="FIELD=VALUE",
                   help="s3cmn config overrides (JSON values), e.g. hidden_dim=64")
    p.add_argument("--batch-size", type=int, default=None, help="default 4 (more optimiser steps in a tiny budget)")
    p.add_argument("--seq-len", type=int, default=None,
                   help="training block = scoring window (default: the preset's, 128; quick 64)")
    p.add_argument("--stride", type=int, default=0, help="scoring stride (0 = seq_len // 2)")
    p.add_argument("--eval-batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=0.0, help="peak learning rate (0 = the preset's)")
    p.add_argument("--lr-grid", type=grid_arg, default=None, metavar="LR,LR,...",
                   help="tune the peak rate per model: every model trains at every rate at the first seed, keeps "
                        "the rate of lowest validation loss (never looking at the test split), then every seed "
                        "runs at it and is scored on the test split once (replaces --lr)")
    p.add_argument("--precision", choices=("no", "bf16"), default="no", help="training autocast (no = fp32)")
    p.add_argument("--equal-time", type=float, default=0.0, metavar="SECONDS",
                   help="equal wall-clock: each model trains for what it does in SECONDS on this machine, at its "
                        "fastest native precision (measured first; replaces --max-tokens and --precision)")
    p.add_argument("--keep-calibration", action="store_true",
                   help="with --equal-time: reuse the calibration.json in --out even if another CPU measured it "
                        "(the same settings otherwise), to finish its runs here; the budgets stay that CPU's")
    p.add_argument("--lr-from", default=None, metavar="DIR",
                   help="each model's rate as the tuned comparison in DIR chose it (compare.py --lr-grid)")
    p.add_argument("--data-dir", default=None, help="folder with wiki.{train,valid,test}.raw (real train split)")
    p.add_argument("--shared-data", default=str(SHARED_DATA), help="the shared data folder (offline default)")
    p.add_argument("--corpus", choices=CORPORA, default="wikitext2",
                   help="wikitext2 (offline: train wiki.valid.raw minus held-out articles, score wiki.test.raw) "
                        "or python (the standard library's files, split by path)")
    p.add_argument("--tokenizer", default="gpt2", help="gpt2 (byte-level BPE, lossless; default), bert "
                   "(bert-base-uncased: lower-cases, drops newlines), bpe:N (trained on the training text), or a path")
    p.add_argument("--evals", type=int, default=None, help="validations per run on the held-out text; the best "
                   "one's weights are scored (default 8; quick 2)")
    p.add_argument("--eval-batches", type=int, default=0, help="validation batches per validation (0 = all)")
    p.add_argument("--no-resume", dest="resume", action="store_false",
                   help="retrain runs already finished in --out (default: a run whose record.json has the same "
                        "settings is reused, so an interrupted comparison, or one seed added later, resumes)")
    p.add_argument("--valid-tokens", type=int, default=None,
                   help="use the first N validation tokens (default 65536; quick 1024; 0 = all)")
    args = p.parse_args(argv)
    if sum(map(bool, (args.lr_grid, args.lr, args.lr_from))) > 1:
        p.error("--lr, --lr-grid and --lr-from exclude each other: give one way to set the rates")
    if args.equal_time < 0 or not math.isfinite(args.equal_time):
        p.error(f"--equal-time {args.equal_time} must be a positive number of seconds")
    quick = args.quick
    args.seeds = args.seeds if args.seeds is not None else ([0] if quick else [0, 1])
    args.max_tokens = args.max_tokens if args.max_tokens is not None else (1024 if quick else 524288)
    args.max_time = args.max_time if args.max_time is not None else (10.0 if quick else 7200.0)
    args.eval_tokens = args.eval_tokens if args.eval_tokens is not None else (1024 if quick else 0)
    args.valid_tokens = args.valid_tokens if args.valid_tokens is not None else (1024 if quick else 65536)
    args.evals = args.evals if args.evals is not None else (2 if quick else 8)
    args.batch_size = args.batch_size or 4
    args.seq_len = args.seq_len or (64 if quick else preset_training(args.preset).get("sequence_length", 128))
    return args


def kept_meta(out: Path, meta: dict[str, Any], runs: list[dict[str, Any]], since: float) -> dict[str, Any]:
    """The report's meta: this invocation's, unless it trained, scored and calibrated nothing (no record and no
    calibration written since ``since``, a ``time.time()``), when the meta of the report already in ``out``
    stays: its machine, load and wall time are those of the runs, and a rerun that only rewrites the report must
    not replace them with its own."""
    written = [Path(r["run_dir"]) / RECORD for r in runs] + [out / CALIBRATION]
    if any(path.is_file() and path.stat().st_mtime >= since for path in written):
        return meta
    try:
        old = json.loads((out / "compare.json").read_text(encoding="utf-8"))["meta"]
    except (OSError, ValueError, KeyError, TypeError):  # no report yet (or an unreadable one): this invocation's
        return meta
    logger.info("every run was reused: keeping the report's meta from %s (%s)", old.get("date"), old.get("command"))
    return old


def grid_arg(text: str) -> list[float]:
    try:
        return parse_grid(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from s3cmn.evaluation.perplexity import prepare_text

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    start, since = time.perf_counter(), time.time()
    meta = run_meta(args.threads, args.quick, argv, precision="fp32" if args.precision == "no" else args.precision)
    out = Path(args.out)
    corpus = load_data(args)
    tokenizer = corpus.tokenizer
    data = {split: ids[: ids.numel() // args.seq_len * args.seq_len].view(-1, args.seq_len)  # (N, T)
            for split, ids in (("train", corpus.train_ids), ("valid", corpus.valid_ids[: args.valid_tokens or None]))}
    text = prepare_text(corpus.test_text, tokenizer, max_tokens=args.eval_tokens)
    reference = S3CMNConfig.from_preset(args.preset, **{
        **parse_overrides(args.override), "vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id})

    lr_from = rates_from(args.lr_from, args.models) if args.lr_from else None
    args.calibration = calibrate(args, reference, data, out) if args.equal_time else None
    tuning = saved_choice(out, args) if args.lr_grid and args.resume else None
    if tuning is not None:
        logger.info("learning rates: reusing the grid's choice %s (made when the grid completed)",
                    {kind: c["lr"] for kind, c in tuning["chosen"].items()})
    elif args.lr_grid:  # the first seed, every rate, the test split not scored; discarded runs lose their checkpoints
        tuning = tune(args.models, args.lr_grid, args.seeds[0], corpus.source["validation"],
                      lambda kind, lr: run_one(kind, args.seeds[0], args, reference, data, text, out, lr, scored=False),
                      lambda run: remove_checkpoints(Path(run["run_dir"])))
        write_json_atomic(out / TUNING, {"key": tuning_key(args), "tuning": tuning})
    lrs = {kind: tuning["chosen"][kind]["lr"] if tuning else lr_from["chosen"][kind] if lr_from else args.lr
           for kind in args.models}
    # The first seed's run at the chosen rate is the tuning run (trained above even under --no-resume): scored now.
    runs = [run_one(kind, seed, args, reference, data, text, out, lr=lrs[kind],
                    resume=args.resume or bool(tuning and seed == args.seeds[0]))
            for seed in args.seeds for kind in args.models]
    close_meta(meta, start)
    meta = kept_meta(out, meta, runs, since)
    result = {
        "meta": meta,
        "settings": {"corpus": corpus.name, "data": corpus.source, "selection": corpus.selection,
                     "tokenizer": corpus.tokenizer_spec, "lossless_tokenizer": corpus.lossless,
                     "vocab_size": len(tokenizer), "train_tokens_available": corpus.train_ids.numel(),
                     "valid_tokens": data["valid"].numel(), "max_tokens": args.max_tokens,
                     "max_time": args.max_time, "batch_size": args.batch_size, "seq_len": args.seq_len,
                     "evals": args.evals, "eval_batches": args.eval_batches,
                     "precision": args.precision, "seeds": args.seeds, "preset": args.preset, "lr": args.lr,
                     "lr_grid": args.lr_grid, "lr_from": lr_from, "equal_time": args.equal_time or None,
                     "calibration": args.calibration,
                     "overrides": parse_overrides(args.override), "eval_tokens_scored": text.num_tokens,
                     "eval_words": text.words, "eval_bytes": text.bytes, "eval_truncated": text.truncated},
        "descriptions": {r["model"]: r["description"] for r in runs},
        "tuning": tuning,
        "rows": summarise(runs),
        "runs": runs,
    }
    out.mkdir(parents=True, exist_ok=True)
    result["loss_curves_png"] = plot_curves(runs, out / "compare_loss_curves.png")
    md = markdown(result)
    path = write_results(out, "compare", result, md)
    print(md)
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()

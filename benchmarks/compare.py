"""Quality at equal compute: s3cmn (memory off / on) vs GPT-2, an LSTM and a Mamba-only model on WikiText-2.

Every model is trained by ``s3cmn.training.fit`` (AdamW β = (0.9, 0.95), weight decay on matrices, warmup +
cosine to 10% of the peak, gradient clip 1.0, the same precision, batch, block length and data order for a
given seed) until it has seen the **token budget** or used the **wall-clock limit**, whichever comes first
(each run reports which: ``tokens`` or ``time``); the cosine schedule is laid out over the token
budget. Then each model scores the same test text with ``s3cmn.evaluation.perplexity.score_stream``
(sliding windows of the training length, stride half of it, every token scored once, fp32) and
``nll_summary`` gives token perplexity, word perplexity and bits per byte (normalised by the words and UTF-8
bytes of the scored raw text, so they compare across tokenizers).

Models (sizes in ``benchmarks/baselines.py``): ``s3cmn`` (the preset, memory off), ``s3cmn+mem`` (memory on:
written during training and while scoring; also scored with the memory read switched off), ``gpt2``
(``GPT2LMHeadModel``), ``lstm`` (PyTorch's word_language_model LSTM, tied), ``mamba`` (s3cmn with only the
Mamba mixer) — same width, vocabulary and tied embeddings, total parameters matched within ~1% (GPT-2 and
Mamba keep s3cmn's depth and solve their MLP width; the tied LSTM solves its number of layers).

Data: with ``--data-dir`` the real splits (train on ``wiki.train.raw``, score ``wiki.test.raw``); without it,
offline, the model trains on ``../shared/data/wikitext-2-raw/wiki.valid.raw`` and scores ``wiki.test.raw``.
Tokenizer: bert-base-uncased WordPiece (``../shared/data/tokenizers/bert-base-uncased``) for every model.

    python benchmarks/compare.py --quick --out results/compare-quick     # 1 seed, 1k tokens, 4 x 64 (< 1 min)
    python benchmarks/compare.py --out results/compare                   # 2 seeds, 65k tokens or 90 s per run

Seeds run seed-major (every model at seed 0, then every model at seed 1), so a change in the machine's load
spreads over the models instead of hitting one. Writes ``compare.json``, ``compare.md`` and
``compare_loss_curves.png`` (when matplotlib is installed) into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

# Before torch loads OpenMP: idle OpenMP threads sleep instead of spinning. On a shared, oversubscribed machine
# spinning threads wait for a descheduled partner and one step gets 4-30x slower (measured here); export
# OMP_WAIT_POLICY=ACTIVE to measure the spinning default.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baselines import (  # noqa: E402
    MODEL_KINDS,
    build_model,
    close_meta,
    count_params,
    embedding_params,
    fmt_load,
    parse_overrides,
    run_meta,
    write_results,
)

from s3cmn.config import S3CMNConfig, preset_training  # noqa: E402

logger = logging.getLogger("compare")
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
METRICS = ("word_perplexity", "bits_per_byte", "token_perplexity")
# fit() stops at max_steps (the budget in steps, checked first) or max_tokens when the budget is spent.
STOPPED = {"max_steps": "tokens", "max_tokens": "tokens", "max_time": "time", "max_epochs": "epochs"}


# ------------------------------------------------------------------------------------------------------
# data


def load_data(args: argparse.Namespace) -> tuple[Any, torch.Tensor, str, dict[str, str]]:
    """Tokenizer, training token ids (N,), the raw test text, and where the text came from."""
    from s3cmn.data import load_text_splits, load_tokenizer, tokenize_cached
    from s3cmn.run_config import DataConfig

    if args.data_dir:
        data = DataConfig(data_dir=args.data_dir, tokenizer=args.tokenizer)
        source = {"train": f"{args.data_dir}/wiki.train.raw", "test": f"{args.data_dir}/wiki.test.raw"}
    else:
        raw = Path(args.shared_data) / "wikitext-2-raw"
        data = DataConfig(train_file=str(raw / "wiki.valid.raw"), test_file=str(raw / "wiki.test.raw"),
                          tokenizer=args.tokenizer)
        source = {"train": str(raw / "wiki.valid.raw"), "test": str(raw / "wiki.test.raw")}
    splits = load_text_splits(data, ("train", "test"))
    tokenizer = load_tokenizer(data.tokenizer)
    return tokenizer, tokenize_cached(splits["train"], tokenizer), splits["test"], source


# ------------------------------------------------------------------------------------------------------
# one run


def training_config(args: argparse.Namespace, seed: int, run_dir: Path, num_blocks: int) -> Any:
    """The same TrainingConfig for every model: the budget in steps, a 10% warmup, no in-loop validation."""
    from s3cmn.run_config import TrainingConfig

    tokens_per_step = args.batch_size * args.seq_len
    steps = max(1, math.ceil(args.max_tokens / tokens_per_step))
    steps_per_epoch = max(1, num_blocks // args.batch_size)
    fields = {**preset_training(args.preset), "batch_size": args.batch_size, "sequence_length": args.seq_len,
              "learning_rate": args.lr or preset_training(args.preset).get("learning_rate", 1e-3),
              "num_epochs": math.ceil(steps / steps_per_epoch) + 1, "max_steps": steps,
              "max_tokens": args.max_tokens, "max_time": args.max_time, "warmup_steps": max(1, round(0.1 * steps)),
              "mixed_precision": args.precision, "device": "cpu", "seed": seed, "eval_interval": 10**9,
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


def run_one(kind: str, seed: int, args: argparse.Namespace, reference: S3CMNConfig, blocks: torch.Tensor,
            text: Any, out: Path) -> dict[str, Any]:
    """Train ``kind`` at ``seed`` on ``blocks`` (num_blocks, T), score the test text; the run's record."""
    from s3cmn.training import fit
    from s3cmn.training.loop import seed_everything

    run_dir = out / "runs" / f"{kind}-seed{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)
    training = training_config(args, seed, run_dir, blocks.shape[0])
    seed_everything(seed)
    model = build_model(kind, reference, positions=args.seq_len)
    logger.info("%s seed %d: %.3fM parameters", kind, seed, count_params(model) / 1e6)
    cpu_start = time.process_time()
    result = fit(model, blocks, None, training)
    train_cpu_s = time.process_time() - cpu_start  # this process's CPU time: all threads, training + saving
    curve = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    curve = [{k: r[k] for k in ("step", "tokens", "loss", "elapsed_s", "tokens_per_s")} for r in curve
             if r["kind"] == "train"]
    steady = [r["tokens_per_s"] for r in curve[1:]] or [result.tokens_per_s]  # the first step is the warm-up
    record = {"model": kind, "seed": seed, "params": count_params(model),
              "embedding_params": embedding_params(model), "description": model.description, "steps": result.steps,
              "train_tokens": result.tokens, "stopped": STOPPED.get(result.stopped, result.stopped),
              "train_seconds": curve[-1]["elapsed_s"] if curve else 0.0, "train_cpu_seconds": train_cpu_s,
              "train_tokens_per_s": result.tokens_per_s, "train_tokens_per_s_median": statistics.median(steady),
              "final_train_loss": result.train_loss, "curve": curve,
              "eval": {"default": score(model, text, args, memory=kind == "s3cmn+mem")}}
    if kind == "s3cmn+mem":  # the same weights with the read switched off (before the scoring writes matter)
        record["eval"]["memory_off"] = score(model, text, args, memory=False)
        record["memory_entries"] = {k: m.num_entries for k, m in model.memories.items()}
    shutil.rmtree(run_dir / "last", ignore_errors=True)  # the checkpoint fit() saves; metrics.jsonl stays
    return record


# ------------------------------------------------------------------------------------------------------
# summary


def spread(values: list[float]) -> dict[str, Any]:
    """Mean, sample standard deviation (0 for one value), min, max and the values."""
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "values": values}


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (model, scoring variant): metrics over seeds as mean ± std."""
    rows = []
    for kind in dict.fromkeys(r["model"] for r in runs):
        mine = [r for r in runs if r["model"] == kind]
        for variant in mine[0]["eval"]:
            name = kind if variant == "default" else f"{kind} (read off at test)"
            row = {"name": name, "model": kind, "variant": variant, "seeds": [r["seed"] for r in mine],
                   "params": mine[0]["params"], "embedding_params": mine[0]["embedding_params"],
                   "stopped": sorted({r["stopped"] for r in mine}),
                   "train_tokens": spread([float(r["train_tokens"]) for r in mine]),
                   "train_tokens_per_s": spread([r["train_tokens_per_s_median"] for r in mine]),
                   "train_cpu_seconds": spread([r["train_cpu_seconds"] for r in mine])}
            for metric in METRICS:
                row[metric] = spread([r["eval"][variant][metric] for r in mine])
            rows.append(row)
    return rows


def markdown(result: dict[str, Any]) -> str:
    s = result["settings"]
    lines = [
        f"WikiText-2, trained on `{Path(s['data']['train']).name}`, scored on the first {s['eval_tokens_scored']:,} "
        f"tokens of `{Path(s['data']['test']).name}` ({s['eval_words']:,} words, {s['eval_bytes']:,} bytes); "
        f"tokenizer {s['tokenizer']} (V = {s['vocab_size']:,}); budget {s['max_tokens']:,} tokens or "
        f"{s['max_time']:.0f} s, batch {s['batch_size']} x {s['seq_len']}, precision {s['precision']}, "
        f"{result['meta']['threads']} threads; seeds {s['seeds']}; mean ± std over seeds.",
        "",
        "| model | params (non-emb.) | stopped by | train tokens | train tok/s | train CPU s | word ppl | bits/byte "
        "| token ppl |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]

    def pm(d: dict[str, Any], f: str) -> str:
        return f"{d['mean']:{f}} ± {d['std']:{f}}"

    for r in result["rows"]:
        lines.append(
            f"| {r['name']} | {r['params'] / 1e6:.2f}M ({(r['params'] - r['embedding_params']) / 1e3:.0f}k) | "
            f"{', '.join(r['stopped'])} | {r['train_tokens']['mean']:,.0f} | {pm(r['train_tokens_per_s'], ',.0f')} | "
            f"{pm(r['train_cpu_seconds'], '.0f')} | "
            f"{pm(r['word_perplexity'], ',.1f')} | {pm(r['bits_per_byte'], '.3f')} | "
            f"{pm(r['token_perplexity'], ',.1f')} |")
    solved = {"gpt2": "n_inner", "lstm": "nlayers", "mamba": "mlp_ratio"}
    lines += ["", "How the baselines are matched to s3cmn (memory off): " + "; ".join(
        f"{kind}: {d['matched']} ({solved[kind]} = {d[solved[kind]]:g})" for kind, d in result["descriptions"].items()
        if kind in solved) + ".",
              "", fmt_load(result["meta"]) + f"; wall time {result['meta']['wall_s']:.0f} s.", ""]
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
    p.add_argument("--max-tokens", type=int, default=None, help="token budget per run (default 65536; quick 1024)")
    p.add_argument("--max-time", type=float, default=None, help="wall-clock limit per run, s (default 90; quick 10)")
    p.add_argument("--eval-tokens", type=int, default=None, help="score the first N test tokens (default 8192; "
                   "quick 1024; 0 = the whole split)")
    p.add_argument("--preset", default="tiny", help="s3cmn preset all models are sized from")
    p.add_argument("--override", nargs="*", default=[], metavar="FIELD=VALUE",
                   help="s3cmn config overrides (JSON values), e.g. hidden_dim=64")
    p.add_argument("--batch-size", type=int, default=None, help="default 4 (more optimiser steps in a tiny budget)")
    p.add_argument("--seq-len", type=int, default=None,
                   help="training block = scoring window (default: the preset's, 128; quick 64)")
    p.add_argument("--stride", type=int, default=0, help="scoring stride (0 = seq_len // 2)")
    p.add_argument("--eval-batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=0.0, help="peak learning rate (0 = the preset's)")
    p.add_argument("--precision", choices=("no", "bf16"), default="no", help="training autocast (no = fp32)")
    p.add_argument("--data-dir", default=None, help="folder with wiki.{train,valid,test}.raw (real train split)")
    p.add_argument("--shared-data", default=str(SHARED_DATA), help="the shared data folder (offline default)")
    p.add_argument("--tokenizer", default=None, help="default: <shared-data>/tokenizers/bert-base-uncased")
    args = p.parse_args(argv)
    quick = args.quick
    args.seeds = args.seeds if args.seeds is not None else ([0] if quick else [0, 1])
    args.max_tokens = args.max_tokens if args.max_tokens is not None else (1024 if quick else 65536)
    args.max_time = args.max_time if args.max_time is not None else (10.0 if quick else 90.0)
    args.eval_tokens = args.eval_tokens if args.eval_tokens is not None else (1024 if quick else 8192)
    args.tokenizer = args.tokenizer or str(Path(args.shared_data) / "tokenizers" / "bert-base-uncased")
    args.batch_size = args.batch_size or 4
    args.seq_len = args.seq_len or (64 if quick else preset_training(args.preset).get("sequence_length", 128))
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from s3cmn.evaluation.perplexity import prepare_text

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    meta = run_meta(args.threads, args.quick, argv)
    out = Path(args.out)
    tokenizer, train_ids, test_text, source = load_data(args)
    blocks = train_ids[: train_ids.numel() // args.seq_len * args.seq_len].view(-1, args.seq_len)  # (N, T)
    text = prepare_text(test_text, tokenizer, max_tokens=args.eval_tokens)
    reference = S3CMNConfig.from_preset(args.preset, **{
        **parse_overrides(args.override), "vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id})

    runs = [run_one(kind, seed, args, reference, blocks, text, out) for seed in args.seeds for kind in args.models]
    close_meta(meta, start)
    result = {
        "meta": meta,
        "settings": {"data": source, "tokenizer": args.tokenizer, "vocab_size": len(tokenizer),
                     "train_tokens_available": train_ids.numel(), "max_tokens": args.max_tokens,
                     "max_time": args.max_time, "batch_size": args.batch_size, "seq_len": args.seq_len,
                     "precision": args.precision, "seeds": args.seeds, "preset": args.preset,
                     "overrides": parse_overrides(args.override), "eval_tokens_scored": text.num_tokens,
                     "eval_words": text.words, "eval_bytes": text.bytes, "eval_truncated": text.truncated},
        "descriptions": {r["model"]: r["description"] for r in runs},
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

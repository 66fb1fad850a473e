"""The learned memory reader's write stride, chosen by measurement on held-out text (issue 15, item 4).

For each stride the checkpoint scores the same held-out text with the learned reader on, starting from the
memory saved with the checkpoint (a fresh copy per stride) and writing every ``stride``-th position of each
scored forward (stride 0: read only, nothing is written while scoring). A memory-off pass of the same text
is the reference. Reports NLL/token, token perplexity, the change against memory off, scored tokens/s (the
ratio against off is measured in the same run) and the entries the memory holds at the end. The text must
be held out from training, never the test split: the stride is a fitted setting.

    python benchmarks/memory_stride.py runs/tiny10h/best --text heldout.raw --strides 0 1 4 16 64 256 \\
        --out results/memory/stride
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", type=Path, help="a model folder with a learned memory (use_memory = True)")
    p.add_argument("--text", type=Path, required=True, help="held-out text (not the test split)")
    p.add_argument("--strides", type=int, nargs="+", default=[0, 1, 4, 16, 64, 256],
                   help="0 = read only (no writes while scoring)")
    p.add_argument("--context-length", type=int, default=0, help="0 = the training sequence length")
    p.add_argument("--stride", type=int, default=0, help="scoring stride (0 = context // 2)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=0, help="score the first N tokens (0 = all)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("results/memory/stride"))
    return p.parse_args(argv)


def score(model: Any, text: Any, window: dict[str, Any], batch_size: int, memory: bool,
          write: bool) -> dict[str, float]:
    from s3cmn.evaluation.perplexity import score_stream

    start = time.perf_counter()
    result = score_stream(model, text.stream, window["context_length"], window["stride"], batch_size,
                          use_memory=memory, write_memory=write)  # fmt: skip
    seconds = time.perf_counter() - start
    nll = float(result.nll.mean())
    return {"nll": nll, "token_ppl": math.exp(nll), "tokens_per_s": result.nll.numel() / seconds,
            "seconds": seconds}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from s3cmn.evaluation.memory_state import restore_memories, snapshot_memories
    from s3cmn.evaluation.perplexity import prepare_text
    from s3cmn.evaluation.run import load_eval_tokenizer, resolve_window
    from s3cmn.modeling.loading import load_model
    from s3cmn.run_config import DataConfig, EvalConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    if any(s < 0 for s in args.strides):
        raise SystemExit("--strides: every stride must be >= 0 (0 = read only)")
    model = load_model(args.checkpoint)
    if not model.config.use_memory:
        raise SystemExit(f"{args.checkpoint} has no learned memory (use_memory = False)")
    tokenizer, _ = load_eval_tokenizer(args.checkpoint, DataConfig())
    window = resolve_window(EvalConfig(context_length=args.context_length, stride=args.stride), model.config,
                            args.checkpoint)  # fmt: skip
    text = prepare_text(args.text.read_text(encoding="utf-8"), tokenizer, args.max_tokens, None,
                        model.config.vocab_size)  # fmt: skip
    snapshot = snapshot_memories(model, "saved")
    trained_stride = {str(layer): m.settings.memory_write_stride for layer, m in snapshot.bank}
    with torch.inference_mode():
        off = score(model, text, window, args.batch_size, memory=False, write=False)
        rows = []
        for stride in args.strides:
            restore_memories(model, snapshot)
            for _, memory in model.memory_bank:
                memory.settings = dataclasses.replace(memory.settings, memory_write_stride=max(stride, 1))
            row = score(model, text, window, args.batch_size, memory=True, write=stride > 0)
            row.update(write_stride=stride, nll_change=row["nll"] - off["nll"],
                       ppl_change=row["token_ppl"] / off["token_ppl"] - 1,
                       speed_vs_off=row["tokens_per_s"] / off["tokens_per_s"],
                       entries={str(layer): m.num_entries for layer, m in model.memory_bank})  # fmt: skip
            rows.append(row)
        restore_memories(model, snapshot)
    best = min(rows, key=lambda r: r["nll"])
    return {"checkpoint": str(args.checkpoint), "text": str(args.text), "tokens": int(text.stream.numel() - 1),
            "window": window, "batch_size": args.batch_size, "trained_write_stride": trained_stride,
            "off": off, "rows": rows, "best_write_stride": best["write_stride"],
            "machine": {"cpu": platform.processor() or platform.machine(),
                        "capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
                        "load_average": os.getloadavg()}}  # fmt: skip


def markdown(result: dict[str, Any]) -> str:
    off = result["off"]
    lines = [f"# Learned reader: write stride on held-out text ({result['text']}, {result['tokens']:,} tokens)", "",
             f"Checkpoint `{result['checkpoint']}` (trained with write stride {result['trained_write_stride']}); "
             f"context {result['window']['context_length']}, stride {result['window']['stride']}, batch "
             f"{result['batch_size']}; every run starts from the saved memory. Memory off: NLL {off['nll']:.4f}, "
             f"ppl {off['token_ppl']:.1f}, {off['tokens_per_s']:,.0f} tokens/s.", "",
             "| write stride | NLL/token | token ppl | ppl vs off | tokens/s vs off | entries at the end |",
             "| ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in result["rows"]:
        label = r["write_stride"] or "0 (read only)"
        lines.append(f"| {label} | {r['nll']:.4f} | {r['token_ppl']:.1f} | {100 * r['ppl_change']:+.1f}% "
                     f"| {r['speed_vs_off']:.2f}x | {', '.join(f'{k}: {v:,}' for k, v in r['entries'].items())} |")
    m = result["machine"]
    lines += ["", f"Best: write stride {result['best_write_stride']} (chosen on this held-out text). "
              f"Machine: {m['cpu']}, {m['capability']}, {m['threads']} threads, load {m['load_average'][0]:.2f}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "stride.json").write_text(json.dumps(result, indent=2))
    (args.out / "stride.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

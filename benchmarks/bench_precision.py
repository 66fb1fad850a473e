"""Does ``s3cmn-train``'s default precision pick the fast path on this machine?

Runs the real CLI (``s3cmn-train --preset tiny``, real WikiText-2 text) for a few optimiser steps with
``--mixed-precision auto`` (the default), ``no`` and ``bf16``, one after the other in this one run, and
compares the training tokens/s each reports. The target (issue 13): auto >= 0.9x the faster of the other
two, and the log says why auto chose what it chose.

    python benchmarks/bench_precision.py --out results/precision
    python benchmarks/bench_precision.py --quick --out /tmp/precision     # CI size

On a CPU that emulates bf16 (AVX2) a bf16 step is very slow, so bf16 runs fewer steps (``--bf16-steps``);
tokens/s is a rate, so the comparison stays fair.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
SUMMARY = re.compile(r"after (\d+) steps, (\d+) tokens, (\d+) tokens/s \((\w+)\)")
REASON = re.compile(r"training precision: (.*)")


def run_one(precision: str, steps: int, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    out_dir = workdir / precision
    cmd = [sys.executable, "-m", "s3cmn.cli.train", "--preset", args.preset,
           "--train-file", str(args.train_file), "--validation-file", str(args.validation_file),
           "--tokenizer", str(args.tokenizer), "--max-steps", str(steps), "--eval-interval", "1000000",
           "--num-samples", "0", "--mixed-precision", precision, "--output-dir", str(out_dir),
           "--log-interval", "1000000", "--save-interval", "1000000"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"s3cmn-train --mixed-precision {precision} failed:\n{proc.stderr[-2000:]}")
    summary = SUMMARY.search(proc.stdout)
    reason = REASON.search(proc.stderr)
    if summary is None:
        raise RuntimeError(f"no summary line in the output of --mixed-precision {precision}:\n{proc.stdout[-1000:]}")
    return {"requested": precision, "steps": int(summary[1]), "tokens": int(summary[2]),
            "tokens_per_s": float(summary[3]), "used": summary[4], "reason": reason[1] if reason else None,
            "wall_s": wall}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--steps", type=int, default=30, help="optimiser steps for auto and no")
    p.add_argument("--bf16-steps", type=int, default=None, help="steps for bf16 (default: 30, or 3 if emulated)")
    p.add_argument("--train-file", type=Path, default=DATA / "wikitext-2-raw" / "wiki.valid.raw")
    p.add_argument("--validation-file", type=Path, default=None, help="(default: the automatic held-out slice)")
    p.add_argument("--tokenizer", type=Path, default=DATA / "tokenizers" / "bert-base-uncased")
    p.add_argument("--quick", action="store_true", help="3 steps each (1 in bf16): a smoke run")
    p.add_argument("--out", type=Path, default=None, help="folder for precision.json and precision.md")
    args = p.parse_args(argv)
    from s3cmn.utils.precision import cpu_bf16_support, machine_record, resolve_precision

    if args.quick:
        args.steps, args.bf16_steps = 3, 1
    support = cpu_bf16_support()
    bf16_steps = args.bf16_steps or (args.steps if support.native else 3)
    if args.validation_file is None:
        args.validation_file = args.train_file  # validation is never run here (eval-interval 10^6)
    with tempfile.TemporaryDirectory() as tmp:
        runs = [run_one(prec, bf16_steps if prec == "bf16" else args.steps, args, Path(tmp))
                for prec in ("auto", "no", "bf16")]
    by = {r["requested"]: r for r in runs}
    best_other = max(by["no"]["tokens_per_s"], by["bf16"]["tokens_per_s"])
    ratio = by["auto"]["tokens_per_s"] / best_other
    result = {"meta": {"command": " ".join(["python", "benchmarks/bench_precision.py", *(argv or sys.argv[1:])]),
                       "machine": machine_record(resolve_precision("auto", "cpu").name),
                       "loadavg": list(os.getloadavg()), "date": time.strftime("%Y-%m-%d %H:%M:%S")},
              "runs": runs, "auto_over_best": ratio, "met": ratio >= 0.9}
    lines = ["| --mixed-precision | used | steps | tokens/s |", "|---|---|---:|---:|"]
    lines += [f"| {r['requested']} | {r['used']} | {r['steps']} | {r['tokens_per_s']:,.0f} |" for r in runs]
    lines += ["", f"auto / faster of (no, bf16) = {ratio:.2f} (target >= 0.9: {'met' if result['met'] else 'MISSED'})",
              f"auto's reason: {by['auto']['reason']}", f"machine: {result['meta']['machine']}"]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "precision.json").write_text(json.dumps(result, indent=1))
        (args.out / "precision.md").write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()

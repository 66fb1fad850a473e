"""Cost against sequence length on the CPU: s3cmn vs the matched GPT-2 (``s3cmn/evaluation/baselines.py``).

- **training**: forward + backward of the LM loss on one sequence of T tokens (batch 1, fp32, dropout on, as in
  training; no optimizer step), T = 256 ... 8192: ms per token (median over the timed repeats, after a warm-up
  call) and the peak extra resident memory;
- **generation**: prefill a context of C = T tokens (random ids; timed after one warm-up prefill), then greedy
  one-token steps with the cache (s3cmn: recurrent states, filter history bounded by ``hyena_filter_length``;
  GPT-2: the KV cache, which grows with C): median ms per new token after 2 warm-up steps.

Generation is measured first, then training, each phase with its own peak.

Peak memory: every (model, T) runs in a fresh interpreter (``--isolation subprocess``), so an earlier, larger
allocation cannot hide a later one in the allocator's cache. In it, after the model is built and ``gc`` run,
the resident set (VmRSS) is read, the kernel's peak counter is reset (``/proc/self/clear_refs`` = 5, checked to
have taken: ``s3cmn.evaluation.speed.reset_peak_rss``) and, after the phase, ``VmHWM - VmRSS(before)`` is the
phase's peak extra memory: activations, gradients, logits, caches. The model's weights are in the baseline, not in it.

GPT-2 is the compare.py GPT-2 (n_inner matched at the training length's 128 positions) with its learned
position table extended to the longest T (+ the generated tokens); its attention is ``sdpa``. A length stops
being measured for a model when the previous one predicts more than ``--max-step-s`` seconds per call or
more than half the available memory (recorded as ``skipped``).

    python benchmarks/scaling.py --quick --out results/scaling-quick     # T = 256, 512
    python benchmarks/scaling.py --out results/scaling                   # T = 256 ... 8192

Writes ``scaling.json``, ``scaling.md`` and ``scaling.png`` (log-log; when matplotlib is installed).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import logging
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# Before torch loads OpenMP: idle threads sleep instead of spinning (see compare.py); the workers inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from s3cmn.evaluation.baselines import build_model, count_params  # noqa: E402
from s3cmn.evaluation.benchmarking import close_meta, fmt_load, parse_overrides, run_meta, write_results  # noqa: E402
from s3cmn.evaluation.speed import reset_peak_rss, status_kib  # noqa: E402
from s3cmn.model_config import S3CMNConfig  # noqa: E402

logger = logging.getLogger("scaling")
MiB = 2**20
MODELS = ("s3cmn", "gpt2")
SIZING_POSITIONS = 128  # compare.py's training length: GPT-2's n_inner is matched with this position table


class PhasePeak:
    """Peak resident memory of a phase above the resident memory at its start (module docstring), in MiB."""

    def __enter__(self) -> PhasePeak:
        gc.collect()
        try:  # hand freed heap back to the OS, so the baseline holds no reusable memory of an earlier phase
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except OSError:
            logger.warning("malloc_trim unavailable: freed heap of an earlier phase may hide part of the peak")
        self.base_kib = status_kib("VmRSS") or 0
        if reset_peak_rss():
            self.method = "VmHWM - VmRSS at the start (clear_refs)"
        else:
            self.method = "VmHWM over the process lifetime - VmRSS at the start (upper bound)"
        return self

    def __exit__(self, *exc: Any) -> None:
        self.peak_kib = status_kib("VmHWM") or 0

    @property
    def extra_mib(self) -> float:
        return (self.peak_kib - self.base_kib) / 1024


def median_times(fn: Any, warmup: int, repeats: int) -> dict[str, float]:
    """Median wall and process-CPU seconds of ``fn()`` over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return {"wall_s": statistics.median(wall), "cpu_s": statistics.median(cpu), "repeats": repeats}


# ------------------------------------------------------------------------------------------------------
# one (model, T) measurement: runs in the worker process


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Training fwd+bwd and cached generation of ``spec["model"]`` at length ``spec["T"]``."""
    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    reference = S3CMNConfig.from_preset(spec["preset"], **spec["overrides"])
    model = build_model(spec["model"], reference, positions=spec["positions"], sizing_positions=SIZING_POSITIONS)
    T = spec["T"]
    ids = torch.randint(0, reference.vocab_size, (1, T), generator=torch.Generator().manual_seed(1))  # (1, T)
    out: dict[str, Any] = {"model": spec["model"], "T": T, "params": count_params(model)}
    if spec["model"] == "gpt2":
        out["attn_implementation"] = model.gpt2.config._attn_implementation

    model.eval()
    lm = model.gpt2 if spec["model"] == "gpt2" else model

    def run(inp: torch.Tensor, cache: Any) -> tuple[torch.Tensor, Any]:
        if spec["model"] == "gpt2":
            o = lm(inp, cache=cache, use_cache=True, logits_to_keep=1)
            return o.logits, o.cache
        o = lm(inp, cache=cache, use_cache=True, use_memory=False, logits_to_keep=1)
        return o.logits, o.cache

    with torch.no_grad(), PhasePeak() as peak:
        run(ids, None)  # warm-up
        start = time.perf_counter()
        logits, cache = run(ids, None)
        prefill_s = time.perf_counter() - start
        steps = []
        for _ in range(2 + spec["new_tokens"]):  # 2 warm-up steps
            nxt = logits[:, -1:].argmax(-1)  # (1, 1)
            start = time.perf_counter()
            logits, cache = run(nxt, cache)
            steps.append(time.perf_counter() - start)
    out["generation"] = {"context": T, "prefill_s": prefill_s, "new_tokens": spec["new_tokens"],
                         "ms_per_token": statistics.median(steps[2:]) * 1e3, "peak_extra_mib": peak.extra_mib}

    model.train()

    def train_step() -> None:
        for p in model.parameters():
            p.grad = None
        model(ids, labels=ids, use_cache=False).loss.backward()

    with PhasePeak() as peak:
        timing = median_times(train_step, spec["warmup"], spec["repeats"])
    out["train"] = {**timing, "ms_per_token": timing["wall_s"] * 1e3 / T,
                    "cpu_ms_per_token": timing["cpu_s"] * 1e3 / T, "peak_extra_mib": peak.extra_mib,
                    "memory_method": peak.method}
    return out


def run_worker(spec: dict[str, Any], isolation: str, timeout: float) -> dict[str, Any]:
    """``measure(spec)`` in a fresh interpreter (or inline); a failure is recorded, not raised."""
    if isolation == "inline":
        return measure(spec)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"model": spec["model"], "T": spec["T"], "error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
        return {"model": spec["model"], "T": spec["T"], "error": f"worker failed: {tail[0]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def skip_reason(points: list[dict[str, Any]], T_next: int, max_step_s: float) -> str | None:
    """Why the next length should be skipped (None: measure it): the last point's time and memory, extrapolated
    with the growth measured between the last two points (at least linear in T)."""
    last = points[-1]
    if "error" in last:
        return f"the previous length failed ({last['error']})"
    prev = points[-2] if len(points) > 1 and "error" not in points[-2] else None

    def predict(key: str) -> float:
        value = max(last["train"][key], 1e-9)
        exponent = 1.0  # cost ~ T^exponent, from the last two points
        if prev is not None:
            exponent = max(1.0, math.log(value / max(prev["train"][key], 1e-9)) / math.log(last["T"] / prev["T"]))
        return value * (T_next / last["T"]) ** exponent

    if (seconds := predict("wall_s")) > max_step_s:
        return f"predicted {seconds:.0f} s per fwd+bwd > --max-step-s {max_step_s:.0f}"
    available_mib = status_kib_meminfo("MemAvailable") / 1024
    if (mib := predict("peak_extra_mib")) > available_mib / 2:
        return f"predicted {mib:,.0f} MiB > half the available {available_mib:,.0f} MiB"
    return None


def status_kib_meminfo(field: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


# ------------------------------------------------------------------------------------------------------
# report


def markdown(result: dict[str, Any]) -> str:
    s = result["settings"]
    lines = [f"Batch 1, fp32, {result['meta']['threads']} threads; training = forward + backward of the LM loss "
             f"(median of {s['repeats']} after {s['warmup']} warm-up; of 2 at T >= {s['heavy_T']}); generation = "
             f"median of {s['new_tokens']} cached greedy steps after a prefill of T tokens; peak = extra resident "
             f"memory of the phase ({s['isolation']}).", "",
             "| model | T | train ms/token | train CPU ms/token | train peak +MiB | prefill s | "
             "generation ms/token | generation peak +MiB |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for p in result["points"]:
        if "error" in p or "skipped" in p:
            lines.append(f"| {p['model']} | {p['T']} | {p.get('error') or 'skipped: ' + p['skipped']} ||||||")
            continue
        t, g = p["train"], p["generation"]
        lines.append(f"| {p['model']} | {p['T']} | {t['ms_per_token']:.2f} | {t['cpu_ms_per_token']:.2f} | "
                     f"{t['peak_extra_mib']:,.0f} | {g['prefill_s']:.2f} | {g['ms_per_token']:.2f} | "
                     f"{g['peak_extra_mib']:,.0f} |")
    lines += ["", "Parameters: " + ", ".join(f"{k} {v / 1e6:.2f}M" for k, v in result["params"].items()) + ".",
              "", fmt_load(result["meta"]) + f"; wall time {result['meta']['wall_s']:.0f} s.", ""]
    return "\n".join(lines)


def plot(points: list[dict[str, Any]], path: Path) -> str | None:
    try:
        import matplotlib
    except ImportError:
        logger.warning("matplotlib is not installed: no scaling PNG (pip install 's3cmn[eval]')")
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    panels = [("train", "ms_per_token", "training fwd+bwd ms / token"),
              ("train", "peak_extra_mib", "training peak extra MiB"),
              ("generation", "ms_per_token", "generation ms / new token")]
    for ax, (phase, key, title) in zip(axes, panels, strict=True):
        for model in MODELS:
            ok = [p for p in points if p["model"] == model and phase in p]
            if ok:
                ax.plot([p["T"] for p in ok], [max(p[phase][key], 1e-3) for p in ok], marker="o", label=model)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length T" if phase == "train" else "context length")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


# ------------------------------------------------------------------------------------------------------
# command line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="T = 256, 512; 1 warm-up + 1 repeat; 4 new tokens")
    p.add_argument("--out", default="results/scaling", help="output folder")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    p.add_argument("--lengths", type=int, nargs="+", default=None, help="default 256 ... 8192 (quick: 256 512)")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--override", nargs="*", default=[], metavar="FIELD=VALUE", help="s3cmn config overrides (JSON)")
    p.add_argument("--new-tokens", type=int, default=None, help="timed generation steps (default 16; quick 4)")
    p.add_argument("--max-step-s", type=float, default=30.0, help="skip a length predicted to take longer per call")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per worker")
    p.add_argument("--isolation", choices=("subprocess", "inline"), default="subprocess",
                   help="a fresh interpreter per (model, T) for clean peak memory, or all in this process")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.lengths = args.lengths or ([256, 512] if args.quick else [256, 512, 1024, 2048, 4096, 8192])
    args.new_tokens = args.new_tokens or (4 if args.quick else 16)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    args = parse_args(argv)
    if args.worker is not None:
        print(json.dumps(measure(json.loads(args.worker))))
        return None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    meta = run_meta(args.threads, args.quick, argv)
    heavy_T = 4096
    settings = {"lengths": args.lengths, "preset": args.preset, "overrides": parse_overrides(args.override),
                "warmup": 1, "repeats": 1 if args.quick else 3, "heavy_T": heavy_T, "new_tokens": args.new_tokens,
                "isolation": args.isolation, "max_step_s": args.max_step_s}
    points: list[dict[str, Any]] = []
    for model in args.models:
        mine: list[dict[str, Any]] = []
        for T in args.lengths:
            why = skip_reason(mine, T, args.max_step_s) if mine else None
            if why is not None:
                logger.info("%s T=%d skipped: %s", model, T, why)
                points.append({"model": model, "T": T, "skipped": why})
                continue
            spec = {"model": model, "T": T, "preset": args.preset, "overrides": settings["overrides"],
                    "positions": max(args.lengths) + args.new_tokens + 2, "threads": args.threads,
                    "warmup": 1, "repeats": 1 if args.quick else (2 if T >= heavy_T else 3),
                    "new_tokens": args.new_tokens}
            logger.info("%s T=%d", model, T)
            point = run_worker(spec, args.isolation, args.timeout)
            mine.append(point)
            points.append(point)
    close_meta(meta, start)
    params = {p["model"]: p["params"] for p in points if "params" in p}
    result = {"meta": meta, "settings": settings, "params": params, "points": points}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result["plot_png"] = plot(points, out / "scaling.png")
    md = markdown(result)
    path = write_results(out, "scaling", result, md)
    print(md)
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()

"""S3CMN vs a matched GPT-2 on this CPU: training and inference speed, peak memory, scan cost, MFU.

    python benchmarks/bench_core.py --out results.json          # full run (~10 min)
    python benchmarks/bench_core.py --quick --out quick.json    # CI size (< 1 min)

Rows (for each preset): ``s3cmn-<preset>`` (``use_memory=False``: the network alone), ``gpt2-<preset>``
(``GPT2LMHeadModel`` with n_embd = hidden_dim, n_layer = num_layers, n_head = num_attention_heads, the same
vocabulary, MLP width and residual / embedding dropout, no attention dropout (so sdpa keeps its flash kernel),
tied embeddings, n_positions >= the longest sequence), and one
``s3cmn-<preset>+mem`` row with the FAISS memory on (filled before timing; training writes every step).

Measurements, each the median of several timed iterations (``time.perf_counter``) after warm-up:

- training tokens/s: forward + backward + AdamW step in the precision s3cmn's policy picks on this CPU
  (``--precisions auto``: bf16 autocast only where the CPU runs bf16 natively, else fp32; ``no`` / ``bf16``
  force one), at (the preset's batch, ``--short-T`` = 512) and at (1, ``--long-T`` = 4096);
- prefill tokens/s (``use_cache=True``, ``logits_to_keep=1`` as ``generate`` does) and per-token generation
  latency (greedy, one token at a time through the recurrent cache / GPT-2's KV cache) at each context;
- peak memory: each model row runs in a fresh subprocess (``--isolation subprocess``); before each
  measurement the script collects garbage, returns freed heap to the OS (``malloc_trim``), resets the kernel's
  peak-RSS counter (``echo 5 > /proc/self/clear_refs``, checked to have taken:
  ``s3cmn.evaluation.speed.reset_peak_rss``) and reads VmRSS; after it, VmHWM − that baseline is
  the measurement's peak extra resident memory (activations, gradients, AdamW state, caches). This sees every
  allocator (torch, FAISS, numpy), unlike tracemalloc or torch's profiler, and needs no sampling thread.
- kernels: a 2048³ matmul rate in each precision trained in, the CPU's practical peak (a precision not
  trained in, e.g. emulated bf16, is timed at 256³ only); ``MambaMixer`` vs ``S4DMixer``
  forward + backward at T = 2048 (plus the bare ``selective_scan`` with ``bench_scan.scan_inputs``).
- the machine: CPU model, capability (AVX2 / AVX512 / ...), native-bf16 flags (AVX512-BF16, AMX), the
  policy's bf16 probe, threads, and the precision actually used with the policy's reason;
- MFU: analytic training FLOPs per token (``flops.py``) × tokens/s / the measured matmul rate of the precision
  the measurement ran in (and / the nominal
  ``--nominal-peak-tflops``, which does not move when other jobs load the machine).

The JSON (``--out``) holds every number, the FLOP breakdown per component and the machine's load average.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from s3cmn.evaluation import flops
from s3cmn.evaluation.speed import reset_peak_rss, status_kib

logger = logging.getLogger("bench_core")
MiB = 1024.0


# --- measurement helpers --------------------------------------------------------------------------------
def timed(fn: Callable[[], Any], warmup: int, min_iters: int, max_iters: int, budget_s: float) -> list[float]:
    """Wall times (s) of fn() after ``warmup`` calls: at least ``min_iters``, more up to ``max_iters`` while
    the total stays under ``budget_s``."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    while len(times) < min_iters or (len(times) < max_iters and sum(times) < budget_s):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


class PeakRSS:
    """Peak resident memory (MiB) above the baseline at entry, from /proc/self/status (see module docstring)."""

    def __enter__(self) -> PeakRSS:
        gc.collect()
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except OSError:
            logger.warning("malloc_trim unavailable: freed heap may hide part of the peak")
        self.reset = reset_peak_rss()  # False: VmHWM then covers the whole process, an upper bound
        self.base_kb = status_kib("VmRSS") or 0
        return self

    def __exit__(self, *exc: Any) -> None:
        self.peak_kb = status_kib("VmHWM") or 0

    @property
    def delta_mib(self) -> float:
        return (self.peak_kb - self.base_kb) / MiB


def _timing(quick: bool, heavy: bool = False) -> dict[str, Any]:
    if quick:
        return dict(warmup=1, min_iters=2, max_iters=2, budget_s=0.0)
    return dict(warmup=1, min_iters=3, max_iters=3 if heavy else 10, budget_s=4.0)


# --- models ---------------------------------------------------------------------------------------------
def build_model(spec: dict[str, Any]) -> tuple[torch.nn.Module, Any]:
    """The model of a row: (model, its config)."""
    from s3cmn.config import S3CMNConfig

    s3 = S3CMNConfig.from_preset(spec["preset"], **{**spec["overrides"], "use_memory": spec["use_memory"]})
    if spec["kind"] == "s3cmn":
        from s3cmn.modeling.lm import S3CMNForCausalLM

        return S3CMNForCausalLM(s3), s3
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(
        vocab_size=s3.vocab_size, n_embd=s3.hidden_dim, n_layer=s3.num_layers, n_head=s3.num_attention_heads,
        n_inner=int(s3.mlp_ratio * s3.hidden_dim), n_positions=spec["max_positions"],
        # attn_pdrop 0: S3CMN has no attention to drop, and torch's CPU flash kernel (sdpa) takes no dropout; with
        # 0.1 sdpa falls back to the math path, materialises the (T, T) scores and is ~5x slower at T = 4096.
        resid_pdrop=s3.dropout, embd_pdrop=s3.embedding_dropout, attn_pdrop=0.0, tie_word_embeddings=True,
        bos_token_id=s3.bos_token_id, eos_token_id=s3.eos_token_id,
    )
    return GPT2LMHeadModel(cfg), cfg


def fill_memory(model: torch.nn.Module, config: Any, quick: bool) -> dict[str, Any]:
    """Write random segments into every memory until it is searchable (quick) or full; returns its state."""
    model.eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _ in range(64):
            mems = [m for _, m in model.memory_bank]
            if all(m.searchable for m in mems) and (quick or all(m.num_entries >= m.capacity for m in mems)):
                break
            model(torch.randint(0, config.vocab_size, (4, 256), generator=g), write_memory=True)
    mem = model.memory_bank.items()[0][1]
    return {"entries": mem.num_entries, "capacity": mem.capacity, "ivf": bool(mem.is_ivf)}


def forward_loss(model: torch.nn.Module, spec: dict[str, Any], ids: torch.Tensor) -> torch.Tensor:
    if spec["kind"] == "s3cmn":
        mem = spec["use_memory"]
        return model(ids, labels=ids, use_memory=mem, write_memory=mem).loss
    return model(ids, labels=ids).loss


def measure_train(model: torch.nn.Module, config: Any, spec: dict[str, Any], batch: int, T: int, dtype: str,
                  quick: bool) -> dict[str, Any]:
    """Training tokens/s (forward + backward + AdamW step) at (batch, T) in fp32 or bf16 autocast."""
    model.train()
    ids = torch.randint(0, config.vocab_size, (batch, T), generator=torch.Generator().manual_seed(0))
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bf16" else nullcontext()  # fp32: none
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)  # its state is allocated at the first step, inside

    def step() -> None:
        with autocast:
            loss = forward_loss(model, spec, ids)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    with PeakRSS() as mem:
        times = timed(step, **_timing(quick, heavy=batch * T >= 4096))
    med = statistics.median(times)
    fl = flops.s3cmn_flops(config, T, batch) if spec["kind"] == "s3cmn" else flops.gpt2_flops(config, T, batch)
    # best-of next to the median: on a shared machine the slow tail is other jobs (OpenMP threads spin-waiting)
    return {"dtype": dtype, "batch": batch, "seq_len": T, "tokens_per_s": batch * T / med, "step_ms": med * 1e3,
            "tokens_per_s_best": batch * T / min(times),
            "iters": len(times), "peak_rss_mib": mem.delta_mib, "rss_reset": mem.reset,
            "fwd_flops_per_token": flops.total(fl), "train_flops_per_token": flops.train_flops_per_token(fl),
            "fwd_flops_breakdown": fl}


def measure_infer(model: torch.nn.Module, config: Any, spec: dict[str, Any], context: int, new_tokens: int,
                  quick: bool) -> dict[str, Any]:
    """Prefill tokens/s at ``context`` and the median per-token latency of ``new_tokens`` greedy steps."""
    model.eval()
    s3 = spec["kind"] == "s3cmn"
    ids = torch.randint(0, config.vocab_size, (1, context), generator=torch.Generator().manual_seed(0))

    def run(inp: torch.Tensor, cache: Any = None) -> Any:
        memory = {"use_memory": spec["use_memory"]} if s3 else {}
        return model(inp, cache=cache, use_cache=True, logits_to_keep=1, **memory)

    with torch.no_grad(), PeakRSS() as mem:
        times = timed(lambda: run(ids), **_timing(quick, heavy=context >= 4096))
        out = run(ids)
        warm = 2
        steps = []
        for _ in range(warm + new_tokens):
            nxt = out.logits[:, -1:].argmax(-1)  # (1, 1)
            cache = out.cache  # S3CMNCache (recurrent states) or GPT-2's DynamicCache (keys and values)
            start = time.perf_counter()
            out = run(nxt, cache)
            steps.append(time.perf_counter() - start)
    med = statistics.median(times)
    return {"context": context, "prefill_tokens_per_s": context / med, "prefill_ms": med * 1e3,
            "ms_per_token": statistics.median(steps[warm:]) * 1e3, "ms_per_token_best": min(steps[warm:]) * 1e3,
            "new_tokens": new_tokens,
            "peak_rss_mib": mem.delta_mib, "rss_reset": mem.reset}


def run_model(spec: dict[str, Any]) -> dict[str, Any]:
    """Every measurement of one row (model) of the plan."""
    torch.manual_seed(0)
    model, config = build_model(spec)
    row: dict[str, Any] = {"name": spec["name"], "kind": spec["kind"], "preset": spec["preset"],
                           "use_memory": spec["use_memory"], "long_T": spec["long_T"],
                           "params": sum(p.numel() for p in model.parameters())}
    if spec["kind"] == "gpt2":
        row["attn_implementation"] = model.config._attn_implementation
    if spec["use_memory"]:
        row["memory"] = fill_memory(model, config, spec["quick"])
    row["train"] = []
    for batch, T, dtype in spec["train"]:
        logger.info("%s: train %s B=%d T=%d", spec["name"], dtype, batch, T)
        key = {"dtype": dtype, "batch": batch, "seq_len": T}
        row["train"].append(_guarded(key, measure_train, model, config, spec, batch, T, dtype, spec["quick"]))
    row["inference"] = []
    for context in spec["contexts"]:
        logger.info("%s: inference at context %d", spec["name"], context)
        row["inference"].append(_guarded({"context": context}, measure_infer, model, config, spec, context,
                                         spec["new_tokens"], spec["quick"]))
    return row


def _guarded(key: dict[str, Any], measure: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """A measurement, or ``{**key, "error": message}`` when the model fails: a failing configuration is a
    finding to report, not a reason to lose the rest of the run."""
    try:
        return measure(*args)
    except (RuntimeError, TypeError, ValueError) as err:
        logger.error("measurement %s failed: %s: %s", key, type(err).__name__, err)
        return {**key, "error": f"{type(err).__name__}: {err}"}


def run_kernels(spec: dict[str, Any]) -> dict[str, Any]:
    """Matmul rates (the CPU's practical peak) and the Mamba-vs-S4D mixer cost at one length."""
    from s3cmn.config import S3CMNConfig
    from s3cmn.modeling.mamba import MambaMixer
    from s3cmn.modeling.s4d import S4DMixer

    quick = spec["quick"]
    out: dict[str, Any] = {"matmul_n": {}}
    for dtype in ("bf16", "fp32"):
        # The peak of a precision the run trains in is measured at full size; an emulated bf16 (AVX2: ~0.3
        # GFLOP/s, a minute per 2048^3 matmul) only at 256^3, enough for its rate.
        n = spec["matmul_n"] if dtype in spec["dtypes"] else 256
        out["matmul_n"][dtype] = n
        a = torch.randn(n, n, dtype=getattr(torch, {"bf16": "bfloat16", "fp32": "float32"}[dtype]))
        b = torch.randn_like(a)
        few = quick or dtype not in spec["dtypes"]
        t = statistics.median(timed(lambda a=a, b=b: a @ b, warmup=1 if few else 2, min_iters=1 if few else 7,
                                    max_iters=1 if few else 10, budget_s=2.0))
        out[f"matmul_{dtype}_tflops"] = 2 * n**3 / t / 1e12

    T, B = spec["scan_T"], spec["scan_batch"]
    config = S3CMNConfig.from_preset(spec["scan_preset"], **{**spec["overrides"], "use_memory": False, "dropout": 0.0})
    torch.manual_seed(0)
    x = torch.randn(B, T, config.hidden_dim, requires_grad=True)
    scan: dict[str, Any] = {"T": T, "batch": B, "preset": spec["scan_preset"], "hidden_dim": config.hidden_dim}
    for name, mixer in (("mamba", MambaMixer(config, 0)), ("s4d", S4DMixer(config, 0))):

        def fwd_bwd(mixer: torch.nn.Module = mixer) -> None:
            mixer.zero_grad(set_to_none=True)
            x.grad = None
            mixer(x).y.sum().backward()

        scan[f"{name}_fwd_bwd_ms"] = statistics.median(timed(fwd_bwd, **_timing(quick))) * 1e3
    scan["mamba_over_s4d"] = scan["mamba_fwd_bwd_ms"] / scan["s4d_fwd_bwd_ms"]
    try:
        from s3cmn.evaluation.benchmarking import scan_inputs  # the other scan benchmark's inputs
        from s3cmn.ops.selective_scan import selective_scan

        E = config.mamba_expand * config.hidden_dim
        inp = scan_inputs(B, E, config.mamba_d_state, T)

        def bare() -> None:
            for v in inp.values():
                v.grad = None
            selective_scan(**inp, delta_softplus=True).sum().backward()

        scan["selective_scan_fwd_bwd_ms"] = statistics.median(timed(bare, **_timing(quick))) * 1e3
    except ImportError:
        logger.info("benchmarks/bench_scan.py not found: no bare selective_scan row")
    out["scan"] = scan
    return out


# --- orchestration --------------------------------------------------------------------------------------
def plan(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The row specs and the kernel spec of this run."""
    from s3cmn.config import preset_training

    rows = []
    presets = [(p, False) for p in args.presets] + ([(args.memory_preset, True)] if args.memory_preset else [])
    for preset, memory in presets:
        tr = preset_training(preset)
        short = (2 if args.quick else tr["batch_size"], args.short_T)
        train = [(b, t, d) for b, t in (short, (1, args.long_T)) for d in args.dtypes]
        max_positions = max(short[1], args.long_T, max(args.contexts) + args.new_tokens + 2)  # GPT-2's table
        kinds = ["s3cmn"] if memory else ["s3cmn", "gpt2"]
        for kind in kinds:
            name = f"{kind}-{preset}" + ("+mem" if memory else "")
            rows.append(dict(job="model", name=name, kind=kind, preset=preset, use_memory=memory, train=train,
                             contexts=args.contexts, new_tokens=args.new_tokens, max_positions=max_positions,
                             long_T=args.long_T, quick=args.quick, overrides=args.overrides))
    kernels = dict(job="kernels", quick=args.quick, matmul_n=512 if args.quick else 2048, overrides=args.overrides,
                   scan_T=256 if args.quick else 2048, scan_batch=1 if args.quick else 2,
                   scan_preset=args.presets[-1], dtypes=args.dtypes)
    return rows, kernels


def run_job(spec: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Run a spec inline or in a fresh interpreter (``--worker``) that writes its result to a JSON file."""
    if args.isolation == "inline":
        return run_worker(spec, args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec),
               "--worker-out", str(result), "--threads", str(args.threads)]
        subprocess.run(cmd, check=True)
        return json.loads(result.read_text())


def run_worker(spec: dict[str, Any], threads: int) -> dict[str, Any]:
    torch.set_num_threads(threads)
    start = time.perf_counter()
    out = run_model(spec) if spec["job"] == "model" else run_kernels(spec)
    out["wall_s"] = time.perf_counter() - start
    return out


def _ok(measurements: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in measurements if "error" not in m]


def _target(value: float | None, met: bool) -> dict[str, Any]:
    return {"value": value, "met": value is not None and met}


def summarise(rows: list[dict[str, Any]], kernels: dict[str, Any], nominal_tflops: float,
              short_T: int) -> dict[str, Any]:
    """MFU of every training measurement (against the measured matmul rate *of the precision it ran in*, and
    against the nominal peak, which a loaded machine does not drag down) and the targets (None: not measured)."""
    for row in rows:
        for m in _ok(row["train"]):
            m["achieved_tflops"] = m["train_flops_per_token"] * m["tokens_per_s"] / 1e12
            m["mfu"] = m["achieved_tflops"] / kernels[f"matmul_{m['dtype']}_tflops"]
            m["mfu_nominal"] = m["achieved_tflops"] / nominal_tflops
    by_name = {r["name"]: r for r in rows}
    targets: dict[str, Any] = {}
    for row in (r for r in rows if r["kind"] == "s3cmn"):
        lat = {m["context"]: m.get("ms_per_token") for m in row["inference"]}
        lo, hi = min(lat), max(lat)
        ratio = lat[hi] / lat[lo] if lat[hi] and lat[lo] else None
        targets[f"{row['name']}: ms/token at {hi} / at {lo} <= 1.3"] = _target(ratio, (ratio or 2) <= 1.3)
        gpt = by_name.get(f"gpt2-{row['preset']}")
        if gpt is None or row["use_memory"]:
            continue
        for m in row["train"]:
            shape = (m["batch"], m["seq_len"], m["dtype"])
            goal = 1.5 if m["seq_len"] == row["long_T"] else 1.0 if m["seq_len"] == short_T else None
            if goal is None:
                continue
            ours = m.get("tokens_per_s")
            same = [g for g in gpt["train"] if (g["batch"], g["seq_len"], g["dtype"]) == shape]
            theirs = same[0].get("tokens_per_s") if same else None
            r = ours / theirs if ours and theirs else None
            targets[f"{row['name']}: train tok/s B={shape[0]} T={shape[1]} {shape[2]} / GPT-2 >= {goal}"] = _target(
                r, bool(r and r >= goal))
    scan = kernels["scan"]
    targets[f"MambaMixer / S4DMixer fwd+bwd at T={scan['T']} <= 3"] = _target(
        scan["mamba_over_s4d"], scan["mamba_over_s4d"] <= 3)
    best = max(((m["mfu"], r["name"], m["dtype"], m["seq_len"]) for r in rows if r["kind"] == "s3cmn"
                for m in _ok(r["train"])), default=(None, "-", "-", "-"))
    targets[f"best S3CMN MFU ({best[1]} {best[2]} T={best[3]}) >= 0.40"] = _target(best[0], (best[0] or 0) >= 0.4)
    return targets


def markdown(result: dict[str, Any]) -> str:
    """The result as markdown tables."""
    nominal = result["meta"]["nominal_peak_tflops"]
    lines = ["| model | params | dtype | B x T | tokens/s | best tokens/s | step ms | peak RSS +MiB | "
             f"GFLOP/token (train) | MFU | MFU vs {nominal} TFLOP/s |", "|---|---:|---|---|" + "---:|" * 7]
    for r in result["rows"]:
        for m in r["train"]:
            head = f"| {r['name']} | {r['params'] / 1e6:.2f}M | {m['dtype']} | {m['batch']} x {m['seq_len']} | "
            lines.append(head + (f"failed: {m['error'][:80]} | | | | | | |" if "error" in m else
                                 f"{m['tokens_per_s']:,.0f} | {m['tokens_per_s_best']:,.0f} | {m['step_ms']:,.0f} | "
                                 f"{m['peak_rss_mib']:,.0f} | "
                                 f"{m['train_flops_per_token'] / 1e9:.3f} | {m['mfu']:.1%} | {m['mfu_nominal']:.1%} |"))
    lines += ["", "| model | context | prefill tokens/s | ms/token (generation) | best ms/token | peak RSS +MiB |",
              "|---|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        for m in r["inference"]:
            lines.append(f"| {r['name']} | {m['context']} | " + (f"failed: {m['error'][:80]} | | | |" if "error" in m
                         else f"{m['prefill_tokens_per_s']:,.0f} | {m['ms_per_token']:.2f} | "
                         f"{m['ms_per_token_best']:.2f} | {m['peak_rss_mib']:,.0f} |"))
    k = result["kernels"]
    s = k["scan"]
    m = result["meta"]
    bare = f", bare selective_scan {s['selective_scan_fwd_bwd_ms']:.1f} ms" if "selective_scan_fwd_bwd_ms" in s else ""
    lines += ["", f"machine: {m['cpu']}, capability {m['cpu_capability']}, {m['threads']} threads; "
              f"precision {m['precision']['used']} ({m['precision']['reason']})", "",
              f"matmul: bf16 {k['matmul_bf16_tflops']:.4f} TFLOP/s ({k['matmul_n']['bf16']}^3), "
              f"fp32 {k['matmul_fp32_tflops']:.4f} TFLOP/s ({k['matmul_n']['fp32']}^3)", "",
              f"mixers fwd+bwd at B={s['batch']}, T={s['T']}, D={s['hidden_dim']}: MambaMixer "
              f"{s['mamba_fwd_bwd_ms']:.1f} ms, S4DMixer {s['s4d_fwd_bwd_ms']:.1f} ms{bare}",
              "", "| target | value | met |", "|---|---:|---|"]
    for name, t in result["targets"].items():
        value = "not measured" if t["value"] is None else f"{t['value']:.3f}"
        lines.append(f"| {name} | {value} | {'yes' if t['met'] else 'NO'} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="CI size: tiny preset, short sequences, few iterations")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    p.add_argument("--presets", nargs="+", default=None, help="presets to compare (default: tiny small)")
    p.add_argument("--memory-preset", default=None, help="preset of the memory-on row ('' = none)")
    p.add_argument("--contexts", type=int, nargs="+", default=None, help="prefill/generation contexts")
    p.add_argument("--long-T", type=int, default=None, help="long training length (batch 1)")
    p.add_argument("--new-tokens", type=int, default=None, help="generated tokens per latency measurement")
    p.add_argument("--short-T", type=int, default=None, help="training length at the preset's batch size (512)")
    p.add_argument("--precisions", nargs="+", default=["auto"], choices=("auto", "no", "bf16"),
                   help="training precisions, resolved by s3cmn's policy (auto: what s3cmn-train picks here)")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--nominal-peak-tflops", type=float, default=0.8,
                   help="the CPU's nominal bf16 matmul rate, a second MFU denominator (issue 3: about 0.8 here)")
    p.add_argument("--override", nargs="*", default=[], metavar="FIELD=VALUE",
                   help="S3CMNConfig fields applied to every preset (and so to the matching GPT-2), e.g. for tests")
    p.add_argument("--isolation", choices=("subprocess", "inline"), default="subprocess",
                   help="one fresh interpreter per row (clean peak memory) or all in this process")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    defaults = ((["tiny"], "tiny", [32, 128], 256, 4, 64) if args.quick else (["tiny", "small"], "tiny",
                                                                              [128, 1024, 4096], 4096, 32, 512))
    for name, value in zip(("presets", "memory_preset", "contexts", "long_T", "new_tokens", "short_T"), defaults,
                           strict=True):
        if getattr(args, name) is None:
            setattr(args, name, value)
    from s3cmn.utils.precision import resolve_precision

    args.precision_choices = [resolve_precision(p, "cpu") for p in args.precisions]
    args.dtypes = list(dict.fromkeys(c.name for c in args.precision_choices))  # fp32 / bf16, deduplicated
    args.overrides = {}
    for item in args.override:
        field, sep, value = item.partition("=")
        if not sep:
            p.error(f"--override expects FIELD=VALUE, got {item!r}")
        try:
            args.overrides[field] = json.loads(value)
        except json.JSONDecodeError:
            args.overrides[field] = value  # a bare string such as ssm_type=s4d
    return args


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.worker:
        args.worker_out.write_text(json.dumps(run_worker(json.loads(args.worker), args.threads)))
        return None
    torch.set_num_threads(args.threads)
    start, load_before = time.perf_counter(), os.getloadavg()
    specs, kernel_spec = plan(args)
    kernels = run_job(kernel_spec, args)  # first: the matmul peak (MFU's denominator) before the long rows
    rows = [run_job(spec, args) for spec in specs]
    result = {
        "meta": {"command": " ".join(["python", "benchmarks/bench_core.py", *(argv if argv is not None
                                                                               else sys.argv[1:])]),
                 "quick": args.quick, "isolation": args.isolation, "threads": args.threads,
                 "torch": torch.__version__, "python": platform.python_version(), "cpu": _cpu_name(),
                 "cpu_count": os.cpu_count(), "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
                 "date": time.strftime("%Y-%m-%d %H:%M:%S"), "peak_memory": "VmHWM - VmRSS after clear_refs",
                 "nominal_peak_tflops": args.nominal_peak_tflops, **_machine(args)},
        "rows": rows,
        "kernels": kernels,
    }
    result["targets"] = summarise(rows, kernels, args.nominal_peak_tflops, args.short_T)
    result["meta"]["wall_s"] = time.perf_counter() - start
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
    print(markdown(result))
    print(f"\nwall {result['meta']['wall_s']:.0f} s; load average before {load_before[0]:.2f}, "
          f"after {result['meta']['loadavg_after'][0]:.2f} (2 cores shared: numbers are noisy)")
    return result


def _cpu_name() -> str:
    from s3cmn.utils.precision import cpu_model_name

    return cpu_model_name()


def _machine(args: argparse.Namespace) -> dict[str, Any]:
    """What the numbers depend on: capability, native-bf16 flags, the probe, the precision actually used."""
    from s3cmn.utils.precision import cpu_bf16_support

    support = cpu_bf16_support()
    first = args.precision_choices[0]
    return {"cpu_capability": support.capability, "cpu_bf16_flags": list(support.flags),
            "bf16_probe": {"fp32_gflops": support.fp32_gflops, "bf16_gflops": support.bf16_gflops,
                           "bf16_slowdown": support.slowdown, "native": support.native},
            "precision": {**first.as_dict(), "all": [c.as_dict() for c in args.precision_choices]}}


if __name__ == "__main__":
    main()

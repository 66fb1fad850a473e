"""S3CMN vs a matched GPT-2 on this CPU, interleaved in one process: generation, prefill, training, MFU, bandwidth.

    python benchmarks/bench_core.py --out results/bench_core/NAME.json     # tiny and small (~15 min)
    python benchmarks/bench_core.py --quick --out /tmp/quick.json          # CI size (< 1 min)

Both models of a preset live in this process and every measurement alternates between them round by round
(the first model of a round alternates too), so load drift hits both; each figure is the median over rounds
with its spread (min and max) beside it. The models: ``s3cmn-<preset>`` (memory off: the network alone) and
``gpt2-<preset>`` (``GPT2LMHeadModel``: n_embd = hidden_dim, n_layer = num_layers, n_head =
num_attention_heads, the same vocabulary and MLP width, tied embeddings, sdpa attention, its KV cache).

- **generation** (batch 1, greedy, fp32 weights): prefill a random prompt of each ``--contexts`` length
  (``logits_to_keep=1``, as ``generate`` does) -> prefill tokens/s; then ``--new-tokens`` cached steps -> the
  median ms/token of the round. s3cmn also runs with bf16 weights (only where the CPU has native bf16) and
  with int8 weights (``s3cmn.quantization.quantize_model``), at the
  shorter contexts, interleaved with its fp32 self (int8: ``backend="weight_only"``, int8 codes with float inputs,
  decoded through the C int8 GEMV of ``s3cmn.ops.int8_gemv``); and its compiled step with fp32, bf16, fp16 and
  int8 weight matrices (``compile_decode(weights=...)``: half or a quarter of the bytes, fp32 arithmetic, on
  any CPU).
- **training** (forward + backward + fused AdamW step, for both models) at (the preset's batch, ``--short-T``)
  and (1, ``--long-T``)
  in every *native* precision (fp32; bf16 autocast where the CPU has AVX512-BF16 / AMX), one step per model per
  round. Best precision against best precision, and the default (``auto``) against the best.
- **peak**: the best of several 2048³ GEMMs on all threads in each native precision, at the start and the
  end of the run (the best of both is the denominator). MFU = analytic training FLOPs (``s3cmn.evaluation.flops``) x
  tokens/s / peak; a figure over 100% means the peak was measured low and is refused (``mfu`` None).
- **bandwidth**: a read of a 512 MiB buffer (sum), best of several -> GB/s; the weight-read bound of
  generation is the fp32 parameter bytes / that rate (every weight is read once per token: the tied head
  reads the whole embedding).

The JSON (``--out``, with ``.md`` beside it) records the machine (CPU, capability, bf16 / VNNI / AMX flags),
threads, load before and after, commit and date.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch

from s3cmn.evaluation import flops
from s3cmn.evaluation.benchmarking import source_commit

logger = logging.getLogger("bench_core")
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


# --- measurement helpers --------------------------------------------------------------------------------
COMPILED = "s3cmn_compiled"  # the s3cmn model decoding through its compiled step (generation rows only)


def spread(values: list[float]) -> dict[str, float]:
    """Median, min and max of one measurement's rounds."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def interleave(fns: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """``rounds`` values of every fn, called alternately (the first of a round alternates between rounds)."""
    names, out = list(fns), {n: [] for n in fns}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            out[name].append(fns[name]())
    return out


def gemm_peak(dtypes: list[str], n: int, repeats: int) -> dict[str, float]:
    """The best GEMM rate (TFLOP/s) of ``repeats`` n³ matmuls per precision, on torch.get_num_threads()."""
    out = {}
    for dtype in dtypes:
        a = torch.randn(n, n, dtype={"fp32": torch.float32, "bf16": torch.bfloat16}[dtype])
        b = torch.randn_like(a)
        a @ b  # warm-up
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - start)
        out[dtype] = 2 * n**3 / best / 1e12
    return out


def read_bandwidth(mib: int, repeats: int) -> float:
    """GB/s of reading a ``mib`` MiB fp32 buffer once (a sum), the best of ``repeats``."""
    x = torch.ones(mib * 2**20 // 4)
    x.sum()
    best = min(_time(lambda: x.sum()) for _ in range(repeats))
    return x.numel() * 4 / best / 1e9


def _time(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# --- models ---------------------------------------------------------------------------------------------
def build_pair(preset: str, overrides: dict[str, Any], positions: int) -> tuple[dict[str, torch.nn.Module], Any]:
    """{"s3cmn": model, "gpt2": model} of one preset (memory off), and the s3cmn config."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from s3cmn.model_config import S3CMNConfig
    from s3cmn.modeling.lm import S3CMNForCausalLM

    s3 = S3CMNConfig.from_preset(preset, **{**overrides, "use_memory": False})
    torch.manual_seed(0)
    ours = S3CMNForCausalLM(s3)
    cfg = GPT2Config(
        vocab_size=s3.vocab_size, n_embd=s3.hidden_dim, n_layer=s3.num_layers, n_head=s3.num_attention_heads,
        n_inner=int(s3.mlp_ratio * s3.hidden_dim), n_positions=positions,
        # attn_pdrop 0: torch's CPU flash kernel (sdpa) takes no dropout; with 0.1 it falls back to the math path
        resid_pdrop=s3.dropout, embd_pdrop=s3.embedding_dropout, attn_pdrop=0.0, tie_word_embeddings=True,
        bos_token_id=s3.bos_token_id, eos_token_id=s3.eos_token_id,
    )
    torch.manual_seed(0)
    return {"s3cmn": ours, "gpt2": GPT2LMHeadModel(cfg)}, s3


def _call(model: torch.nn.Module, ids: torch.Tensor, cache: Any = None) -> Any:
    extra = {"use_memory": False} if hasattr(model, "memory_bank") else {}
    return model(ids, cache=cache, use_cache=True, logits_to_keep=1, **extra)


def generation_round(model: torch.nn.Module, prompt: torch.Tensor, new_tokens: int) -> tuple[float, float]:
    """(prefill seconds, median ms per generated token) of one greedy generation from ``prompt``."""
    with torch.no_grad():
        start = time.perf_counter()
        out = _call(model, prompt)
        prefill = time.perf_counter() - start
        steps = []
        for _ in range(new_tokens + 2):  # the first two steps warm the decode path
            nxt = out.logits[:, -1:].argmax(-1)
            start = time.perf_counter()
            out = _call(model, nxt, out.cache if hasattr(out, "cache") else out.past_key_values)
            steps.append(time.perf_counter() - start)
    return prefill, statistics.median(steps[2:]) * 1e3


def measure_generation(models: dict[str, torch.nn.Module], contexts: list[int], new_tokens: int, rounds: int,
                       vocab: int) -> list[dict[str, Any]]:
    """Per context: prefill tokens/s and ms/token of each model, interleaved."""
    out = []
    for ctx in contexts:
        prompt = torch.randint(0, vocab, (1, ctx), generator=torch.Generator().manual_seed(ctx))
        for m in models.values():
            m.eval()
            generation_round(m, prompt[:, : min(ctx, 64)], 2)  # warm-up (kernels built, caches allocated)
        rows: dict[str, dict[str, list[float]]] = {n: {"prefill": [], "ms": []} for n in models}
        logger.info("generation at context %d: %s", ctx, ", ".join(models))
        interleave({n: partial(_record, models[n], prompt, new_tokens, rows[n]) for n in models}, rounds)
        out.append({"context": ctx, "new_tokens": new_tokens, **{
            n: {"ms_per_token": spread(r["ms"]), "prefill_tokens_per_s": spread(r["prefill"])}
            for n, r in rows.items()}})
    return out


def _record(model: torch.nn.Module, prompt: torch.Tensor, new_tokens: int, into: dict[str, list[float]]) -> float:
    """One generation round, its prefill tokens/s and ms/token appended to ``into``."""
    prefill, ms = generation_round(model, prompt, new_tokens)
    into["prefill"].append(prompt.shape[1] / prefill)
    into["ms"].append(ms)
    return ms


# compile_decode(weights=..., gemv=...): "compiled fp32" through the BLAS GEMV (the default until 2026-12-07, so
# older result files mean the same), the others through the fused GEMV (the default since)
COMPILED_WEIGHTS = ("compiled fp32", "compiled fp32 fused", "compiled bf16", "compiled fp16", "compiled int8")
WEIGHT_KINDS = ("fp32", "int8", "bf16", *COMPILED_WEIGHTS)


def weight_variants(model: torch.nn.Module, bf16_native: bool, compiled: bool) -> dict[str, torch.nn.Module]:
    """The s3cmn model with fp32, int8 and (native bf16 only) bf16 weights, each a separate copy; with
    ``compiled``, also its compiled step with fp32 (through the BLAS GEMV and the fused one), bf16, fp16 and int8
    (one scale per row) weight matrices (fp32 arithmetic)."""
    import copy

    from s3cmn.quantization.backends import quantize_model

    variants = {"fp32": model}
    # weight-only int8 (the accurate backend; s3cmn-eval --quantize int8 --backend weight_only scores the same)
    variants["int8"], _ = quantize_model(copy.deepcopy(model).eval(), backend="weight_only")  # logs what it did
    if bf16_native:
        variants["bf16"] = copy.deepcopy(model).to(torch.bfloat16).eval()
    if compiled:
        for kind in COMPILED_WEIGHTS:
            weights = kind.split()[1]
            gemv = "blas" if kind == "compiled fp32" else "fused"
            variants[kind] = copy.deepcopy(model).eval().compile_decode(weights=weights, gemv=gemv)
    return variants


def train_round(model: torch.nn.Module, opt: torch.optim.Optimizer, ids: torch.Tensor, dtype: str) -> float:
    """Tokens/s of one forward + backward + AdamW step."""
    model.train()
    extra = {"use_memory": False} if hasattr(model, "memory_bank") else {}
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
        loss = model(ids, labels=ids, **extra).loss
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return ids.numel() / (time.perf_counter() - start)


def measure_training(models: dict[str, torch.nn.Module], shapes: list[tuple[int, int]], dtypes: list[str],
                     rounds: int, vocab: int) -> list[dict[str, Any]]:
    """Per shape and precision: tokens/s of each model, one step per model per round, interleaved."""
    opts = {n: torch.optim.AdamW(m.parameters(), lr=1e-4, fused=True) for n, m in models.items()}  # as s3cmn-train
    out = []
    for batch, T in shapes:
        ids = torch.randint(0, vocab, (batch, T), generator=torch.Generator().manual_seed(T))
        for dtype in dtypes:
            logger.info("training %s at %d x %d", dtype, batch, T)
            for n, m in models.items():  # warm-up: optimizer state, kernels, autocast caches
                train_round(m, opts[n], ids, dtype)
            rates = interleave({n: partial(train_round, models[n], opts[n], ids, dtype) for n in models}, rounds)
            out.append({"batch": batch, "seq_len": T, "dtype": dtype, **{n: spread(r) for n, r in rates.items()}})
    return out


# --- summary --------------------------------------------------------------------------------------------
def add_mfu(train: list[dict[str, Any]], configs: dict[str, Any], peak: dict[str, float]) -> None:
    """MFU of every training median against the same precision's peak; over 100% is refused (None)."""
    for m in train:
        for name, cfg in configs.items():
            fl = (flops.s3cmn_flops(cfg, m["seq_len"], m["batch"]) if name == "s3cmn"
                  else flops.gpt2_flops(cfg, m["seq_len"], m["batch"]))
            achieved = flops.train_flops_per_token(fl) * m[name]["median"] / 1e12
            mfu = achieved / peak[m["dtype"]]
            m[name].update(achieved_tflops=achieved, mfu=mfu if mfu <= 1.0 else None)
            if mfu > 1.0:
                m[name]["mfu_refused"] = f"{mfu:.1%} > 100%: the peak ({peak[m['dtype']]:.3f} TFLOP/s) was measured low"


def summarise(preset: str, gen: list[dict], variants: list[dict], train: list[dict], bound_ms: float,
              auto: str, long_T: int) -> dict[str, dict[str, Any]]:
    """The issue's targets for one preset: each {"value", "goal", "met"}."""
    t: dict[str, dict[str, Any]] = {}

    def target(name: str, value: float | None, goal: str, met: bool) -> None:
        t[f"{preset}: {name}"] = {"value": value, "goal": goal, "met": value is not None and met}

    for g in gen:
        for path, label in (("s3cmn", "eager step"), (COMPILED, "compiled step")):
            if path not in g:
                continue
            r = g[path]["ms_per_token"]["median"] / g["gpt2"]["ms_per_token"]["median"]
            goal = {128: 0.8, 2048: 0.5}.get(g["context"])
            if goal is not None:
                target(f"generation ({label}) ms/token / GPT-2 at context {g['context']}", r, f"<= {goal}", r <= goal)
            if g["context"] == 2048:
                b = g[path]["ms_per_token"]["median"] / bound_ms
                target(f"generation ({label}) ms/token at 2048 / weight-read bound", b, "<= 2", b <= 2)
    for v in variants:
        # narrower matrices against fp32 through the same (fused) GEMV
        for kind, base in (("int8", "fp32"), ("bf16", "fp32"), ("compiled bf16", "compiled fp32 fused"),
                           ("compiled fp16", "compiled fp32 fused"), ("compiled int8", "compiled fp32 fused")):
            if kind in v:
                s = v[base]["ms_per_token"]["median"] / v[kind]["ms_per_token"]["median"]
                target(f"{kind} weights speed-up over {base} at context {v['context']}", s, ">= 1.5", s >= 1.5)
    for shape in {(m["batch"], m["seq_len"]) for m in train}:
        rows = [m for m in train if (m["batch"], m["seq_len"]) == shape]
        best = {n: max(rows, key=lambda m, n=n: m[n]["median"]) for n in ("s3cmn", "gpt2")}
        r = best["s3cmn"]["s3cmn"]["median"] / best["gpt2"]["gpt2"]["median"]
        goal = 1.5 if shape[1] == long_T else 1.2
        target(f"training {shape[0]} x {shape[1]} best ({best['s3cmn']['dtype']}) / GPT-2 best "
               f"({best['gpt2']['dtype']})", r, f">= {goal}", r >= goal)
        default = [m for m in rows if m["dtype"] == auto]
        if default:
            d = default[0]["s3cmn"]["median"] / best["s3cmn"]["s3cmn"]["median"]
            target(f"training {shape[0]} x {shape[1]} default ({auto}) / best precision", d, ">= 0.95", d >= 0.95)
        mfus = [m[n].get("mfu") for m in rows for n in ("s3cmn", "gpt2")]
        target(f"training {shape[0]} x {shape[1]}: every MFU <= 100%", max((x or 2.0) for x in mfus), "<= 1",
               all(x is not None for x in mfus))
    return t


def markdown(result: dict[str, Any]) -> str:
    """The result as markdown: one section per preset, then the machine and the targets."""
    def ms(s: dict[str, float], digits: int = 2) -> str:
        return f"{s['median']:,.{digits}f} ({s['min']:,.{digits}f}-{s['max']:,.{digits}f})"

    lines = []
    for p in result["presets"]:
        lines += [f"## {p['preset']} (s3cmn {p['params']['s3cmn'] / 1e6:.2f}M, GPT-2 {p['params']['gpt2'] / 1e6:.2f}M "
                  "parameters)", "", "| context | s3cmn ms/token, eager | s3cmn ms/token, compiled | GPT-2 ms/token | "
                  "ratio eager | ratio compiled | s3cmn prefill tok/s | GPT-2 prefill tok/s |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for g in p["generation"]:
            gpt = g["gpt2"]["ms_per_token"]["median"]
            comp = g.get(COMPILED)
            lines.append(f"| {g['context']} | {ms(g['s3cmn']['ms_per_token'])} | "
                         f"{ms(comp['ms_per_token']) if comp else '-'} | {ms(g['gpt2']['ms_per_token'])} | "
                         f"{g['s3cmn']['ms_per_token']['median'] / gpt:.2f} | "
                         f"{comp['ms_per_token']['median'] / gpt if comp else float('nan'):.2f} | "
                         f"{ms(g['s3cmn']['prefill_tokens_per_s'], 0)} | {ms(g['gpt2']['prefill_tokens_per_s'], 0)} |")
        kinds = [k for k in WEIGHT_KINDS if p["weights"] and k in p["weights"][0]]
        lines += ["", "| context | " + " | ".join(f"s3cmn {k} weights ms/token" for k in kinds) + " |",
                  "|---:|" + "---:|" * len(kinds)]
        for v in p["weights"]:
            lines.append(f"| {v['context']} | " + " | ".join(ms(v[k]["ms_per_token"]) for k in kinds) + " |")
        lines += ["", "| B x T | precision | s3cmn tok/s | GPT-2 tok/s | ratio | s3cmn MFU | GPT-2 MFU |",
                  "|---|---|---:|---:|---:|---:|---:|"]
        for m in p["training"]:
            mfu = [f"{m[n]['mfu']:.1%}" if m[n].get("mfu") is not None else "refused" for n in ("s3cmn", "gpt2")]
            lines.append(f"| {m['batch']} x {m['seq_len']} | {m['dtype']} | {ms(m['s3cmn'], 0)} | {ms(m['gpt2'], 0)} | "
                         f"{m['s3cmn']['median'] / m['gpt2']['median']:.2f} | {mfu[0]} | {mfu[1]} |")
        lines += ["", f"weight-read bound: {p['weight_bytes'] / 1e6:.1f} MB of fp32 weights / "
                  f"{result['machine']['read_gb_s']:.1f} GB/s = {p['weight_read_bound_ms']:.2f} ms/token", ""]
    m = result["machine"]
    lines += ["## Machine", "", f"{m['cpu']}; capability {m['capability']}; flags {', '.join(m['flags']) or 'none'}; "
              f"{m['threads']} threads; load {m['loadavg_before'][0]:.2f} -> {m['loadavg_after'][0]:.2f}; "
              f"native precisions {', '.join(m['native_precisions'])}; default (auto) {m['auto_precision']}", "",
              "GEMM peak (best of start and end, TFLOP/s): " + ", ".join(
                  f"{k} {v:.3f}" for k, v in m["peak_tflops"].items()) + f"; read bandwidth {m['read_gb_s']:.1f} GB/s",
              "", "| target | value | goal | met |", "|---|---:|---|---|"]
    for name, t in result["targets"].items():
        value = "not measured" if t["value"] is None else f"{t['value']:.3f}"
        lines.append(f"| {name} | {value} | {t['goal']} | {'yes' if t['met'] else 'NO'} |")
    return "\n".join(lines)


# --- orchestration --------------------------------------------------------------------------------------
def machine(threads: int) -> dict[str, Any]:
    """What the numbers depend on: the CPU, its native-precision flags, the default precision."""
    from s3cmn.utils.precision import cpu_bf16_support, cpu_model_name, resolve_precision

    support = cpu_bf16_support()
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        cpuinfo = []
    flags = sorted({f for f in (*support.flags, *VNNI_FLAGS) if f in cpuinfo})
    native = ["fp32", "bf16"] if support.native else ["fp32"]
    return {"cpu": cpu_model_name(), "capability": support.capability, "flags": flags, "threads": threads,
            "native_precisions": native, "auto_precision": resolve_precision("auto", "cpu").name,
            "bf16_probe": {"fp32_gflops": support.fp32_gflops, "bf16_gflops": support.bf16_gflops}}


def run_preset(preset: str, args: argparse.Namespace, native: list[str], auto: str, read_gb_s: float
               ) -> dict[str, Any]:
    positions = max(max(args.contexts) + args.new_tokens + 8, args.long_T, args.short_T)
    models, config = build_pair(preset, args.overrides, positions)
    from s3cmn.presets import preset_training

    gen_models = dict(models)
    if args.compiled:
        import copy

        # the same weights, decoding through the compiled step (the compile happens in the warm-up round)
        gen_models = {"s3cmn": models["s3cmn"], COMPILED: copy.deepcopy(models["s3cmn"]).eval().compile_decode(),
                      "gpt2": models["gpt2"]}
    gen = measure_generation(gen_models, args.contexts, args.new_tokens, args.rounds, config.vocab_size)
    del gen_models
    variants = weight_variants(models["s3cmn"], "bf16" in native, args.compiled)
    weights = []
    for g in measure_generation(variants, args.weight_contexts, args.new_tokens, args.rounds, config.vocab_size):
        weights.append({"context": g["context"], **{k: g[k] for k in variants}})
    del variants
    batch = 2 if args.quick else preset_training(preset)["batch_size"]
    train = measure_training(models, [(batch, args.short_T), (1, args.long_T)], native, args.train_rounds,
                             config.vocab_size)
    weight_bytes = sum(p.numel() * 4 for p in models["s3cmn"].parameters())
    gpt_cfg = models["gpt2"].config
    return {"preset": preset, "params": {n: sum(p.numel() for p in m.parameters()) for n, m in models.items()},
            "generation": gen, "weights": weights, "training": train, "weight_bytes": weight_bytes,
            "weight_read_bound_ms": weight_bytes / (read_gb_s * 1e9) * 1e3, "_configs": {"s3cmn": config,
                                                                                          "gpt2": gpt_cfg}}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="CI size: tiny preset, short sequences, 2 rounds")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here (and .md beside it)")
    p.add_argument("--presets", nargs="+", default=None, help="presets to compare (default: tiny small)")
    p.add_argument("--contexts", type=int, nargs="+", default=None, help="generation contexts (128 2048 8192)")
    p.add_argument("--weight-contexts", type=int, nargs="+", default=None,
                   help="contexts of the fp32 / int8 / bf16 weights comparison (128 2048)")
    p.add_argument("--new-tokens", type=int, default=None, help="generated tokens per round (32)")
    p.add_argument("--short-T", type=int, default=None, help="training length at the preset's batch (512)")
    p.add_argument("--long-T", type=int, default=None, help="training length at batch 1 (4096)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved generation rounds (3)")
    p.add_argument("--train-rounds", type=int, default=None, help="interleaved training rounds (5)")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--no-compiled", dest="compiled", action="store_false",
                   help="leave out the compiled decode step (model.compile_decode(); its compile takes ~30 s a preset)")
    p.add_argument("--override", nargs="*", default=[], metavar="FIELD=VALUE",
                   help="S3CMNConfig fields applied to every preset (and so to the matching GPT-2)")
    args = p.parse_args(argv)
    defaults = dict(presets=["tiny"], contexts=[32, 128], weight_contexts=[32], new_tokens=4, short_T=64,
                    long_T=256, rounds=2, train_rounds=2) if args.quick else dict(
        presets=["tiny", "small"], contexts=[128, 2048, 8192], weight_contexts=[128, 2048], new_tokens=32,
        short_T=512, long_T=4096, rounds=3, train_rounds=5)
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    from s3cmn.evaluation.benchmarking import parse_overrides

    args.overrides = parse_overrides(args.override)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    start, load_before = time.perf_counter(), os.getloadavg()
    mach = machine(args.threads)
    n, reps = (512, 3) if args.quick else (2048, 6)
    peak_start = gemm_peak(mach["native_precisions"], n, reps)
    read_gb_s = read_bandwidth(64 if args.quick else 512, 3 if args.quick else 6)
    presets = [run_preset(p, args, mach["native_precisions"], mach["auto_precision"], read_gb_s) for p in args.presets]
    peak_end = gemm_peak(mach["native_precisions"], n, reps)
    peak = {k: max(peak_start[k], peak_end[k]) for k in peak_start}
    targets: dict[str, Any] = {}
    for p in presets:
        add_mfu(p["training"], p.pop("_configs"), peak)
        targets.update(summarise(p["preset"], p["generation"], p["weights"], p["training"],
                                 p["weight_read_bound_ms"], mach["auto_precision"], args.long_T))
    mach.update(peak_tflops=peak, peak_tflops_start=peak_start, peak_tflops_end=peak_end, peak_gemm_n=n,
                read_gb_s=read_gb_s, loadavg_before=list(load_before), loadavg_after=list(os.getloadavg()))
    cmd = ["python", "benchmarks/bench_core.py", *(argv if argv is not None else __import__("sys").argv[1:])]
    result = {"schema": 2, "meta": {"command": " ".join(cmd), "quick": args.quick, "commit": source_commit(),
                                    "date": time.strftime("%Y-%m-%d %H:%M:%S"), "torch": torch.__version__,
                                    "wall_s": time.perf_counter() - start},
              "machine": mach, "presets": presets, "targets": targets}
    text = markdown(result)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(result, indent=1))
        os.replace(tmp, args.out)
        args.out.with_suffix(".md").write_text(text + "\n")
    print(text)
    return result


if __name__ == "__main__":
    main()

"""Render ``docs/results.md`` from the result files under ``results/``: every number beside its source file, the
command that produced it, the commit, the date and the CPU (capability and bf16 flags), as far as the file records
them ("not recorded" where it does not).

    python scripts/results_page.py            # rewrite docs/results.md
    python scripts/results_page.py --check    # exit 1 when docs/results.md is not what the files give

The page is deterministic (files in sorted order, no time of generation), so ``tests/docs/test_results_page.py``
can re-render it and compare. Commands a file does not record itself may be given in ``results/commands.json``
(``{"results/x/y.json": "the command"}``); the page marks them as documented rather than recorded.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results"
PAGE = REPO / "docs" / "results.md"
COMMANDS = RESULTS / "commands.json"
NOT_RECORDED = "not recorded"


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    caption: str = ""


@dataclass
class Source:
    """One result file: where its numbers came from, and its numbers as tables."""

    path: str  # relative to the repository root
    command: str
    commit: str
    date: str
    cpu: str
    tables: list[Table] = field(default_factory=list)


# --- number formatting ------------------------------------------------------------------------------------------


def num(x: Any, digits: int = 1) -> str:
    """``1234.5678`` -> ``1,234.6``; ints keep no decimals; None -> ``-``."""
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    if abs(x) >= 1e7:  # word perplexities of code: only the magnitude means anything
        return f"{x:.3e}"
    return f"{x:,.{digits}f}"


def pct(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{100 * x:+.{digits}f}%"


def mean_std(values: list[float], digits: int) -> str:
    """Mean ± sample standard deviation (0 for a single value)."""
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{num(statistics.fmean(values), digits)} ± {num(std, digits)}"


def stat(entry: dict[str, Any] | None, digits: int) -> str:
    """A ``{"mean", "std"}`` record as ``mean ± std``."""
    if not entry:
        return "-"
    return f"{num(entry['mean'], digits)} ± {num(entry['std'], digits)}"


def millions(n: int) -> str:
    return f"{n / 1e6:.2f}M"


# --- provenance -------------------------------------------------------------------------------------------------


def _machine_fields(data: dict[str, Any]) -> dict[str, Any] | None:
    meta = data.get("meta", {})
    for candidate in (meta.get("machine_record"), meta if "cpu_capability" in meta else None,
                      data.get("machine") if isinstance(data.get("machine"), dict) else None,
                      data.get("environment") if isinstance(data.get("environment"), dict) else None):
        if candidate and ("cpu_capability" in candidate or "capability" in candidate):
            return candidate
    return None


def describe_cpu(data: dict[str, Any]) -> str:
    """CPU model, capability and bf16 flags, threads, as the file records them."""
    machine = _machine_fields(data)
    if machine is None:
        return NOT_RECORDED
    capability = machine.get("cpu_capability", machine.get("capability"))
    flags = machine.get("cpu_bf16_flags", machine.get("flags"))
    parts = [str(machine.get("cpu", "CPU model not recorded")), f"capability {capability}",
             f"bf16 flags: {', '.join(flags) or 'none'}" if flags is not None else "bf16 flags not recorded"]
    threads = machine.get("threads", data.get("meta", {}).get("threads"))
    if threads is not None:
        parts.append(f"{threads} thread{'s' if threads != 1 else ''}")
    return ", ".join(parts)


def provenance(rel: str, data: dict[str, Any], documented: dict[str, str]) -> dict[str, str]:
    meta = data.get("meta", {})
    command = meta.get("command", data.get("command"))
    if command:
        command = f"`{command}`"
    elif rel in documented:
        command = f"`{documented[rel]}` (documented; the file does not record it)"
    else:
        command = NOT_RECORDED
    commit = meta.get("commit", data.get("commit", data.get("environment", {}).get("commit")))
    date = meta.get("date", data.get("created", data.get("date")))
    return {"command": command, "commit": f"`{commit}`" if commit else NOT_RECORDED,
            "date": str(date) if date else NOT_RECORDED, "cpu": describe_cpu(data)}


# --- readers, one per kind of result file ------------------------------------------------------------------------


def bench_core_tables(data: dict[str, Any]) -> list[Table]:
    train, gen = [], []
    for row in data["rows"]:
        for t in row["train"]:
            train.append([row["name"], millions(row["params"]), t["dtype"], f"{t['batch']} x {t['seq_len']}",
                          num(t["tokens_per_s"], 0), num(t.get("mfu", 0) * 100, 1) + "%"])
        gen.append([row["name"], *(num(i["ms_per_token"], 2) for i in row["inference"])])
    contexts = [f"ms/token at ctx {i['context']}" for i in data["rows"][0]["inference"]]
    kernels = data.get("kernels", {})
    scan = kernels.get("scan", {})
    peak = [["fp32 matmul (TFLOP/s)", num(kernels.get("matmul_fp32_tflops"), 3)]]
    if scan:
        peak += [[f"MambaMixer fwd+bwd ms (T {scan['T']}, {scan['preset']})", num(scan["mamba_fwd_bwd_ms"], 1)],
                 [f"S4DMixer fwd+bwd ms (T {scan['T']}, {scan['preset']})", num(scan["s4d_fwd_bwd_ms"], 1)]]
    targets = [[name, num(t["value"], 2), "met" if t["met"] else "missed"]
               for name, t in data.get("targets", {}).items()]
    return [Table(["model", "params", "dtype", "B x T", "train tok/s", "MFU"], train,
                  "Training: forward + backward + AdamW step, median tokens/s. MFU: analytic FLOPs x tokens/s / the "
                  "matmul rate measured in the same run."),
            Table(["model", *contexts], gen, "Cached greedy generation, batch 1: milliseconds per new token."),
            Table(["measurement", "value"], peak),
            Table(["target", "value", "result"], targets)]


# bench_core's weight variants, in table order
WEIGHT_KINDS = ("fp32", "int8", "bf16", "compiled fp32", "compiled fp32 fused", "compiled bf16", "compiled fp16",
                "compiled int8")


def bench_core_v2_tables(data: dict[str, Any]) -> list[Table]:
    """bench_core schema 2: interleaved medians with their spread (min-max over rounds)."""
    def med(x: dict[str, Any], digits: int) -> str:
        return f"{num(x['median'], digits)} ({num(x['min'], digits)}-{num(x['max'], digits)})"

    gen, weights, train = [], [], []
    for p in data["presets"]:
        for g in p["generation"]:
            gpt, comp = g["gpt2"]["ms_per_token"], g.get("s3cmn_compiled")  # compiled: bench_core since 2026-12-07
            gen.append([p["preset"], num(g["context"]), med(g["s3cmn"]["ms_per_token"], 2),
                        med(comp["ms_per_token"], 2) if comp else "-", med(gpt, 2),
                        num(g["s3cmn"]["ms_per_token"]["median"] / gpt["median"], 2),
                        num(comp["ms_per_token"]["median"] / gpt["median"], 2) if comp else "-",
                        med(g["s3cmn"]["prefill_tokens_per_s"], 0), med(g["gpt2"]["prefill_tokens_per_s"], 0)])
        for w in p["weights"]:
            weights.append([p["preset"], num(w["context"]),
                            *(med(w[k]["ms_per_token"], 2) if k in w else "-" for k in WEIGHT_KINDS)])
        for t in p["training"]:
            mfu = [f"{100 * t[n]['mfu']:.1f}%" if t[n].get("mfu") is not None else "refused"
                   for n in ("s3cmn", "gpt2")]
            train.append([p["preset"], f"{t['batch']} x {t['seq_len']}", t["dtype"], med(t["s3cmn"], 0),
                          med(t["gpt2"], 0), num(t["s3cmn"]["median"] / t["gpt2"]["median"], 2), *mfu])
    m = data["machine"]
    machine = [["GEMM peak " + k + " (TFLOP/s)", num(v, 3)] for k, v in m["peak_tflops"].items()]
    machine += [["read bandwidth (GB/s)", num(m["read_gb_s"], 1)],
                *[[f"weight-read bound, {p['preset']} (ms/token)", num(p["weight_read_bound_ms"], 2)]
                  for p in data["presets"]],
                ["load average before / after", f"{num(m['loadavg_before'][0], 2)} / {num(m['loadavg_after'][0], 2)}"]]
    targets = [[name, num(t["value"], 3), t["goal"], "met" if t["met"] else "missed"]
               for name, t in data["targets"].items()]
    return [Table(["preset", "context", "s3cmn ms/token, eager", "s3cmn ms/token, compiled", "GPT-2 ms/token",
                   "ratio eager", "ratio compiled", "s3cmn prefill tok/s", "GPT-2 prefill tok/s"], gen,
                  "Greedy generation at batch 1, fp32, interleaved rounds: median (min-max). Compiled: "
                  "`model.compile_decode()` (torch.compile of the whole one-token step; '-' where not measured)."),
            Table(["preset", "context", *(f"{k} weights" for k in WEIGHT_KINDS)], weights,
                  "s3cmn generation ms/token by weight precision (eager bf16 only where the CPU runs it natively; "
                  "compiled: `compile_decode(weights=...)`, the matrices stored at that width, fp32 arithmetic; "
                  "compiled fp32 through the BLAS GEMV, the others through the fused GEMV; "
                  "'-' where not measured)."),
            Table(["preset", "B x T", "precision", "s3cmn tok/s", "GPT-2 tok/s", "ratio", "s3cmn MFU", "GPT-2 MFU"],
                  train, "Training step (forward, backward, AdamW), interleaved rounds: median (min-max) tokens/s; "
                  "MFU against the best GEMM rate of the same precision measured in the same run."),
            Table(["measurement", "value"], machine),
            Table(["target", "value", "goal", "result"], targets)]


def compare_tables(data: dict[str, Any]) -> list[Table]:
    s = data["settings"]
    rows = [[r["name"], millions(r["params"]), stat(r.get("best_val_loss"), 3), stat(r["word_perplexity"], 1),
             stat(r["bits_per_byte"], 3), stat(r["token_perplexity"], 1), stat(r["train_tokens_per_s"], 0)]
            for r in data["rows"]]
    scored = s.get("eval_tokens_scored")
    calibration = s.get("calibration")
    budget = (f"equal wall-clock, {s['equal_time']:.0f} s of training per run: training tokens "
              + ", ".join(f"{kind} {num(m['max_tokens'])} ({'fp32' if m['precision'] == 'no' else m['precision']})"
                          for kind, m in calibration["models"].items())
              if calibration else f"{num(s.get('max_tokens'))} training tokens per model")
    caption = (f"Corpus {s.get('corpus', 'wikitext2')}, tokenizer {Path(str(s['tokenizer'])).name}; "
               f"{budget}; seeds {', '.join(map(str, s['seeds']))}; "
               f"validation: {s.get('selection', {}).get('description', NOT_RECORDED)}; "
               f"test tokens scored: {num(scored) if scored else NOT_RECORDED}"
               f"{' (the start of the split)' if s.get('eval_truncated') else ''}. Mean ± std over seeds.")
    return [Table(["model", "params", "best val loss", "word ppl", "bits/byte", "token ppl", "train tok/s"],
                  rows, caption)]


def ablation_tables(data: dict[str, Any]) -> list[Table]:
    rows = [[r["preset"], r["variant"], millions(r["params"]), num(r["learning_rate"], 4),
             f"{num(r['val_loss_mean'], 3)} ± {num(r['val_loss_std'], 3)}",
             "-" if r["delta_vs_full"] is None else f"{r['delta_vs_full']:+.3f}"]
            for r in data["summary"]]
    s = data["settings"]
    caption = (f"{num(s['tokens'])} training tokens, best of {s['evals']} validations on "
               f"{data['selection']['description']}; mean ± std over seeds {', '.join(map(str, s['seeds']))}.")
    return [Table(["preset", "variant", "params", "learning rate", "val loss", "Δ vs full"], rows, caption)]


def kernels_tables(data: dict[str, Any]) -> list[Table]:
    rows = [[r["kernel"], r["preset"], r["shape"], f"{r['old']} -> {r['new']}", num(r["old_ms"], 1),
             num(r["new_ms"], 1), f"{r['speedup']:.2f}x"] for r in data["rows"]]
    return [Table(["kernel", "preset", "shape", "old -> new", "old ms", "new ms", "speedup"], rows,
                  "Forward + backward, old and new path interleaved in one process.")]


def eval_report_tables(data: dict[str, Any]) -> list[Table]:
    runs = data["runs"]
    off = {r["precision"]: r["perplexity"]["word_perplexity"] for r in runs if r["memory"] == "off"}
    rows = []
    for r in runs:
        p = r["perplexity"]
        base = off.get(r["precision"])
        change = pct(p["word_perplexity"] / base - 1) if base and r["memory"] != "off" else "-"
        rows.append([r["precision"], r["memory"], num(p["token_perplexity"], 1), num(p["word_perplexity"], 1),
                     num(p["bits_per_byte"], 3), num(r.get("scored_tokens_per_s"), 0), change])
    d = data["data"]
    caption = (f"{d['split']} split, {num(d['tokens'])} tokens, {num(d['words'])} words, {num(d['bytes'])} bytes"
               f"{' (truncated)' if d.get('truncated') else ''}; context {data['settings']['context_length']}, "
               f"stride {data['settings']['stride']}.")
    models = [[name, num(m["parameters"]), num(m["serialized_state_dict_bytes"] / 1e6, 1),
               num(m.get("speed", {}).get("generation_ms_per_token"), 2)] for name, m in sorted(data["models"].items())]
    return [Table(["precision", "memory", "token ppl", "word ppl", "bits/byte", "scored tok/s", "word ppl vs off"],
                  rows, caption),
            Table(["model", "parameters", "state_dict MB", "generation ms/token"], models)]


def tasks_tables(data: dict[str, Any]) -> list[Table]:
    metrics = [k for k in data["runs"]["s3cmn"][0] if k not in ("seed", "parameters", "best_epoch", "epochs", "test",
                                                                  "spike_rate")]
    rows = []
    for name, runs in data["runs"].items():
        rows.append([name, num(runs[0]["parameters"]),
                     *(mean_std([r[m] for r in runs], 3) for m in metrics)])
    baseline = "a plain CNN" if data["task"]["task"] == "vision" else "a GRU"
    caption = (f"{data['preset']}: {len(data['seeds'])} seeds, {data['epochs']} epochs; test split, mean ± sample "
               f"std over seeds. `baseline` is {baseline} of matched parameter count.")
    return [Table(["model", "parameters", *metrics], rows, caption)]


def stride_tables(data: dict[str, Any]) -> list[Table]:
    rows = [["off", num(data["off"]["token_ppl"], 1), "-", "-"]]
    rows += [[f"write every {r['write_stride']}" if r["write_stride"] else "read only", num(r["token_ppl"], 1),
              pct(r["ppl_change"]), num(r["speed_vs_off"], 2)] for r in data["rows"]]
    return [Table(["memory writes", "token ppl", "vs off", "speed vs off"], rows,
                  f"{data['checkpoint']} on {num(data['tokens'])} held-out tokens (never the test split).")]


def datastore_scale_tables(data: dict[str, Any]) -> list[Table]:
    steps, tables = data["steps"], []
    builds = [[str(b["ranks"]), b["index"], num(b["entries"]), num(b["wall_s"], 1), num(b["entries_per_s"], 0),
               " / ".join(num(r["max_rss_mib"], 0) for r in b["per_rank"])]
              for b in (steps.get("build_1"), steps.get("build_2")) if b]  # fmt: skip
    if builds:
        tables.append(Table(["ranks", "index", "entries", "build s", "entries/s", "peak RSS MiB per rank"], builds,
                            "Real hidden states over the Python corpus' training files (torchrun, gloo)."))
    if "search" in steps:
        s = steps["search"]
        tables.append(Table(["measurement", "value"], [
            ["queries with the same exact neighbours (2 shards vs one index)",
             f"{s['same_ids_rows']} of {s['queries']}"],
            ["ms/query, batch 1: one index / 2 shards",
             f"{num(s['latency_single']['batch1_ms'], 2)} / {num(s['latency_sharded']['batch1_ms'], 2)}"],
            ["bytes per entry (flat)", num(s["bytes_per_entry_single"], 1)]]))  # fmt: skip
    if "ivf" in steps:
        rows = [[row["index"], num(row["bytes_per_entry"], 1), nprobe, num(r["recall_at_k"], 3),
                 num(r["batch1_ms"], 3), num(r["batch256_ms_per_query"], 4)]
                for row in steps["ivf"]["rows"].values() for nprobe, r in row["nprobe"].items()]  # fmt: skip
        tables.append(Table(["index", "bytes/entry", "nprobe", "recall@k vs exact", "ms/query (batch 1)",
                             "ms/query (batch 256)"], rows))  # fmt: skip
    if "killed" in steps:
        k = steps["killed"]
        tables.append(Table(["killed build", "value"], [["kills (SIGKILL) then --resume", num(k["kills"])],
                                                        ["queries with the same neighbours as an uninterrupted build",
                                                         f"{k['same_ids_rows']} of {k['queries']}"]]))  # fmt: skip
    if "eval" in steps:
        rows = [[r["memory"], num(r["perplexity"]["token_perplexity"], 3), num(r["perplexity"]["bits_per_byte"], 4),
                 num(r["perplexity"]["tokens"])] for r in steps["eval"]["report"]["runs"]]  # fmt: skip
        tables.append(Table(["memory", "token ppl", "bits/byte", "test tokens"], rows,
                            "The Python test split, scored once; kNN fitted on validation files."))
    return tables


def memory_cost_tables(data: dict[str, Any]) -> list[Table]:
    search = [[num(r["entries"]), r["index"], num(r["nlist"]), num(r["nprobe"]), num(r["us_per_query_batched"], 1),
               num(r["us_single_query"], 0), num(r["recall_at_k"], 3)] for r in data["search"]]
    steps = [[f"{r['batch']} x {r['seq_len']}", str(r["blas_threads"]), num(r["step_s_memory_off"], 3),
              num(r["step_s_memory_on"], 3), pct(r["overhead"])] for r in data["training_step"]]
    return [Table(["entries", "index", "nlist", "nprobe", "µs/query (batched)", "µs (one query)", "recall@k"], search),
            Table(["B x T", "BLAS threads", "step s (memory off)", "step s (memory on)", "overhead"], steps,
                  "A tiny-preset training step with and without the memory.")]


def weight_rounding_tables(data: dict[str, Any]) -> list[Table]:
    s = data["settings"]
    rows = [[r["weights"], num(r["word_perplexity"], 2), num(r["bits_per_byte"], 4), pct(r["word_ppl_change"], 2)]
            for r in data["rows"]]
    return [Table(["weights", "word ppl", "bits/byte", "change in word ppl"], rows,
                  f"The compiled decode step's weight widths (`rounded_weights`), scored on {s['text']} "
                  f"({num(s['tokens'])} tokens, context {s['seq_len']}); goal {data['goal']}.")]


def scaling_tables(data: dict[str, Any]) -> list[Table]:
    rows = [[p["model"], num(p["T"]), num(p["train"]["ms_per_token"], 2), num(p["generation"]["ms_per_token"], 2)]
            for p in data["points"]]
    return [Table(["model", "T", "train ms/token", "generation ms/token"], rows, "Batch 1, fp32.")]


def readout_tables(data: dict[str, Any]) -> list[Table]:
    fit = data["fit"]
    rows = [[mode, num(nll, 4)] for mode, nll in fit["nll_per_token"].items()]
    settings = [["cache", num(data["cache"]["lam"], 2), num(data["cache"]["temperature"], 2), num(data["cache"]["k"])],
                ["knn", num(data["knn"]["lam"], 2), num(data["knn"]["temperature"], 2), num(data["knn"]["k"])]]
    return [Table(["memory", "held-out NLL/token"], rows, f"Fitted on {num(fit['tokens'])} held-out tokens."),
            Table(["read-out", "lambda", "temperature", "k"], settings)]


def datastore_tables(data: dict[str, Any]) -> list[Table]:
    return [Table(["measurement", "value"], [["entries", num(data["entries"])], ["index", data["description"]],
                                             ["nprobe", num(data["nprobe"])], ["key width", num(data["dim"])]])]


def generation_cost_tables(data: dict[str, Any]) -> list[Table]:
    s = data["settings"]
    off = data["modes"].get("off")
    rows = []
    for mode, r in data["modes"].items():
        cells = [f"{num(r[k]['median'], 2)} ({num(r[k]['min'], 2)}-{num(r[k]['max'], 2)})"
                 for k in ("ms_per_token", "marginal_ms_per_token", "prompt_ms")]  # fmt: skip
        ratio = f"{r['ms_per_token']['median'] / off['ms_per_token']['median']:.2f}x" if off else "-"
        rows.append([mode, *cells, ratio])
    return [Table(["memory", "ms/token (whole call)", "marginal ms/token", "prompt + 1 token ms", "vs off"], rows,
                  f"Greedy generation, batch 1, {num(s['prompt_tokens'])}-token prompt, {num(s['new_tokens'])} new "
                  f"tokens: median (min-max) of {num(s['rounds'])} interleaved rounds.")]  # fmt: skip


READERS: list[tuple[Callable[[dict[str, Any]], bool], Callable[[dict[str, Any]], list[Table]]]] = [
    (lambda d: d.get("format") == "s3cmn-eval-report", eval_report_tables),
    (lambda d: d.get("format") == "s3cmn-nexttoken-readout", readout_tables),
    (lambda d: d.get("format") == "s3cmn-nexttoken-datastore", datastore_tables),
    (lambda d: d.get("format") == "s3cmn-generation-cost", generation_cost_tables),
    (lambda d: d.get("format") == "s3cmn-weight-rounding", weight_rounding_tables),
    (lambda d: d.get("schema") == 2 and "presets" in d and "targets" in d, bench_core_v2_tables),
    (lambda d: "kernels" in d and "targets" in d, bench_core_tables),
    (lambda d: "descriptions" in d or ("settings" in d and "rows" in d and "word_perplexity" in d["rows"][0]),
     compare_tables),
    (lambda d: "summary" in d and "selection" in d, ablation_tables),
    (lambda d: "rows" in d and d["rows"] and "kernel" in d["rows"][0], kernels_tables),
    (lambda d: "task" in d and "runs" in d, tasks_tables),
    (lambda d: "best_write_stride" in d, stride_tables),
    (lambda d: d.get("format") == "s3cmn-datastore-scale", datastore_scale_tables),
    (lambda d: "training_step" in d and "search" in d, memory_cost_tables),
    (lambda d: "points" in d, scaling_tables),
]


def read_source(path: Path, documented: dict[str, str]) -> Source | None:
    """The numbers and provenance of one JSON result file; None for a JSON file no reader knows."""
    data = json.loads(path.read_text(encoding="utf-8"))
    rel = path.relative_to(REPO).as_posix()
    for matches, reader in READERS:
        if isinstance(data, dict) and matches(data):
            return Source(rel, **provenance(rel, data, documented), tables=reader(data))
    return None


# --- the page ---------------------------------------------------------------------------------------------------

INTRO = """# Results

Every number on this page is read from a result file under `results/`, written by the command that measured
it. The page is generated by `python scripts/results_page.py` (do not edit it by hand; a test fails when it is
stale). Each file's section gives the command, the commit, the date and the CPU (model, capability, bf16
flags, threads) as far as the file records them. The raw reports and plots are on
[Reports and plots](reports.md).

These are small CPU budgets on a 2-core machine shared with other jobs: they show what this code does on
that machine, not what the architecture does at scale. Timings move by tens of percent between runs; compare
speeds within one file only.
"""


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|")


def render_table(table: Table) -> list[str]:
    lines = []
    if table.caption:
        lines += [table.caption, ""]
    lines += ["| " + " | ".join(_cell(h) for h in table.header) + " |",
              "| " + " | ".join("---" for _ in table.header) + " |"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in table.rows]
    return lines + [""]


def render_source(source: Source) -> list[str]:
    lines = [f"### `{source.path}`", "",
             f"- command: {source.command}", f"- commit: {source.commit}", f"- date: {source.date}",
             f"- CPU: {source.cpu}", ""]
    for table in source.tables:
        lines += render_table(table)
    return lines


WORKING_STATE = ("tuning.json", "calibration.json")  # a comparison's saved choices, reused by its reruns


def kept(path: Path, results: Path) -> bool:
    """Whether a file under ``results`` is a result to show: not inside a ``runs/`` folder (the working
    folders of a comparison in progress, ignored by git) and not one of a comparison's saved choices (its
    compare.json reports them)."""
    return "runs" not in path.relative_to(results).parts[:-1] and path.name not in WORKING_STATE


def render_page(results: Path = RESULTS) -> str:
    documented = json.loads(COMMANDS.read_text(encoding="utf-8")) if COMMANDS.is_file() else {}
    lines = [INTRO]
    unread = []
    folders = sorted({p.relative_to(results).parts[0] for p in results.rglob("*.json")
                      if p != COMMANDS and kept(p, results)})  # fmt: skip
    for folder in folders:
        sources = []
        for path in sorted(p for p in (results / folder).rglob("*.json") if kept(p, results)):
            source = read_source(path, documented)
            if source is None:
                unread.append(path.relative_to(REPO).as_posix())
            else:
                sources.append(source)
        if sources:
            lines += [f"## {folder}", ""]
            for source in sources:
                lines += render_source(source)
    others = sorted(p.relative_to(REPO).as_posix() for p in results.rglob("*")  # the .md twin of a .json: same numbers
                    if p.is_file() and kept(p, results) and p.suffix not in (".json", ".png")
                    and not p.with_suffix(".json").is_file())  # fmt: skip
    lines += ["## Other records", "",
              "Logs and notes kept beside the results above (their numbers are not read into this page; the "
              "Markdown ones are shown on [Reports and plots](reports.md)):", ""]
    lines += [f"- `{p}`" for p in others + unread]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when docs/results.md is stale, write nothing")
    args = parser.parse_args(argv)
    page = render_page()
    if args.check:
        current = PAGE.read_text(encoding="utf-8") if PAGE.is_file() else ""
        if current != page:
            print(f"{PAGE} is stale: run python scripts/results_page.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(page, encoding="utf-8")
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

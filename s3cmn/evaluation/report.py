"""The evaluation report: ``report.json`` (every setting and number) and ``report.md`` (tables).

Top-level JSON fields (:data:`REPORT_FIELDS`): format, version, created, seconds, checkpoint (path, model
config), settings (evaluation and data settings, resolved context and stride, memory modes and start, device,
speed and curve settings), data (split, source file + SHA-256 or hub name, counts), tokenizer (name, class,
vocabulary size, source), memory_start (content, entries per layer, entries holding scored text), runs (one per
precision x memory mode: perplexity, sparsity, memory statistics, peak memory), models (per precision:
parameters, sizes, speed), context_curve, energy_note, notes, environment (versions, machine, device).
"""

from __future__ import annotations

import json
import math
import os
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from s3cmn.memory.index import import_faiss

REPORT_FIELDS = ("format", "version", "created", "seconds", "checkpoint", "settings", "data", "tokenizer",
                 "memory_start", "readouts", "runs", "models", "context_curve", "energy_note", "notes",
                 "environment")  # fmt: skip
RUN_FIELDS = ("precision", "memory", "perplexity", "windows", "forwards", "tokens_processed", "seconds",
              "scored_tokens_per_s", "peak_memory", "sparsity", "memory_state")  # fmt: skip


def _version(module: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(module)
    except metadata.PackageNotFoundError:
        return None


def environment(device: torch.device) -> dict[str, Any]:
    """Library versions and the machine: CPU count and capability, torch threads, device (and GPU name on CUDA)."""
    faiss = import_faiss()
    import transformers

    import s3cmn

    env = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "faiss": faiss.__version__,
        "numpy": _version("numpy"),
        "tokenizers": _version("tokenizers"),
        "bitsandbytes": _version("bitsandbytes"),
        "s3cmn": getattr(s3cmn, "__version__", None) or _version("s3cmn"),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    if device.type == "cuda":
        env["cuda_device"] = torch.cuda.get_device_name(device)
    return env


def tokenizer_info(tokenizer: Any, source: str) -> dict[str, Any]:
    """Name, class, vocabulary size (``len(tokenizer)``), special tokens, and where it came from."""
    return {"name_or_path": tokenizer.name_or_path, "class": type(tokenizer).__name__, "vocab_size": len(tokenizer),
            "eos_token": tokenizer.eos_token, "bos_token": tokenizer.bos_token, "source": source}  # fmt: skip


def jsonable(value: Any) -> Any:
    """``value`` with tuples as lists and non-finite floats as strings ("inf", "nan"): strict JSON."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def write_json(report: dict[str, Any], path: str | os.PathLike) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(jsonable(report), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return p


# --------------------------------------------------------------------------------------------------
# Markdown


def _fmt(x: Any, digits: int = 3) -> str:
    if isinstance(x, float):
        return f"{x:.{digits}f}" if math.isfinite(x) and abs(x) < 1e7 else f"{x:.3g}"
    return str(x)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    return lines + ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]


def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:.1f}"


def _readout_lines(report: dict[str, Any]) -> list[str]:
    """The next-token read-outs' settings, where each was fitted, and their generation cost."""
    readouts = report.get("readouts")
    if not readouts:
        return []
    rows = []
    modes = {m: r for m, r in readouts.items() if m not in ("held_out_fit", "scored_text_overlap")}
    for mode, r in modes.items():
        c, k = r.get("cache"), r.get("knn")
        fitted = r["fitted_on"]
        rows.append([mode, _fmt(c["lam"]) if c else "-", f"{c['temperature']:.3g}" if c else "-",
                     c["k"] if c else "-", c["window"] if c else "-", _fmt(k["lam"]) if k else "-",
                     f"{k['temperature']:.3g}" if k else "-", k["k"] if k else "-",
                     f"`{fitted.get('path')}` ({str(fitted.get('sha256'))[:12]})"])  # fmt: skip
    out = ["", "## Next-token read-outs: fitted settings", ""]
    out += _table(["mode", "cache lambda", "cache T", "cache k", "cache window", "knn lambda", "knn T", "knn k",
                   "fitted on (sha256)"], rows)  # fmt: skip
    store = next((r["datastore"] for r in modes.values() if "datastore" in r), None)
    if store:
        built = store["built_from"]
        out += ["", f"kNN datastore: {store['entries']:,} entries, `{store['description']}`, built from "
                f"`{built.get('path')}` ({str(built.get('sha256'))[:12]}, {built.get('tokens', '?'):,} tokens)."]
    out += _overlap_lines(readouts.get("scored_text_overlap"))
    gen = report.get("models", {}).get("fp32", {}).get("readout_generation")
    if gen:
        costs = ", ".join(f"{m} {v:.2f}" for m, v in gen["ms_per_token"].items())
        out += ["", f"Generation with the read-outs (greedy, batch 1, {gen['prompt_tokens']}-token prompt, "
                f"{gen['new_tokens']} new tokens, median of {gen['repeats']}), ms/token: {costs}."]
    return out


def _overlap_lines(overlap: dict[str, Any] | None) -> list[str]:
    """How much of the scored text the read-outs' own texts share (refused above the limit)."""
    if not overlap:
        return []
    names = {"fit_text": "the fit text", "datastore_text": "the datastore text"}
    parts = [f"{names[k]} {v['fraction']:.2%} (of {v['scored_ngrams']:,} sampled {v['ngram']}-grams)"
             if v is not None else f"{names[k]} not checked (no fingerprint recorded)" for k, v in overlap.items()]
    return ["", f"Scored text's overlap with the read-outs' texts (shared long word n-grams): {', '.join(parts)}."]


def _shares(spread: dict[str, Any] | None) -> list[str]:
    """The top entry's share of the retrievals and the share of entries read, or dashes where not counted."""
    return [f"{spread['top_entry_share']:.1%}", f"{spread['read_share']:.1%}"] if spread else ["-", "-"]


def render_markdown(report: dict[str, Any]) -> str:
    """A readable summary of the report: settings, perplexity, sparsity, memory, speed and size, notes."""
    s, d, tok = report["settings"], report["data"], report["tokenizer"]
    source = d["source"].get("path") or f"{d['source'].get('dataset')}/{d['source'].get('config')}"
    out = [
        "# s3cmn evaluation", "",
        f"- checkpoint: `{report['checkpoint']['path']}`",
        f"- text: {d['split']} split, `{source}`" + (" (cut to whole lines: max_eval_tokens)" * d["truncated"]),
        f"- protocol: **{report.get('protocol', 'sliding')}** (the split as one stream, overlapping windows; "
        "`--protocol lm-eval` scores as lm-evaluation-harness's wikitext task)",
        f"- scored: {d['tokens']:,} tokens, {d['words']:,} words, {d['bytes']:,} bytes; context {s['context_length']}, "
        f"stride {s['stride']} ({s['context_source']})",
        f"- tokenizer: {tok['class']} `{tok['name_or_path']}`, {tok['vocab_size']:,} tokens (from {tok['source']})",
        f"- memory at start: {report['memory_start']['content']}, entries "
        + (", ".join(f"layer {k}: {v['entries']}" for k, v in report["memory_start"]["layers"].items()) or "none"),
        f"- device: {s['device']}, {report['environment']['cpu_count']} CPUs; created {report['created']}", "",
        "## Perplexity", "",
    ]  # fmt: skip
    out += _table(["precision", "memory", "token ppl", "word ppl", "bits/byte", "scored tokens/s", "peak RSS MB"],
                  [[r["precision"], r["memory"], r["perplexity"]["token_perplexity"],
                    r["perplexity"]["word_perplexity"], r["perplexity"]["bits_per_byte"], r["scored_tokens_per_s"],
                    _mb(r["peak_memory"].get("cpu_peak_rss_bytes"))] for r in report["runs"]])  # fmt: skip
    out += _readout_lines(report)
    first = report["runs"][0]
    if first["sparsity"]:
        out += ["", f"## Spiking sparsity ({first['precision']}, memory {first['memory']})", ""]
        out += _table(["layer", "neurons", "spike rate", "silent", "SynOps/token", "dense MACs/token",
                       "SynOps/MACs", "pJ/token spiking (est.)", "pJ/token dense (est.)"],
                      [[x["layer"], x["neurons"], x["spike_rate"], x["silent_fraction"], x["synaptic_ops_per_token"],
                        x["dense_macs_per_token"], x["ops_ratio"], x["energy_spiking_pj_per_token"],
                        x["energy_dense_pj_per_token"]] for x in first["sparsity"]])  # fmt: skip
        out += ["", f"Energy: {report['energy_note']}."]
    memory_rows = []
    for r in report["runs"]:
        state = r["memory_state"]
        if state is None or "reads" not in state:  # off, or a next-token read-out (its own section)
            continue
        for layer, reads in state["reads"].items():
            spread = (state.get("usage_spread") or {}).get(layer)  # reports written before it was kept: none
            scoring = (state.get("usage_spread_scoring") or {}).get(layer)
            memory_rows.append([r["precision"], layer, state["start"][layer]["entries"], state["end"][layer]["entries"],
                                reads["hit_rate"], reads["mean_similarity"], reads["gate_mean"],
                                reads["latency_ms_mean"], *_shares(scoring), *_shares(spread)])  # fmt: skip
    if memory_rows:
        out += ["", "## Memory during evaluation (memory on)", ""]
        out += _table(["precision", "layer", "entries at start", "entries at end", "hit rate", "mean similarity",
                       "gate mean", "search ms", "top entry's share of reads (scoring)", "entries read (scoring)",
                       "top entry's share of reads (training)", "entries read (training)"],
                      memory_rows)  # fmt: skip
        out += ["", "The last four columns: how the reads spread over the entries (the share of all retrievals the "
                "most read entry took, and the share of entries read at least once), counted while this text was "
                "scored and, for the starting memory, in training."]
    out += ["", "## Speed and size", ""]
    rows = []
    for precision, m in report["models"].items():
        sp = m["speed"]
        disk = m.get("disk", {}).get("total")
        rows.append([precision, f"{m['parameters']:,}", _mb(m["serialized_state_dict_bytes"]), _mb(disk),
                     sp["prefill_tokens_per_s"], sp["generation_ms_per_token"],
                     _mb(m["speed_peak_memory"].get("cpu_peak_rss_bytes"))])  # fmt: skip
    out += _table(["precision", "parameters", "state_dict MB", "checkpoint folder MB", "prefill tokens/s",
                   "generation ms/token", "peak RSS MB"], rows)  # fmt: skip
    if "int8" in report["models"]:
        q = report["models"]["int8"]["quantization"]
        out += ["", f"int8: backend {q['backend']}, {q['int8_fraction']:.1%} of the parameters in int8 "
                f"({len(q['kept_fp32'])} Linears kept in fp32); parameters counted before quantization."]
    sp = report["settings"]["speed"]
    out += ["", f"Prefill of {next(iter(report['models'].values()))['speed']['prompt_tokens']} tokens, then "
            f"{sp['new_tokens']} cached greedy steps, batch 1; medians of {sp['repeats']} repeats."]  # fmt: skip
    if report["context_curve"]:
        out += ["", "## Perplexity against context (memory off, first tokens of the split)", ""]
        out += _table(["context", "stride", "tokens", "token ppl"],
                      [[c["context_length"], c["stride"], c["tokens"], c["token_perplexity"]]
                       for c in report["context_curve"]])  # fmt: skip
    if report["notes"]:
        out += ["", "## Notes", ""] + [f"- {n}" for n in report["notes"]]
    env = report["environment"]
    out += ["", f"torch {env['torch']}, transformers {env['transformers']}, faiss {env['faiss']}, "
            f"s3cmn {env['s3cmn']}, python {env['python']}."]  # fmt: skip
    return "\n".join(out) + "\n"


def write_reports(report: dict[str, Any], report_dir: str | os.PathLike | None = None,
                  plot_dir: str | os.PathLike | None = None,
                  render: Callable[[dict[str, Any]], str] = render_markdown) -> dict[str, Any]:
    """Write ``report.json`` and ``report.md`` (``render(report)``: the lm-eval protocol has its own) into
    ``report_dir`` and the PNG charts into ``plot_dir``."""
    written: dict[str, Any] = {}
    if plot_dir is not None:
        from s3cmn.evaluation.plots import write_plots

        written["plots"] = [str(p) for p in write_plots(report, plot_dir)]
        report["plots"] = written["plots"]
    if report_dir is not None:
        root = Path(report_dir)
        written["json"] = str(write_json(report, root / "report.json"))
        (root / "report.md").write_text(render(report), encoding="utf-8")
        written["markdown"] = str(root / "report.md")
    return written

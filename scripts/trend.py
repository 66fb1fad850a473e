"""A trend across training budgets from several ``benchmarks/compare.py`` results: test bits/byte of each model
against its training tokens and against its training seconds, one figure per preset, and whether s3cmn keeps
its lead as the budget grows (issue 29, item 3).

    python scripts/trend.py results/compare/tiny-python-0.5m-tuned results/compare/tiny-python-2m-tuned \\
        results/compare/tiny-python-8m-tuned --out results/compare/trend-python

Every folder (or compare.json) must be one corpus; rows are grouped by preset. Writes ``trend.json``, ``trend.md``
and, with matplotlib, ``trend-<preset>.png`` (two panels: bits/byte vs tokens and vs seconds, log x). The
lead at a budget is the best peer's bits/byte minus s3cmn's (positive: s3cmn ahead); the mean over seeds is
used throughout, with the seeds' standard deviation beside it. Seconds are wall seconds of training per run
(mean over seeds), on whatever machine each result records.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path
from typing import Any

OURS = "s3cmn"


def load(path: Path) -> dict[str, Any]:
    """A compare.json, from its folder or its path."""
    file = path / "compare.json" if path.is_dir() else path
    if not file.is_file():
        raise SystemExit(f"trend: {file} does not exist: give compare.py --out folders or their compare.json")
    return json.loads(file.read_text())


def points(results: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """One point per (result, model): preset, budget, mean training tokens and seconds, bits/byte mean and std."""
    corpora = {r["settings"].get("corpus", "wikitext2") for _, r in results}
    if len(corpora) != 1:
        raise SystemExit(f"trend: the results mix corpora {sorted(corpora)}: give one corpus's results")
    out = []
    for source, r in results:
        seconds: dict[str, list[float]] = {}
        for run in r["runs"]:
            seconds.setdefault(run["model"], []).append(run["train_seconds"])
        for row in r["rows"]:
            bpb = row["bits_per_byte"]
            out.append({"source": source, "preset": r["settings"]["preset"], "model": row["name"],
                        "budget_tokens": r["settings"]["max_tokens"], "train_tokens": row["train_tokens"]["mean"],
                        "train_seconds": statistics.fmean(seconds.get(row["model"], [float("nan")])),
                        "bits_per_byte": bpb["mean"], "bits_per_byte_std": bpb.get("std", 0.0),
                        "seeds": row["seeds"]})  # fmt: skip
    return sorted(out, key=lambda p: (p["preset"], p["budget_tokens"], p["model"]))


def leads(pts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per preset and budget: s3cmn's bits/byte, the best peer's, the lead, and whether s3cmn is lowest."""
    out = []
    for key in sorted({(p["preset"], p["budget_tokens"]) for p in pts}):
        here = {p["model"]: p for p in pts if (p["preset"], p["budget_tokens"]) == key}
        if OURS not in here or len(here) < 2:
            continue
        peer = min((p for m, p in here.items() if m != OURS), key=lambda p: p["bits_per_byte"])
        lead = peer["bits_per_byte"] - here[OURS]["bits_per_byte"]
        out.append({"preset": key[0], "budget_tokens": key[1], "s3cmn": here[OURS]["bits_per_byte"],
                    "best_peer": peer["model"], "best_peer_bits_per_byte": peer["bits_per_byte"], "lead": lead,
                    "s3cmn_lowest": lead > 0})  # fmt: skip
    for preset in {x["preset"] for x in out}:
        rows = [x for x in out if x["preset"] == preset]
        for prev, cur in zip(rows, rows[1:], strict=False):
            cur["lead_change"] = cur["lead"] - prev["lead"]
    return out


def markdown(pts: list[dict[str, Any]], lead_rows: list[dict[str, Any]], corpus: str) -> str:
    lines = [f"# Trend on the {corpus} corpus", "", "| preset | budget tokens | model | train tokens | train s | "
             "test bits/byte | seeds | source |", "| --- | ---: | --- | ---: | ---: | ---: | ---: | --- |"]
    for p in pts:
        lines.append(f"| {p['preset']} | {p['budget_tokens']:,} | {p['model']} | {p['train_tokens']:,.0f} | "
                     f"{p['train_seconds']:,.0f} | {p['bits_per_byte']:.3f} ± {p['bits_per_byte_std']:.3f} | "
                     f"{len(p['seeds'])} | `{p['source']}` |")
    lines += ["", "| preset | budget tokens | s3cmn | best peer | lead (peer - s3cmn) | change from the budget "
              "before |", "| --- | ---: | ---: | --- | ---: | ---: |"]
    for x in lead_rows:
        change = f"{x['lead_change']:+.3f}" if "lead_change" in x else "-"
        lines.append(f"| {x['preset']} | {x['budget_tokens']:,} | {x['s3cmn']:.3f} | {x['best_peer']} "
                     f"{x['best_peer_bits_per_byte']:.3f} | {x['lead']:+.3f} | {change} |")
    return "\n".join(lines) + "\n"


def plot(pts: list[dict[str, Any]], out: Path) -> list[str]:
    """trend-<preset>.png per preset (nothing without matplotlib); the files written."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written = []
    for preset in sorted({p["preset"] for p in pts}):
        fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
        for model in sorted({p["model"] for p in pts if p["preset"] == preset}):
            mine = [p for p in pts if p["preset"] == preset and p["model"] == model]
            for ax, x in zip(axes, ("train_tokens", "train_seconds"), strict=True):
                ax.errorbar([p[x] for p in mine], [p["bits_per_byte"] for p in mine],
                            yerr=[p["bits_per_byte_std"] for p in mine], marker="o", capsize=3, label=model)
        axes[0].set(xscale="log", xlabel="training tokens", ylabel="test bits/byte", title=f"{preset}: by tokens")
        axes[1].set(xscale="log", xlabel="training seconds", title=f"{preset}: by seconds")
        axes[0].legend()
        fig.tight_layout()
        path = out / f"trend-{preset}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(str(path))
    return written


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="+", type=Path, help="compare.py --out folders (or their compare.json)")
    p.add_argument("--out", type=Path, required=True, help="folder for trend.json, trend.md and the plots")
    args = p.parse_args(argv)
    results = [(str(path), load(path)) for path in args.results]
    pts = points(results)
    lead_rows = leads(pts)
    corpus = results[0][1]["settings"].get("corpus", "wikitext2")
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"corpus": corpus, "points": pts, "leads": lead_rows, "plots": plot(pts, args.out)}
    tmp = args.out / "trend.json.tmp"
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, args.out / "trend.json")
    text = markdown(pts, lead_rows, corpus)
    (args.out / "trend.md").write_text(text)
    print(text, end="")
    return result


if __name__ == "__main__":
    main()

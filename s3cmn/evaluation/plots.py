"""PNG charts of an evaluation report: spike rate per layer, perplexity against context, memory hit rate.

matplotlib is optional (``pip install 's3cmn[eval]'``); asking for plots without it raises ImportError.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

MATPLOTLIB_INSTALL = "pip install 's3cmn[eval]' (matplotlib>=3.7)"


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as err:
        raise ImportError(f"plots need matplotlib: {MATPLOTLIB_INSTALL}") from err
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def write_plots(report: dict[str, Any], plot_dir: str | os.PathLike) -> list[Path]:
    """Write the charts the report has data for into ``plot_dir``; returns the files written."""
    plt = _pyplot()
    root = Path(plot_dir)
    root.mkdir(parents=True, exist_ok=True)
    written = []

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        fig.savefig(root / name, dpi=120)
        plt.close(fig)
        written.append(root / name)

    runs = [r for r in report["runs"] if r["sparsity"]]
    if runs:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        width = 0.8 / len(runs)
        for i, r in enumerate(runs):
            layers = [x["layer"] for x in r["sparsity"]]
            ax.bar([j + i * width for j in range(len(layers))], [x["spike_rate"] for x in r["sparsity"]], width,
                   label=f"{r['precision']}, memory {r['memory']}")  # fmt: skip
        ax.set_xticks([j + width * (len(runs) - 1) / 2 for j in range(len(layers))], [str(x) for x in layers])
        ax.set_xlabel("block")
        ax.set_ylabel("spikes per neuron-step")
        ax.set_title("Spike rate per layer")
        ax.legend(fontsize=8)
        save(fig, "spike_rate_per_layer.png")

    if report["context_curve"]:
        curve = report["context_curve"]
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot([c["context_length"] for c in curve], [c["token_perplexity"] for c in curve], marker="o")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("context length (tokens), stride = context / 2")
        ax.set_ylabel("token perplexity")
        ax.set_title(f"Perplexity against context (first {curve[0]['tokens']} tokens, memory off)")
        save(fig, "perplexity_vs_context.png")

    traced = [r for r in report["runs"] if r["memory_state"] and r["memory_state"]["hit_rate_trace"]]
    if traced:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for r in traced:
            trace = r["memory_state"]["hit_rate_trace"]
            ax.plot([t for t, _ in trace], [h for _, h in trace], label=r["precision"])
        ax.set_xlabel("tokens scored")
        ax.set_ylabel("hit rate (hit slots / searched slots)")
        ax.set_ylim(0, 1.05)
        ax.set_title("Memory hit rate during evaluation")
        ax.legend(fontsize=8)
        save(fig, "memory_hit_rate.png")
    logger.info("wrote %d charts to %s", len(written), root)
    return written

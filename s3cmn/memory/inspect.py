"""Looking inside a FaissMemory: a JSON-ready report, the hits of given queries decoded to text, and charts.

Library functions behind ``s3cmn-memory inspect`` / ``scripts/inspect_memory.py``. ``tokenizer`` is anything
with ``decode(list[int]) -> str`` (a transformers or tokenizers tokenizer); without one, entries show their
token ids only. The provenance window of an entry is the PROVENANCE_WINDOW token ids ending where it was written.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from torch import Tensor

if TYPE_CHECKING:
    from s3cmn.memory.store import FaissMemory

logger = logging.getLogger(__name__)


class Decoder(Protocol):
    def decode(self, ids: list[int]) -> str: ...


def _describe(entries: dict[str, np.ndarray], rows: np.ndarray, tokenizer: Decoder | None) -> list[dict]:
    out = []
    for r in rows:
        tokens = [int(t) for t in entries["tokens"][r] if t >= 0]
        item = {
            "id": int(entries["ids"][r]),
            "usage": int(entries["usage"][r]),
            "attention_mass": float(entries["mass"][r]),
            "last_used": int(entries["last_used"][r]),
            "write_step": int(entries["write_step"][r]),
            "position": int(entries["positions"][r]),
            "segment": int(entries["segments"][r]),
            "token_ids": tokens,
        }
        if tokenizer is not None:
            item["text"] = tokenizer.decode(tokens)
        out.append(item)
    return out


def usage_spread(usage: np.ndarray) -> dict[str, float | int]:
    """How the retrievals ``usage`` (M,) (times each entry was read) spread over the entries: ``top_entry_share``
    of all retrievals went to the most read entry, ``top_percent_share`` to the most read 1% (at least one),
    and ``read_share`` of the entries were ever read. A reader that collapsed onto a few entries has a top share
    near 1 and a read share near 0; shares are 0 when nothing was read."""
    usage = np.asarray(usage, np.int64)
    total = int(usage.sum())
    top = np.sort(usage)[::-1][: max(1, -(-len(usage) // 100))]  # the most read 1% of entries
    return {"entries": len(usage), "retrievals": total,
            "top_entry_share": int(usage.max(initial=0)) / total if total else 0.0,
            "top_percent_share": int(top.sum()) / total if total else 0.0,
            "read_share": float((usage > 0).mean()) if len(usage) else 0.0}  # fmt: skip


def describe_spread(spread: dict[str, float | int]) -> str:
    """One line for a report: the top entry's and the top 1%'s share of the retrievals, the entries ever read."""
    return (f"{spread['retrievals']:,} retrievals: the top entry took {spread['top_entry_share']:.1%}, the top 1% "
            f"of entries {spread['top_percent_share']:.1%}; {spread['read_share']:.1%} of the "
            f"{spread['entries']:,} entries were ever read")


def memory_report(memory: FaissMemory, tokenizer: Decoder | None = None, top: int = 10) -> dict[str, Any]:
    """Statistics, settings, IVF occupancy summary, PCA variance, and the ``top`` most and least used entries
    (by retrievals, then attention mass) with their provenance decoded to text."""
    stats = memory.stats().to_dict()
    entries = memory.entries()
    order = np.lexsort((entries["ids"], entries["mass"], entries["usage"]))  # ascending usefulness
    occupancy = np.asarray(stats["cluster_occupancy"])
    pca = memory.pca
    report: dict[str, Any] = {
        "layer": memory.settings.layer_idx,
        "settings": memory.settings.to_dict(),
        "stats": stats,
        "occupancy": {
            "lists": len(occupancy),
            "empty_lists": int((occupancy == 0).sum()),
            "min": int(occupancy.min()) if len(occupancy) else 0,
            "max": int(occupancy.max()) if len(occupancy) else 0,
            "mean": float(occupancy.mean()) if len(occupancy) else 0.0,
        },
        "pca": None
        if pca is None
        else {
            "in_dim": pca.in_dim,
            "key_dim": pca.out_dim,
            "explained_variance": pca.explained_variance,
            "cumulative_variance": np.cumsum(pca.explained_variance_ratio).round(6).tolist(),
            "fit_error": pca.fit_error,
            "held_out_error": pca.held_out_error,
            "num_samples": pca.num_samples,
        },
        "usage_spread": usage_spread(entries["usage"]),
        "most_used": _describe(entries, order[::-1][:top], tokenizer),
        "least_used": _describe(entries, order[:top], tokenizer),
    }
    return report


def query_report(
    memory: FaissMemory, queries: Tensor | np.ndarray, tokenizer: Decoder | None = None, k: int | None = None
) -> list[list[dict]]:
    """What the memory returns for each query (Q, D) (e.g. the memory layer's hidden states of a prompt): per
    query, its hits with distance and decoded provenance. Does not record usage."""
    res = memory.search(queries, k)
    entries = memory.entries()
    row_of = {int(i): r for r, i in enumerate(entries["ids"])}
    out = []
    for q in range(res.ids.shape[0]):
        hits = []
        for j in range(res.ids.shape[1]):
            if res.hit[q, j]:
                item = _describe(entries, np.array([row_of[int(res.ids[q, j])]]), tokenizer)[0]
                hits.append({"distance": float(res.distances[q, j]), **item})
        out.append(hits)
    return out


def usage_figure(usage: np.ndarray, figure_cls: Any) -> Any:
    """Retrievals of each entry (M,), most read first, on log-log axes: a reader that spreads its reads gives
    a flat curve, one that collapsed a cliff after the first few entries. Never-read entries cannot sit on a log
    axis; the title counts them."""
    fig = figure_cls(figsize=(6, 3.5))
    ax = fig.add_subplot()
    ranked = np.sort(np.asarray(usage))[::-1]
    read = ranked[ranked > 0]
    if len(read):
        ax.plot(np.arange(1, len(read) + 1), read, marker=".", markersize=3, linewidth=1)
    else:
        ax.text(0.5, 0.5, "no entry was ever read", ha="center", transform=ax.transAxes)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("entry rank (most read first)")
    ax.set_ylabel("retrievals")
    spread = usage_spread(ranked)
    ax.set_title(f"usage: top entry {spread['top_entry_share']:.1%} of reads; {len(read):,} of {len(ranked):,} "
                 "entries ever read", fontsize=9)  # fmt: skip
    return fig


def plot_memory(memory: FaissMemory, out_dir: str | Path) -> list[Path]:
    """Write ``occupancy.png`` (entries per IVF list), ``usage.png`` (retrievals per entry, entries ranked by
    them, log-log: :func:`usage_figure`) and ``variance.png`` (cumulative PCA explained variance) into
    ``out_dir``; return their paths."""
    try:
        from matplotlib.figure import Figure  # object API: no pyplot, no global backend change
    except ImportError as err:
        raise ImportError("plot_memory needs matplotlib: pip install 's3cmn[eval]' (or matplotlib)") from err
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stats, entries = memory.stats(), memory.entries()
    paths = []

    fig = Figure(figsize=(6, 3.5))
    ax = fig.add_subplot()
    occupancy = stats.cluster_occupancy
    if occupancy:
        ax.bar(range(len(occupancy)), occupancy)
        ax.set_xlabel("IVF list")
        ax.set_ylabel("entries")
    else:
        ax.text(0.5, 0.5, f"exact search ({stats.entries} entries): no IVF lists yet", ha="center")
    ax.set_title(f"memory layer {memory.settings.layer_idx}: IVF list occupancy")
    paths.append(out / "occupancy.png")

    fig2 = usage_figure(entries["usage"], Figure)
    paths.append(out / "usage.png")

    fig3 = Figure(figsize=(6, 3.5))
    ax = fig3.add_subplot()
    if memory.pca is not None:
        curve = np.cumsum(memory.pca.explained_variance_ratio)
        ax.plot(np.arange(1, len(curve) + 1), curve)
        ax.axvline(memory.pca.out_dim, linestyle="--", color="gray")
        ax.set_xlabel("PCA components")
        ax.set_ylabel("cumulative explained variance")
    else:
        ax.text(0.5, 0.5, "no PCA fitted", ha="center")
    ax.set_title("key compression")
    paths.append(out / "variance.png")

    for figure, path in zip((fig, fig2, fig3), paths, strict=True):
        figure.tight_layout()
        figure.savefig(path, dpi=100)
    logger.info("wrote %s", ", ".join(str(p) for p in paths))
    return paths

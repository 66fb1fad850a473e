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


def memory_report(memory: FaissMemory, tokenizer: Decoder | None = None, top: int = 10) -> dict[str, Any]:
    """Statistics, settings, IVF occupancy summary, PCA variance, and the ``top`` most and least used entries
    (by retrievals, then attention mass) with their provenance decoded to text."""
    stats = memory.stats().to_dict()
    entries = memory.entries()
    order = np.lexsort((entries["ids"], entries["mass"], entries["usage"]))  # ascending usefulness
    occupancy = np.asarray(stats["cluster_occupancy"])
    pca = memory.pca
    report: dict[str, Any] = {
        "layer": memory.layer_idx,
        "settings": memory.settings(),
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


def plot_memory(memory: FaissMemory, out_dir: str | Path) -> list[Path]:
    """Write ``occupancy.png`` (entries per IVF list), ``usage.png`` (histogram of retrievals per entry) and
    ``variance.png`` (cumulative PCA explained variance) into ``out_dir``; return their paths."""
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
    ax.set_title(f"memory layer {memory.layer_idx}: IVF list occupancy")
    paths.append(out / "occupancy.png")

    fig2 = Figure(figsize=(6, 3.5))
    ax = fig2.add_subplot()
    usage = entries["usage"]
    ax.hist(usage, bins=min(50, max(1, int(usage.max(initial=0)) + 1)))
    ax.set_xlabel("retrievals per entry")
    ax.set_ylabel("entries")
    ax.set_title(f"usage distribution ({stats.entries} entries)")
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

"""Why the learned reader's retrievals collapse onto a few entries: a probe of one checkpoint's queries and keys.

For held-out text, every memory read's queries, as the read searches with them (``W_q h``, centred where the
model has ``memory_query_centering``, PCA-compressed, L2-normalised), are captured and searched exactly against
the store's keys. It reports, for the reads as trained, for centred queries and keys (``centred``: the mean
query, taken on the first half of the text, and the mean key subtracted before normalising; scored on the
second half), and for centred queries against the keys as stored (``centred_queries_only``):

- ``top1_share``: the share of queries whose nearest entry is the single most chosen entry;
- ``entries_read``: the share of entries that are some query's top-k hit (k = the store's top_k);
- ``query_anisotropy``: the mean cosine between a query and the mean query (1 = every query points the same
  way); ``key_anisotropy`` the same for the keys;
- ``mean_query_to_top_key``: the cosine between the mean query direction and the most chosen entry's key.

    python scripts/reader_probe.py CHECKPOINT --text HELDOUT.raw [--tokens 16384] [--out probe.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F


def spread(q: torch.Tensor, keys: torch.Tensor, k: int) -> dict[str, float]:
    """Top-1 share and the share of entries read in the top k, for normalised queries (N, d), keys (M, d)."""
    sims = q @ keys.T  # (N, M)
    top = sims.topk(min(k, keys.shape[0]), dim=-1).indices  # (N, k)
    counts = torch.bincount(top[:, 0], minlength=keys.shape[0])
    return {"top1_share": float(counts.max() / q.shape[0]), "top1_entry": int(counts.argmax()),
            "entries_read": float(torch.unique(top).numel() / keys.shape[0])}  # fmt: skip


def anisotropy(x: torch.Tensor) -> float:
    return float((x @ F.normalize(x.mean(0), dim=0)).mean())


def probe(checkpoint: Path, text: Path, tokens: int) -> dict[str, Any]:
    from s3cmn.cli.memory import _model_and_text

    model, data, window = _model_and_text(checkpoint, text, 0, 0, 8, "fit")
    model.eval()
    captured: dict[int, list[torch.Tensor]] = {}
    readers = {i: b for i, b in enumerate(model.model.layers) if hasattr(b, "memory_reader")}
    if not readers:
        raise SystemExit(f"{checkpoint} has no memory reader")
    hooks = []
    for i, block in readers.items():
        store = model.memory_bank.store(i)

        def hook(module, args, out, i=i, store=store, reader=block.memory_reader) -> None:  # the searched query
            raw = out.detach().float().reshape(-1, out.shape[-1])
            captured.setdefault(i, []).append(store.encode_queries(reader.centred(raw, store)))

        hooks.append(block.memory_reader.q_proj.register_forward_hook(hook))
    stream = data.stream[: tokens + 1]
    C = window["context_length"]
    with torch.no_grad():
        for start in range(0, stream.numel() - 1, C):
            model(stream[start : start + C][None], use_cache=False)
    for h in hooks:
        h.remove()
    out: dict[str, Any] = {"checkpoint": str(checkpoint), "text": str(text), "tokens": int(stream.numel() - 1),
                           "layers": {}}  # fmt: skip
    for i, parts in captured.items():
        store = model.memory_bank.store(i)
        keys = torch.from_numpy(store.entries()["keys"]).float()  # (M, d), normalised
        q = torch.cat(parts)  # (N, d)
        half = q.shape[0] // 2
        fit, score = q[:half], q[half:]
        k = store.settings.memory_top_k
        trained = spread(score, keys, k)
        centred_q = F.normalize(score - fit.mean(0), dim=-1)
        centred_k = F.normalize(keys - keys.mean(0), dim=-1)
        top_key = keys[trained["top1_entry"]]
        out["layers"][i] = {
            "entries": int(keys.shape[0]), "queries": int(score.shape[0]), "top_k": int(k),
            "as_trained": trained, "centred": spread(centred_q, centred_k, k),
            "centred_queries_only": spread(centred_q, keys, k),
            "query_anisotropy": anisotropy(score), "key_anisotropy": anisotropy(keys),
            "mean_query_to_top_key": float(F.normalize(fit.mean(0), dim=0) @ top_key),
            "mean_query_to_mean_key": float(F.normalize(fit.mean(0), dim=0) @ F.normalize(keys.mean(0), dim=0)),
        }  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--text", type=Path, required=True, help="held-out text (never the test split)")
    parser.add_argument("--tokens", type=int, default=16384)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    result = probe(args.checkpoint, args.text, args.tokens)
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

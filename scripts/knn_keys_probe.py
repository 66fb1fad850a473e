"""Which hidden state makes the best kNN-LM key? The held-out NLL gain of knn for several key choices.

A probe for issue 15 (the small preset's knn gain), not part of the package. Keys for every position of the
training text and queries for every position of the held-out text (the same sliding windows as evaluation),
exact L2 search (FAISS IndexFlatL2, top 256), then the best k, temperature and lambda on the held-out text with
the package's own fitting functions. ``hidden_states[i]`` is the input of block i, so ``block-2`` is the output
of the third of four blocks.

    python scripts/knn_keys_probe.py runs/small10q/best 256 [TRAIN_TEXT HELDOUT_TEXT]

TRAIN_TEXT / HELDOUT_TEXT (default ``runs/honest/train.raw`` and ``runs/honest/heldout.raw``): the training
text and the text held out from it, as ``s3cmn.data.validation.load_training_texts`` splits ``wiki.valid.raw``.
Its output for ``runs/small10q`` is ``results/memory/small10q/knn_keys.txt``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import faiss
import numpy as np
import torch

from s3cmn.data.windows import sliding_windows, window_batches
from s3cmn.evaluation.perplexity import prepare_text
from s3cmn.evaluation.run import load_eval_tokenizer
from s3cmn.modeling.loading import load_model
from s3cmn.nexttoken.fit import TEMPERATURE_FACTORS, best_lambda, restrict, target_prob
from s3cmn.nexttoken.readout import Neighbours
from s3cmn.ops.nll import nll_float64
from s3cmn.run_config import DataConfig

TRAIN, HELDOUT = "runs/honest/train.raw", "runs/honest/heldout.raw"  # defaults of the optional arguments


@torch.no_grad()
def states(model, tokenizer, path: str, context: int) -> tuple[dict[str, np.ndarray], torch.Tensor, torch.Tensor]:
    """Candidate keys (final normed state, block-2 output), targets and log p_LM(target) for every position."""
    stream = prepare_text(Path(path).read_text(), tokenizer, 0, None, model.config.vocab_size).stream
    keys: dict[str, list[torch.Tensor]] = {"final": [], "block-2": []}
    targets, lm = [], []
    for batch in window_batches(sliding_windows(stream.numel(), context, context // 2), 8):
        ids = torch.stack([stream[w.begin : w.end] for w in batch])
        B, T = ids.shape
        n = batch[0].num_scored
        out = model.model(ids, use_cache=False, memory_bank=None, output_hidden_states=True)

        def scored(x: torch.Tensor, n: int = n, B: int = B, T: int = T) -> torch.Tensor:
            return x[:, T - n - 1 : T - 1].reshape(B * n, -1).float()

        hidden = scored(out["hidden"])
        keys["final"].append(hidden)
        keys["block-2"].append(scored(out["hidden_states"][-2]))
        y = ids[:, T - n :].reshape(-1)
        targets.append(y)
        lm.append(-nll_float64(model.lm_head(hidden), y))
    return {k: torch.cat(v).numpy() for k, v in keys.items()}, torch.cat(targets), torch.cat(lm)


def best_knn(keys: np.ndarray, values: np.ndarray, queries: np.ndarray, targets: torch.Tensor,
             lm: torch.Tensor) -> tuple[float, int, float, float]:
    """(held-out log-likelihood, k, temperature factor, lambda) of the best kNN mixture."""
    index = faiss.IndexFlatL2(keys.shape[1])
    index.add(keys)
    distances, ids = index.search(queries, 256)
    neighbours = Neighbours(torch.from_numpy(distances), torch.from_numpy(values[ids]))
    best = None
    for k in (16, 64, 256):
        nb = restrict(neighbours, torch.zeros(len(queries), dtype=torch.long), None, k)
        median = max(float(nb.distances[:, 0].median()), 1e-6)
        for factor in TEMPERATURE_FACTORS:
            lam, ll = best_lambda(lm, *target_prob(nb, targets, median * factor))
            if best is None or ll > best[0]:
                best = (ll, k, factor, lam)
    return best


def main() -> None:
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    checkpoint, context = Path(sys.argv[1]), int(sys.argv[2])
    train_text, heldout_text = sys.argv[3:5] if len(sys.argv) >= 5 else (TRAIN, HELDOUT)
    model = load_model(checkpoint)
    tokenizer, _ = load_eval_tokenizer(checkpoint, DataConfig())
    start = time.time()
    train, train_targets, _ = states(model, tokenizer, train_text, context)
    held, held_targets, held_lm = states(model, tokenizer, heldout_text, context)
    off = float(-held_lm.mean())
    print(f"states {time.time() - start:.0f} s, {len(train_targets):,} keys, {len(held_targets):,} queries, "
          f"off NLL {off:.4f}")
    for name in ("final", "block-2", "final-cos", "block-2-cos"):
        base = name.removesuffix("-cos")
        keys, queries = np.ascontiguousarray(train[base]), np.ascontiguousarray(held[base])
        if name.endswith("-cos"):
            keys = keys / np.linalg.norm(keys, axis=1, keepdims=True)
            queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
        ll, k, factor, lam = best_knn(keys, train_targets.numpy(), queries, held_targets, held_lm)
        print(f"{name}: knn NLL {-ll:.4f} (gain {-ll - off:+.4f}) k {k} temperature x{factor:.3f} lambda {lam}")


if __name__ == "__main__":
    main()

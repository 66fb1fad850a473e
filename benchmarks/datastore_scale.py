"""Scale of the kNN datastore: build and query a >= 5M-entry IVFPQ index on this machine.

Vectors: the real final hidden states of a checkpoint's datastore (``s3cmn-memory build``; 211k states of
runs/tiny10h/best over /work/honest/train.raw), tiled to N entries, each copy perturbed with Gaussian noise
(sigma = ``--noise`` x the per-dimension standard deviation) so that no two entries coincide. Generated in
chunks from seeds, never all in RAM. Reports build time (train + add), bytes per entry (serialised index),
recall@k of IVFPQ against exact search (IndexFlatL2 over the same N vectors, chunk by chunk) on a query
subset, and query latency at batch 1 and 256 for a few nprobe values.

    python benchmarks/datastore_scale.py --datastore runs/tiny10h/best/nexttoken/datastore --entries 5000000 \\
        --out results/memory/datastore_scale.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np


def real_states(datastore: Path) -> np.ndarray:
    """The stored keys of a saved IVFFlat / Flat datastore, (n, d) float32."""
    from s3cmn.memory.index import import_faiss

    faiss = import_faiss()
    index = faiss.read_index(str(datastore / "index.faiss"))
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.make_direct_map()
        return ivf.reconstruct_n(0, ivf.ntotal)
    return index.reconstruct_n(0, index.ntotal)


def chunk(base: np.ndarray, sigma: np.ndarray, start: int, size: int, seed: int) -> np.ndarray:
    """Entries start .. start + size - 1: base[i mod n] + noise drawn from seed + chunk number."""
    rng = np.random.default_rng(seed + start)
    rows = base[np.arange(start, start + size) % len(base)]
    return (rows + rng.standard_normal(rows.shape, dtype=np.float32) * sigma).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datastore", type=Path, required=True, help="a saved datastore (its keys are the states)")
    parser.add_argument("--entries", type=int, default=5_000_000)
    parser.add_argument("--nlist", type=int, default=2048)
    parser.add_argument("--pq", type=int, default=32, help="PQ sub-quantizers (bytes per code)")
    parser.add_argument("--train", type=int, default=100_000)
    parser.add_argument("--noise", type=float, default=0.1)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--chunk", type=int, default=250_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("results/memory/datastore_scale.json"))
    args = parser.parse_args()

    from s3cmn.memory.index import import_faiss

    faiss = import_faiss()
    faiss.omp_set_num_threads(args.threads)
    base = real_states(args.datastore)
    n, d = base.shape
    sigma = (args.noise * base.std(0)).astype(np.float32)
    starts = range(0, args.entries, args.chunk)
    result = {"entries": args.entries, "dim": d, "real_states": n, "noise": args.noise,
              "index": f"IVF{args.nlist},PQ{args.pq}", "machine": {"cpu_count": os.cpu_count(),
              "threads": args.threads, "platform": platform.platform(), "faiss": faiss.__version__}}  # fmt: skip

    # 1. build: train the coarse quantizer and PQ on a sample, then add every chunk
    t0 = time.perf_counter()
    index = faiss.index_factory(d, result["index"], faiss.METRIC_L2)
    faiss.extract_index_ivf(index).cp.seed = 0
    index.train(chunk(base, sigma, 0, args.train, seed=1))
    t_train = time.perf_counter() - t0
    for s in starts:
        index.add(chunk(base, sigma, s, min(args.chunk, args.entries - s), seed=0))
    result["build"] = {"train_seconds": t_train, "add_seconds": time.perf_counter() - t0 - t_train,
                       "total_seconds": time.perf_counter() - t0, "train_sample": args.train}  # fmt: skip
    blob = faiss.serialize_index(index)
    result["bytes_per_entry"] = {"index": blob.size / args.entries, "with_int32_value_int64_position": blob.size /
                                 args.entries + 12, "flat_float32": 4 * d + 12}  # fmt: skip
    del blob

    # 2. recall@k against exact search over the same vectors (chunk by chunk, results merged)
    rng = np.random.default_rng(7)
    queries = base[rng.choice(n, args.queries, replace=False)]
    queries = (queries + rng.standard_normal(queries.shape, dtype=np.float32) * sigma).astype(np.float32)
    t0 = time.perf_counter()
    best_d = np.full((args.queries, args.k), np.inf, np.float32)
    best_i = np.full((args.queries, args.k), -1, np.int64)
    for s in starts:
        flat = faiss.IndexFlatL2(d)
        flat.add(chunk(base, sigma, s, min(args.chunk, args.entries - s), seed=0))
        dist, ids = flat.search(queries, args.k)
        all_d, all_i = np.concatenate([best_d, dist], 1), np.concatenate([best_i, ids + s], 1)
        order = np.argsort(all_d, 1)[:, : args.k]
        best_d, best_i = np.take_along_axis(all_d, order, 1), np.take_along_axis(all_i, order, 1)
    result["exact_search_seconds"] = time.perf_counter() - t0

    # 3. recall and latency for a few nprobe values
    ivf = faiss.extract_index_ivf(index)
    result["search"] = []
    for nprobe in (8, 32, 128):
        ivf.nprobe = nprobe
        _, ids = index.search(queries, args.k)
        recall = float(np.mean([len(set(a) & set(b)) / args.k for a, b in zip(ids, best_i, strict=True)]))
        top1 = float(np.mean(ids[:, 0] == best_i[:, 0]))
        single = []
        for q in queries[:100]:
            t = time.perf_counter()
            index.search(q[None], args.k)
            single.append(time.perf_counter() - t)
        batch = np.repeat(queries, 2, 0)[:256] if args.queries < 256 else queries[:256]
        batched = []
        for _ in range(5):
            t = time.perf_counter()
            index.search(batch, args.k)
            batched.append(time.perf_counter() - t)
        result["search"].append({"nprobe": nprobe, f"recall_at_{args.k}": recall, "top1_agreement": top1,
                                 "batch1_ms_median": 1e3 * statistics.median(single),
                                 "batch256_ms_median": 1e3 * statistics.median(batched),
                                 "batch256_us_per_query": 1e6 * statistics.median(batched) / 256})  # fmt: skip
        print(json.dumps(result["search"][-1]))
    with open("/proc/self/status") as f:
        result["peak_rss_mb"] = next(int(x.split()[1]) for x in f if x.startswith("VmHWM")) / 1024
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in result.items() if k != "search"}, indent=2))


if __name__ == "__main__":
    main()

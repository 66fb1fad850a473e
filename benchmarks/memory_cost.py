"""What the external memory costs: FAISS search latency and recall, and the end-to-end cost per training step.

Part 1, search (raw FAISS, the index types the memory can use): N = 10k, 100k (and 1M in full mode) keys of
width d (the tiny preset's PCA width, 32), inner-product metric on unit vectors (cosine, as the memory's
``memory_metric = "ip"``); 1,024 fresh queries, k = ``memory_top_k`` (8). Rows:

- ``Flat``: ``IndexFlatIP``, exact; its results are the ground truth for recall@k;
- ``IVFFlat``: ``IndexIVFFlat`` (spherical k-means, as ``s3cmn.memory.index.build_ivf``);
- ``IVF-SQ8``: ``IndexIVFScalarQuantizer(QT_8bit)`` (one byte per dimension instead of four).

nlist = the largest power of 2 <= min(4 sqrt(N), N / 39, 1024) (FAISS wants ~39 training points per list; the
1,024 cap keeps the 1M build short), trained on min(N, 64 nlist) keys; nprobe = ``memory_nprobe`` (8), with
a sweep (1, 8, 32) in full mode. Latency: one search call with all queries (the memory searches B·T
queries at once), µs per query; and one query per call (median over 64 calls). Times are medians after a
warm-up call. recall@k = |found ∩ exact| / k, averaged over queries.

Data: synthetic keys: a mixture of 2,000 Gaussian clusters in R^d (centres N(0, I), spread ``--noise`` = 1.0:
overlapping clusters), normalised; queries are fresh draws of the same mixture. Recall at a given nprobe
depends strongly on how clustered the keys are (at noise 0.5, IVFFlat nprobe 8 finds ~99% at 100k; at 2.0,
~33%); real PCA-compressed hidden states of a trained model were not available here.

Part 2, end-to-end: ``S3CMNForCausalLM`` with the tiny preset and memory on, batch B x T = 8 x 512 (quick:
1 x 512): one training step (forward with the memory read and write, backward, clip, AdamW step) with the memory
on (``use_memory=True, write_memory=True``) against the same model with it off (``use_memory=False,
write_memory=False``), alternated on/off to spread load changes; the memory is filled to its capacity
(IVF phase) before timing. Overhead = median(on) / median(off) - 1; the memory issue's target is <= 25%.

    python benchmarks/memory_cost.py --quick --out results/memory-quick    # 10k, 100k; B = 1
    python benchmarks/memory_cost.py --out results/memory                  # + 1M, nprobe sweep; B = 8

Writes ``memory_cost.json`` and ``memory_cost.md``.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import statistics
import time
from typing import Any

# Before torch loads OpenMP: idle threads sleep instead of spinning (see compare.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from s3cmn.evaluation.benchmarking import (  # noqa: E402
    close_meta,
    fmt_load,
    parse_overrides,
    repeat_ms,
    run_meta,
    write_results,
)
from s3cmn.model_config import S3CMNConfig  # noqa: E402

logger = logging.getLogger("memory_cost")
TARGET_OVERHEAD = 0.25


# ------------------------------------------------------------------------------------------------------
# part 1: search


def unit_keys(n: int, d: int, seed: int, sample_seed: int, noise: float, chunk: int = 200_000) -> np.ndarray:
    """``n`` unit vectors (n, d) float32: 2,000 N(0, I) centres (set by ``seed``) + ``noise`` x N(0, I), normalised."""
    centres = np.random.default_rng(seed).standard_normal((2000, d)).astype(np.float32)
    rng = np.random.default_rng(sample_seed)
    out = np.empty((n, d), np.float32)
    for i in range(0, n, chunk):
        m = min(chunk, n - i)
        x = centres[rng.integers(0, 2000, m)] + noise * rng.standard_normal((m, d), dtype=np.float32)
        out[i : i + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def pick_nlist(n: int) -> int:
    limit = min(4 * math.sqrt(n), n / 39, 1024)
    return 2 ** int(math.log2(max(limit, 1)))


def recall_at(found: np.ndarray, exact: np.ndarray) -> float:
    k = exact.shape[1]
    return float(np.mean([len(set(f) & set(e)) / k for f, e in zip(found, exact, strict=True)]))



def build_index(kind: str, keys: np.ndarray, nlist: int, seed: int) -> tuple[Any, float]:
    """An index of ``kind`` holding ``keys``, and its build time (training + adding) in seconds."""
    import faiss

    d = keys.shape[1]
    start = time.perf_counter()
    if kind == "Flat":
        index = faiss.IndexFlatIP(d)
    else:
        quantizer = faiss.IndexFlatIP(d)
        if kind == "IVFFlat":
            index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        else:
            index = faiss.IndexIVFScalarQuantizer(quantizer, d, nlist, faiss.ScalarQuantizer.QT_8bit,
                                                  faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        index.cp.spherical = True
        train = keys[np.random.default_rng(seed).permutation(len(keys))[: min(len(keys), 64 * nlist)]]
        index.train(train)
    index.add(keys)  # the Python wrapper keeps the quantizer alive (referenced_objects)
    return index, time.perf_counter() - start


def search_rows(n: int, d: int, k: int, probes: list[int], num_queries: int, repeats: int,
                single_queries: int, noise: float) -> list[dict[str, Any]]:
    """Latency, recall@k, build time and bytes of Flat / IVFFlat / IVF-SQ8 over ``n`` keys."""
    import faiss

    keys = unit_keys(n, d, seed=0, sample_seed=1, noise=noise)
    queries = unit_keys(num_queries, d, seed=0, sample_seed=2, noise=noise)
    nlist = pick_nlist(n)
    rows, exact = [], None
    for kind in ("Flat", "IVFFlat", "IVF-SQ8"):
        index, build_s = build_index(kind, keys, nlist, seed=0)
        size = int(faiss.serialize_index(index).nbytes)
        for nprobe in ([None] if kind == "Flat" else probes):
            if nprobe is not None:
                index.nprobe = nprobe
            found = index.search(queries, k)[1]
            exact = found if exact is None else exact
            batch_ms = repeat_ms(lambda: index.search(queries, k), repeats, "median")  # noqa: B023
            single = []
            for i in range(single_queries + 1):  # the first call is a warm-up
                one = queries[i % num_queries : i % num_queries + 1]
                start = time.perf_counter()
                index.search(one, k)
                single.append(time.perf_counter() - start)
            rows.append({"entries": n, "index": kind, "d": d, "k": k, "nlist": None if kind == "Flat" else nlist,
                         "nprobe": nprobe, "batch_queries": num_queries, "batch_ms": batch_ms,
                         "us_per_query_batched": batch_ms * 1e3 / num_queries,
                         "us_single_query": statistics.median(single[1:]) * 1e6,
                         "recall_at_k": recall_at(found, exact), "build_s": build_s, "bytes": size})
            logger.info("%s N=%d nprobe=%s: %.1f ms / %d queries, recall %.3f", kind, n, nprobe, batch_ms,
                        num_queries, rows[-1]["recall_at_k"])
    return rows


# ------------------------------------------------------------------------------------------------------
# part 2: training step with the memory on and off


def training_step_cost(config: S3CMNConfig, batch: int, T: int, repeats: int,
                       blas_threads: int | None = None) -> dict[str, Any]:
    """Median training-step time with the memory on and off (same model, alternated), and the overhead.

    ``blas_threads``: cap numpy's BLAS/LAPACK threads (threadpoolctl) during the measurement; None = as is.
    """
    import contextlib

    from s3cmn.modeling.lm import S3CMNForCausalLM

    if blas_threads is not None:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(blas_threads, user_api="blas"):
            return {**training_step_cost(config, batch, T, repeats), "blas_threads": blas_threads}
    with contextlib.suppress(ImportError):
        from threadpoolctl import threadpool_info

        blas_threads = max((i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"), default=None)

    torch.manual_seed(0)
    model = S3CMNForCausalLM(config)
    g = torch.Generator().manual_seed(1)
    model.eval()
    with torch.no_grad():  # fill every memory to its capacity (IVF when capacity >= 39 nlist), as in training
        for _ in range(64):
            if all(m.num_entries >= m.capacity for _, m in model.memory_bank):
                break
            model(torch.randint(0, config.vocab_size, (8, T), generator=g), use_cache=False, write_memory=True)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, config.vocab_size, (batch, T), generator=g)  # (B, T)
    search_ms: list[float] = []
    write_ms: list[float] = []
    commit = model.memory_bank.commit

    def timed_write(*a: Any, **kw: Any) -> int:  # the forward calls memory_bank.commit: time it on this instance
        start = time.perf_counter()
        written = commit(*a, **kw)
        write_ms.append((time.perf_counter() - start) * 1e3)
        return written

    model.memory_bank.commit = timed_write

    def step(memory: bool) -> None:
        out = model(ids, labels=ids, use_cache=False, use_memory=memory, write_memory=memory)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if memory and out.memory_stats:
            search_ms.append(sum(s.latency_ms for s in out.memory_stats))

    times: dict[bool, dict[str, list[float]]] = {True: {"wall": [], "cpu": []}, False: {"wall": [], "cpu": []}}
    for i in range(repeats + 1):
        for memory in (True, False) if i % 2 == 0 else (False, True):
            w, c = time.perf_counter(), time.process_time()
            step(memory)
            if i > 0:  # round 0 is the warm-up of both modes
                times[memory]["wall"].append(time.perf_counter() - w)
                times[memory]["cpu"].append(time.process_time() - c)
    on, off = ({k: statistics.median(v) for k, v in times[m].items()} for m in (True, False))
    mem = model.memory_bank.items()[0][1]
    overhead = on["wall"] / off["wall"] - 1
    return {"batch": batch, "seq_len": T, "repeats": repeats, "step_s_memory_on": on["wall"],
            "step_s_memory_off": off["wall"], "cpu_s_memory_on": on["cpu"], "cpu_s_memory_off": off["cpu"],
            "overhead": overhead, "overhead_cpu": on["cpu"] / off["cpu"] - 1,
            "faiss_search_ms_per_step": statistics.median(search_ms[1:] or search_ms),
            "memory_write_ms_per_step": statistics.median(write_ms[1:] or write_ms),
            "memory_write_ms": write_ms, "target_overhead": TARGET_OVERHEAD, "met": overhead <= TARGET_OVERHEAD,
            "blas_threads": blas_threads,
            "memory": {"entries": mem.num_entries, "capacity": mem.capacity, "ivf": bool(mem.is_ivf),
                       "layers": model.memory_bank.layers, "write_stride": config.memory_write_stride,
                       "top_k": config.memory_top_k, "nprobe": config.memory_nprobe}}


# ------------------------------------------------------------------------------------------------------
# report and command line


def markdown(result: dict[str, Any]) -> str:
    lines = [f"Search: unit keys of width d = {result['settings']['dim']}, inner product, k = "
             f"{result['settings']['k']}, {result['settings']['queries']:,} queries; FAISS threads "
             f"{result['settings']['faiss_threads']}; medians after a warm-up.", "",
             "| entries | index | nlist | nprobe | µs/query (batched) | µs (one query) | recall@k | build s | MiB |",
             "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in result["search"]:
        lines.append(f"| {r['entries']:,} | {r['index']} | {r['nlist'] or '-'} | {r['nprobe'] or '-'} | "
                     f"{r['us_per_query_batched']:.1f} | {r['us_single_query']:.0f} | {r['recall_at_k']:.3f} | "
                     f"{r['build_s']:.1f} | {r['bytes'] / 2**20:.1f} |")
    for s in result["training_step"]:
        lines += ["", f"Training step, tiny preset with memory, B x T = {s['batch']} x {s['seq_len']}, numpy BLAS "
                  f"threads {s['blas_threads']} (median of {s['repeats']}, alternated; memory {s['memory']['entries']}/"
                  f"{s['memory']['capacity']} entries, {'IVF' if s['memory']['ivf'] else 'exact'}, layers "
                  f"{s['memory']['layers']}):", "",
                  "| memory | step s | CPU s | FAISS search ms / step | memory write ms / step |",
                  "| --- | ---: | ---: | ---: | ---: |",
                  f"| off | {s['step_s_memory_off']:.3f} | {s['cpu_s_memory_off']:.3f} | - | - |",
                  f"| on | {s['step_s_memory_on']:.3f} | {s['cpu_s_memory_on']:.3f} | "
                  f"{s['faiss_search_ms_per_step']:.1f} | {s['memory_write_ms_per_step']:.1f} |", "",
                  f"Overhead of the memory: {100 * s['overhead']:+.1f}% wall ({100 * s['overhead_cpu']:+.1f}% CPU "
                  f"time); target <= {100 * s['target_overhead']:.0f}%: {'met' if s['met'] else 'NOT met'}."]
    lines += ["", fmt_load(result["meta"]) + f"; wall time {result['meta']['wall_s']:.0f} s.", ""]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="10k and 100k keys, nprobe 8, 1 repeat; step at B = 1")
    p.add_argument("--out", default="results/memory", help="output folder")
    p.add_argument("--threads", type=int, default=2, help="torch and FAISS threads")
    p.add_argument("--sizes", type=int, nargs="+", default=None, help="entries (default 10k 100k 1M; quick 10k 100k)")
    p.add_argument("--queries", type=int, default=1024)
    p.add_argument("--noise", type=float, default=1.0, help="cluster spread of the synthetic keys (centres N(0, I))")
    p.add_argument("--nprobe", type=int, nargs="+", default=None, help="default: 1 8 32 (quick: the preset's 8)")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--override", nargs="*", default=[], metavar="FIELD=VALUE", help="s3cmn config overrides (JSON)")
    p.add_argument("--batch", type=int, default=None, help="training-step batch (default 8; quick 1)")
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--step-repeats", type=int, default=None, help="timed steps per mode (default 4; quick 2)")
    args = p.parse_args(argv)
    args.sizes = args.sizes or ([10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000])
    args.batch = args.batch or (1 if args.quick else 8)
    args.step_repeats = args.step_repeats or (2 if args.quick else 4)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import faiss

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    start = time.perf_counter()
    meta = run_meta(args.threads, args.quick, argv)
    config = S3CMNConfig.from_preset(args.preset, **{**parse_overrides(args.override), "use_memory": True})
    probes = args.nprobe or ([config.memory_nprobe] if args.quick else [1, config.memory_nprobe, 32])
    repeats = 1 if args.quick else 3
    d, k = config.memory_compression_dim or config.hidden_dim, config.memory_top_k
    search = [row for n in args.sizes for row in search_rows(n, d, k, probes, args.queries, repeats,
                                                             single_queries=16 if args.quick else 64, noise=args.noise)]
    steps = [training_step_cost(config, args.batch, args.seq_len, args.step_repeats)]
    if not args.quick:  # the diagnosis: the memory's PCA refit (numpy eigh) with one BLAS thread
        steps.append(training_step_cost(config, args.batch, args.seq_len, args.step_repeats, blas_threads=1))
    close_meta(meta, start)
    result = {"meta": meta, "settings": {"dim": d, "k": k, "queries": args.queries, "nprobe": probes,
                                         "faiss_threads": args.threads, "preset": args.preset,
                                         "overrides": parse_overrides(args.override)},
              "search": search, "training_step": steps}
    result["settings"]["noise"] = args.noise
    md = markdown(result)
    path = write_results(args.out, "memory_cost", result, md)
    print(md)
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()

"""The FAISS memory at scale on the CPU: batched search latency and recall, and the cost of a memory read.

Part 1, search: N = 100,000 stored entries, values of width D compressed by PCA to d-dim keys; 1,024 queries
at k = 8. Rows: exact search (IndexFlatIP over the same keys) and FaissMemory with IVFFlat at the tiny preset's
nlist and at the default nlist, each at nprobe = 8 (the default). Recall@8 is measured against the exact
search over the same keys. "FAISS" times the index search alone; "memory.search" adds the key/value gather.

Part 2, read cost: MemoryReader forward + backward at B x T = 8 x 512 and D = hidden_dim, plus the write of
that segment (select_write + FaissMemory.write), against a memory holding the tiny preset's memory_size
entries and one holding 100,000.

Data: synthetic hidden states (no trained model here): a mixture of 2,000 Gaussian clusters in a
48-dimensional subspace of R^D plus isotropic noise; queries are fresh draws from the same mixture.

    python benchmarks/bench_memory.py --quick      # < 1 min: 3 repeats
    python benchmarks/bench_memory.py              # 20 repeats and an nprobe sweep
    python benchmarks/bench_memory.py --quick --faiss-threads 1

Times are the best of the repeats (the machine may be shared); memory writes always add and remove on one
FAISS thread (see ``s3cmn.memory.index.single_threaded``).
"""

from __future__ import annotations

import argparse
import time

import faiss
import numpy as np
import torch

from s3cmn.evaluation.benchmarking import repeat_ms
from s3cmn.memory import FaissMemory, MemoryReader, select_write
from s3cmn.memory.settings import MemorySettings
from s3cmn.model_config import S3CMNConfig


def hidden_states(n: int, dim: int, seed: int, sample_seed: int) -> np.ndarray:
    """``n`` synthetic hidden states (n, dim): 2,000 clusters in a 48-dim subspace + noise."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((dim, 48)))[0].T  # (48, dim)
    centers = rng.standard_normal((2000, 48)) * 2.0
    rng = np.random.default_rng(sample_seed)
    z = centers[rng.integers(0, 2000, n)] + 0.5 * rng.standard_normal((n, 48))
    return (z @ basis + 0.1 * rng.standard_normal((n, dim))).astype(np.float32)



def recall_at(found: np.ndarray, exact: np.ndarray) -> float:
    k = exact.shape[1]
    return float(np.mean([len(set(f) & set(e)) / k for f, e in zip(found, exact, strict=True)]))


def search_table(config: S3CMNConfig, n: int, num_queries: int, repeats: int, sweep: bool) -> list[str]:
    D, d, k = config.hidden_dim, config.memory_compression_dim, config.memory_top_k
    values = hidden_states(n, D, seed=0, sample_seed=1)
    queries = hidden_states(num_queries, D, seed=0, sample_seed=2)
    rows = []
    exact_ids = None
    # nlist = n makes 39 * nlist > n: that memory stays in its exact phase (IndexIDMap(IndexFlatIP)).
    for nlist, label in [(n, "exact (IndexFlatIP)"), (config.num_clusters, "IVFFlat, tiny preset nlist"),
                         (128, "IVFFlat, default nlist")]:  # fmt: skip
        mem = FaissMemory(MemorySettings(dim=D, memory_size=n, memory_max_size=n, num_clusters=nlist, memory_top_k=k,
                                         memory_nprobe=config.memory_nprobe, memory_compression_dim=d,
                                         max_retrieval_distance=2.0))  # fmt: skip
        start = time.perf_counter()
        mem.write(values)  # one write: PCA fit, then IVF training (or a flat index)
        build_s = time.perf_counter() - start
        q = mem.encode(queries)  # the PCA is fitted on the same values by every memory: same keys
        probes = [1, 2, 4, 8, 16, 32] if (sweep and nlist == 128) else [config.memory_nprobe]
        for nprobe in probes if mem.is_ivf else ["-"]:
            if mem.is_ivf:
                mem.index.nprobe = nprobe
            found = mem.search(q, k, encoded=True).ids.numpy()
            exact_ids = found if exact_ids is None else exact_ids
            faiss_ms = repeat_ms(lambda: mem.index.search(q, k), repeats)  # noqa: B023
            memory_ms = repeat_ms(lambda: mem.search(q, k, encoded=True), repeats)  # noqa: B023
            stats = mem.stats()
            rows.append(
                f"| {label} | {nlist if mem.is_ivf else '-'} | {nprobe} | {faiss_ms:.1f} | {memory_ms:.1f} | "
                f"{recall_at(found, exact_ids):.3f} | {build_s:.1f} | {stats.bytes_total / 2**20:.1f} |"
            )
    header = [
        f"Search: {n:,} entries, D = {D} -> d = {d} (PCA explained variance {stats.pca_explained_variance:.3f}), "
        f"{num_queries:,} queries, k = {k}, faiss threads = {faiss.omp_get_max_threads()}",
        "",
        "| index | nlist | nprobe | FAISS ms | memory.search ms | recall@8 | build s | MiB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    return header + rows


def read_table(config: S3CMNConfig, sizes: list[int], batch: int, seq: int, repeats: int) -> list[str]:
    D = config.hidden_dim
    reader = MemoryReader(config, config.num_layers - 1)
    g = torch.Generator().manual_seed(0)
    h = torch.from_numpy(hidden_states(batch * seq, D, seed=0, sample_seed=3)).view(batch, seq, D)
    h.requires_grad_()
    ids = torch.randint(0, config.vocab_size, (batch, seq), generator=g)
    rows = [
        f"Read cost: MemoryReader forward + backward and the segment's write, B x T = {batch} x {seq}, "
        f"D = {D}, write stride {config.memory_write_stride}",
        "",
        "| entries | index | read fwd+bwd ms | write ms | hit rate |",
        "| ---: | --- | ---: | ---: | ---: |",
    ]
    for n in sizes:
        mem = FaissMemory(MemorySettings(dim=D, memory_size=n, memory_max_size=n,
                                         num_clusters=config.num_clusters if n < 10**5 else 128,
                                         memory_top_k=config.memory_top_k, memory_nprobe=config.memory_nprobe,
                                         memory_compression_dim=config.memory_compression_dim))  # fmt: skip
        mem.write(hidden_states(n, D, seed=0, sample_seed=4))

        def read() -> None:
            for p in reader.parameters():
                p.grad = None
            delta, _ = reader(h, mem)  # noqa: B023
            delta.sum().backward()

        def write() -> None:
            values, prov = select_write(h, ids, config.memory_write_stride)
            mem.write(values, prov)  # noqa: B023

        read_ms = repeat_ms(read, repeats)
        _, stats = reader(h, mem, record_usage=False)
        write_ms = repeat_ms(write, repeats)
        rows.append(f"| {n:,} | {'ivf' if mem.is_ivf else 'exact'} | {read_ms:.1f} | {write_ms:.1f} | "
                    f"{stats.hit_rate:.2f} |")  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 repeats, no nprobe sweep (< 1 min)")
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1024)
    parser.add_argument("--faiss-threads", type=int, default=None, help="faiss OpenMP threads (default: all)")
    args = parser.parse_args()
    if args.faiss_threads is not None:
        faiss.omp_set_num_threads(args.faiss_threads)
    torch.manual_seed(0)
    config = S3CMNConfig.from_preset("tiny")
    repeats = 3 if args.quick else 20
    print("\n".join(search_table(config, args.entries, args.queries, repeats, sweep=not args.quick)))
    print()
    print("\n".join(read_table(config, [config.memory_size, args.entries], 8, 512, repeats)))


if __name__ == "__main__":
    main()

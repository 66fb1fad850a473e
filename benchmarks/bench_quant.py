"""fp32 vs 8-bit (torch dynamic int8, bitsandbytes LLM.int8) in one run: size on disk, generation speed,
peak memory and WikiText-2 perplexity.

Every variant is saved to disk first (fp32: ``save_pretrained``; int8: ``save_quantized``, memories in SQ8),
then measured in a fresh worker process that loads it, so the peak RSS of each is its own:
- size: bytes of the saved folder (weights, config, manifest, memory);
- tokens/s: greedy generation of ``--new-tokens`` tokens after a 16-token prompt, batch 1, best of
  ``--repeats`` after a warm-up (``--clock cpu`` counts process CPU time: steadier on a shared machine);
- RSS: the worker's peak resident set (MB; imports and the perplexity pass's logits take most of it), and
  "loaded": how much a second load of the model adds to the resident set (the first pays the lazy imports;
  freed heap is returned with malloc_trim before reading it: Linux / glibc only);
- perplexity: on the first ``--ppl-tokens`` tokens of wiki.test.raw (bert-base-uncased vocabulary), blocks of
  ``--seq-len``. An untrained model's perplexity change says nothing: pass ``--checkpoint`` (a
  ``save_pretrained`` folder of a trained model, with its tokenizer) for a meaningful one;
- memory: recall@k of the SQ8 FAISS memory and of the float IVF index against exact search on seeded data,
  index sizes and search latency.

    python benchmarks/bench_quant.py --quick                       # small preset, untrained, < 2 min
    python benchmarks/bench_quant.py --checkpoint runs/small/final --ppl-tokens 50000
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KB


def rss_mb() -> float:
    """The current resident set (Linux /proc), MB."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


# --- worker: one variant in its own process ---------------------------------------------------------------
def worker(args: argparse.Namespace) -> None:
    from transformers import AutoModelForCausalLM

    import s3cmn  # noqa: F401
    from s3cmn.quantization import load_quantized

    torch.set_num_threads(args.threads)
    folder = Path(args.worker_dir)

    def load() -> torch.nn.Module:
        if args.variant == "fp32":
            return AutoModelForCausalLM.from_pretrained(str(folder)).eval()
        return load_quantized(folder)[0]

    def settled_rss() -> float:
        # glibc keeps freed heap (load_quantized's transient fp32 skeleton, the file bytes): give it back first
        gc.collect()
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        return rss_mb()

    load()  # a first load pays for the lazy imports (faiss, mixers, bitsandbytes): not the model's memory
    base_rss = settled_rss()
    model = load()
    loaded_rss = settled_rss() - base_rss
    ids = torch.load(folder.parent / "ppl_ids.pt")  # (N,) int64
    now = CLOCKS[args.clock]
    with torch.no_grad():
        prompt = ids[None, :16]
        model.generate(prompt, max_new_tokens=4, do_sample=False)  # warm-up (packs the fbgemm head)
        best = math.inf
        for _ in range(args.repeats):
            start = now()
            model.generate(prompt, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False)
            best = min(best, now() - start)
        blocks = ids[: len(ids) // args.seq_len * args.seq_len].view(-1, args.seq_len)  # (nb, S)
        nll, count = 0.0, 0
        for block in blocks.split(args.batch):
            loss = model(block, labels=block).loss
            n = block.numel() - block.shape[0]
            nll, count = nll + loss.item() * n, count + n
    print(json.dumps({"tokens_per_s": args.new_tokens / best, "ppl": math.exp(nll / count), "ppl_tokens": count,
                      "peak_rss_mb": peak_rss_mb(), "loaded_rss_mb": loaded_rss}))  # fmt: skip


# --- driver ---------------------------------------------------------------------------------------------
def build_variants(args: argparse.Namespace, root: Path) -> list[str]:
    from transformers import AutoModelForCausalLM

    import s3cmn  # noqa: F401
    from s3cmn import S3CMNConfig, S3CMNForCausalLM
    from s3cmn.data.dataset import encode_text
    from s3cmn.data.tokenizer import checkpoint_tokenizer, load_tokenizer
    from s3cmn.quantization import quantize_model, save_quantized
    from s3cmn.quantization.inference import quantize_memories

    if args.checkpoint:
        model = AutoModelForCausalLM.from_pretrained(args.checkpoint).eval()
        tokenizer = checkpoint_tokenizer(args.checkpoint, required=True)
    else:
        torch.manual_seed(0)
        model = S3CMNForCausalLM(S3CMNConfig.from_preset(args.preset)).eval()
        tokenizer = load_tokenizer(str(DATA / "tokenizers" / "bert-base-uncased"))
    text = (DATA / "wikitext-2-raw" / "wiki.test.raw").read_text(encoding="utf-8")[: args.ppl_tokens * 8]
    ids = torch.from_numpy(encode_text(text, tokenizer))[: args.ppl_tokens]
    torch.save(ids, root / "ppl_ids.pt")
    model.save_pretrained(str(root / "fp32"))
    variants = ["fp32"]
    for backend in args.backends.split(","):
        q = AutoModelForCausalLM.from_pretrained(str(root / "fp32")).eval()
        q, report = quantize_model(q, backend)  # type: ignore[arg-type]
        quantize_memories(q)
        save_quantized(q, root / backend, report)
        print(f"# {backend}: {report.summary()}", file=sys.stderr)
        variants.append(backend)
    return variants


def bench_memory(args: argparse.Namespace) -> dict[str, float]:
    """recall@k of the SQ8 memory and of the float IVF index against exact search, on seeded clustered hidden
    states (width 256, PCA to 64, 32 lists, 8 probed), with the index sizes and search latencies."""
    import faiss
    import numpy as np

    from s3cmn.memory import FaissMemory, MemorySettings
    from s3cmn.quantization.memory_int8 import measure_recall, quantize_memory

    faiss.omp_set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((256, 256)).astype(np.float32)

    def sample(n: int) -> np.ndarray:
        return centers[rng.integers(0, len(centers), n)] + 0.7 * rng.standard_normal((n, 256)).astype(np.float32)

    memory = FaissMemory(MemorySettings(dim=256, memory_size=args.memory_entries, num_clusters=32, memory_nprobe=8,
                                        memory_top_k=args.k, memory_compression_dim=64,
                                        max_retrieval_distance=2.0))  # fmt: skip
    memory.write(sample(args.memory_entries))
    queries = sample(500)
    result = measure_recall(memory, queries, args.k)
    int8 = quantize_memory(memory)
    for name, mem in (("float", memory), ("sq8", int8)):
        mem.reset_search_stats()
        for chunk in np.array_split(queries, 50):
            mem.search(chunk)
        result[f"latency_ms_{name}"] = mem.stats().latency_ms_p50
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: under 2 minutes")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--checkpoint", help="a trained save_pretrained folder (with tokenizer); default: untrained")
    parser.add_argument("--backends", default="torch,bnb")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ppl-tokens", type=int, default=8192)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu")
    parser.add_argument("--memory-entries", type=int, default=32768, help="entries of the SQ8 recall benchmark")
    parser.add_argument("--k", type=int, default=8, help="k of recall@k")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--worker-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        worker(args)
        return
    if args.quick:
        args.new_tokens, args.repeats, args.ppl_tokens, args.seq_len, args.memory_entries = 32, 3, 1024, 128, 8192
    with tempfile.TemporaryDirectory(prefix="bench-quant-") as tmp:
        root = Path(tmp)
        variants = build_variants(args, root)
        results = {}
        for variant in variants:
            cmd = [sys.executable, __file__, "--variant", variant, "--worker-dir", str(root / variant)]
            for flag in ("new_tokens", "repeats", "seq_len", "batch", "threads", "clock"):
                cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ})
            results[variant] = {"size_bytes": folder_bytes(root / variant), **json.loads(out.stdout.splitlines()[-1])}
    fp32 = results["fp32"]
    print(
        f"\nbench_quant: preset={args.preset if not args.checkpoint else args.checkpoint}, threads={args.threads}, "
        f"clock={args.clock}, {args.new_tokens} new tokens, ppl on {fp32['ppl_tokens']} tokens of wiki.test.raw"
    )
    print(f"{'variant':<8} {'size MB':>8} {'x fp32':>7} {'tok/s':>7} {'x fp32':>7} {'peak RSS MB':>12} "
          f"{'loaded':>8} {'ppl':>10} {'d ppl':>8}")  # fmt: skip
    for name, r in results.items():
        print(f"{name:<8} {r['size_bytes'] / 1e6:>8.2f} {r['size_bytes'] / fp32['size_bytes']:>7.2f} "
              f"{r['tokens_per_s']:>7.1f} {r['tokens_per_s'] / fp32['tokens_per_s']:>7.2f} {r['peak_rss_mb']:>12.0f} "
              f"{r['loaded_rss_mb']:>8.0f} {r['ppl']:>10.1f} {r['ppl'] / fp32['ppl'] - 1:>+8.2%}")  # fmt: skip
    if not args.checkpoint:
        print("note: an untrained model: the perplexity change is not meaningful; pass --checkpoint for a trained one")
    mem = bench_memory(args)
    print(f"\nmemory ({args.memory_entries} entries, width 256 -> PCA 64, IVF 32 lists, nprobe 8, 500 queries): "
          f"recall@{args.k} vs exact: float {mem['recall_float']:.3f}, SQ8 {mem['recall_sq8']:.3f}; SQ8 finds "
          f"{mem['sq8_vs_float']:.3f} of the float index's hits; index {mem['index_bytes_float'] / 1e6:.2f} MB -> "
          f"{mem['index_bytes_sq8'] / 1e6:.2f} MB; search p50 {mem['latency_ms_float']:.2f} ms -> "
          f"{mem['latency_ms_sq8']:.2f} ms (10 queries)")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"model": results, "memory": mem}, indent=2))


if __name__ == "__main__":
    main()

"""The model's own CPU kernels, old path against new, side by side in one process.

    python benchmarks/bench_kernels.py --out results/kernels/kernels.json
    python benchmarks/bench_kernels.py --quick                      # CI size (seconds)

For each shape (those of the tiny and small presets at T = 512 and 2048) it times forward + backward of

- ``selective_scan``: ``backend="chunked"`` (the PyTorch chunked scan) vs ``backend="c"`` (the C loop);
- ``lif_scan``: ``backend="loop"`` (the Python time loops) vs ``backend="c"``;
- dynamic evaluation's weight update over a preset's parameters (random values, the 30,522-token vocabulary):
  ``dynamic_update_ref`` (about ten whole-tensor ops per tensor) vs ``dynamic_update`` (one C pass per tensor);
- the LM head's loss, ``linear_cross_entropy_ref`` (the (N, V) logits, then ``F.cross_entropy``) vs
  ``linear_cross_entropy`` (row chunks, softmax in place, gradients formed in the forward), at the presets'
  training rows N = B·T = 4096, their embedding width and the 30,522-token vocabulary;
- dropout (p = 0.1, forward + backward) of one (B, T, D) activation of each training shape: ``F.dropout``
  (PyTorch's sequential generator, a stored mask) vs ``s3cmn.ops.dropout.dropout`` (the hashed mask, regenerated
  in backward);

interleaved (old, new, old, new, ...) so that both see the same load, and reports the median of the repeats
and their ratio. On a shared machine the ratio within one run is the figure to trust, not the milliseconds.
The JSON holds every time, the machine and the load average at the start and the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from s3cmn.evaluation.benchmarking import close_meta, fmt_load, run_meta, scan_inputs
from s3cmn.ops.dropout import dropout
from s3cmn.ops.dynamic_update import dynamic_update, dynamic_update_ref
from s3cmn.ops.lif import lif_scan
from s3cmn.ops.linear_cross_entropy import linear_cross_entropy, linear_cross_entropy_ref
from s3cmn.ops.selective_scan import selective_scan

# (preset, B, T, E = mamba_expand·hidden_dim, N = mamba_d_state, LIF units): the presets' training shapes
SHAPES = [
    ("tiny", 8, 512, 256, 16, 64),
    ("tiny", 2, 2048, 256, 16, 64),
    ("small", 16, 512, 512, 16, 128),
    ("small", 2, 2048, 512, 16, 128),
]
QUICK_SHAPES = [("tiny", 2, 256, 256, 16, 64)]
# (preset, rows N = B·T, embedding width, vocabulary) of the LM head's loss
HEAD_SHAPES = [("tiny", 4096, 128, 30522), ("small", 4096, 256, 30522)]
QUICK_HEAD_SHAPES = [("tiny", 512, 128, 30522)]
UPDATE_PRESETS = ["tiny", "small"]  # dynamic evaluation's update over each preset's parameters
QUICK_UPDATE_PRESETS = ["tiny"]


def scan_case(batch: int, T: int, E: int, N: int) -> Callable[[str], Callable[[], None]]:
    """fwd + bwd of selective_scan with Mamba's arguments (softplus Δ, D skip, z gate)."""
    inp = scan_inputs(batch, E, N, T)

    def make(backend: str) -> Callable[[], None]:
        def run() -> None:
            for t in inp.values():
                t.grad = None
            y = selective_scan(inp["u"], inp["delta"], inp["A"], inp["B"], inp["C"], inp["D"], inp["z"],
                               inp["delta_bias"], delta_softplus=True, backend=backend)
            y.sum().backward()
        return run
    return make


def lif_case(batch: int, T: int, units: int) -> Callable[[str], Callable[[], None]]:
    """fwd + bwd of lif_scan with a learned β (the LIFLayer default) at a ~20% firing rate."""
    g = torch.Generator().manual_seed(0)
    current = (torch.randn(batch, T, units, generator=g) * 0.8).requires_grad_()
    beta = torch.full((units,), 0.9, requires_grad=True)
    threshold, v0 = torch.ones(units), torch.zeros(batch, units)

    def make(backend: str) -> Callable[[], None]:
        def run() -> None:
            current.grad = beta.grad = None
            out = lif_scan(current, beta, threshold, v0, backend=backend)
            (out.spikes.sum() + out.v.sum()).backward()
        return run
    return make


def head_case(rows: int, width: int, vocab: int) -> Callable[[str], Callable[[], None]]:
    """fwd + bwd of the LM head's mean cross-entropy over ``rows`` hidden states (gradients for both inputs)."""
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(rows, width, generator=g).requires_grad_()
    weight = (torch.randn(vocab, width, generator=g) * 0.02).requires_grad_()
    targets = torch.randint(0, vocab, (rows,), generator=g)
    paths = {"plain": linear_cross_entropy_ref, "chunked": linear_cross_entropy}

    def make(path: str) -> Callable[[], None]:
        def run() -> None:
            hidden.grad = weight.grad = None
            paths[path](hidden, weight, targets).backward()
        return run
    return make


def dropout_case(batch: int, T: int, width: int) -> Callable[[str], Callable[[], None]]:
    """fwd + bwd of dropout (p = 0.1) on one (B, T, D) activation."""
    x = torch.randn(batch, T, width, generator=torch.Generator().manual_seed(0)).requires_grad_()
    grad = torch.ones_like(x)

    def make(backend: str) -> Callable[[], None]:
        def run() -> None:
            x.grad = None
            dropout(x, 0.1, backend=backend).backward(grad)  # type: ignore[arg-type]
        return run
    return make


def update_case(preset: str, vocab: int = 30522) -> Callable[[str], Callable[[], None]]:
    """One dynamic-evaluation update of every parameter tensor of ``preset`` (memory off), weights, MS and the
    per-element rates as DynamicAdapter holds them (random values)."""
    from s3cmn.model_config import S3CMNConfig
    from s3cmn.modeling.lm import S3CMNForCausalLM

    g = torch.Generator().manual_seed(0)
    shapes = [p.shape for p in S3CMNForCausalLM(S3CMNConfig.from_preset(preset, vocab_size=vocab,
                                                                         use_memory=False)).parameters()]
    tensors = [{k: torch.randn(shape, generator=g) for k in ("p", "theta0", "g")}
               | {"ms": torch.rand(shape, generator=g) + 0.01, "rate": torch.rand(shape, generator=g) * 1e-3}
               for shape in shapes]  # fmt: skip
    paths = {"torch": dynamic_update_ref, "c": dynamic_update}

    def make(path: str) -> Callable[[], None]:
        def run() -> None:
            for t in tensors:
                paths[path](t["p"], t["theta0"], t["g"], t["ms"], t["rate"], 1e-3, 0.99, 1e-3)
        return run
    return make


def interleaved(old: Callable[[], None], new: Callable[[], None], repeats: int) -> tuple[list[float], list[float]]:
    """Wall times (ms) of old and new, alternated, after one warm-up call of each."""
    old(), new()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for fn, out in ((old, times[0]), (new, times[1])):
            start = time.perf_counter()
            fn()
            out.append((time.perf_counter() - start) * 1e3)
    return times


def run_all(shapes: list[tuple[str, int, int, int, int, int]], head_shapes: list[tuple[str, int, int, int]],
            repeats: int, update_presets: list[str] | None = None) -> list[dict[str, Any]]:
    rows, cases = [], []
    for preset, batch, T, E, N, units in shapes:
        cases += [
            (preset, "selective_scan", f"B={batch} E={E} N={N} T={T}", scan_case(batch, T, E, N), "chunked", "c"),
            (preset, "lif_scan", f"B={batch} T={T} N={units}", lif_case(batch, T, units), "loop", "c"),
            (preset, "dropout", f"B={batch} T={T} D={E // 2}", dropout_case(batch, T, E // 2), "torch", "c"),
        ]
    for preset, n_rows, width, vocab in head_shapes:
        cases.append((preset, "lm_head_loss", f"N={n_rows} E={width} V={vocab}", head_case(n_rows, width, vocab),
                      "plain", "chunked"))
    for preset in update_presets or []:
        make = update_case(preset)
        cases.append((preset, "dynamic_update", "every parameter, V=30522", make, "torch", "c"))
    for preset, kernel, shape, make, old, new in cases:
        t_old, t_new = interleaved(make(old), make(new), repeats)
        m_old, m_new = statistics.median(t_old), statistics.median(t_new)
        rows.append({"kernel": kernel, "preset": preset, "shape": shape, "old": old, "new": new,
                     "old_ms": m_old, "new_ms": m_new, "speedup": m_old / m_new,
                     "old_times_ms": t_old, "new_times_ms": t_new})
        print(f"{kernel:15s} {preset:6s} {shape:28s} {old} {m_old:9.1f} ms  {new} {m_new:8.1f} ms  "
              f"x{m_old / m_new:.2f}", flush=True)
    return rows


def markdown(result: dict[str, Any]) -> str:
    lines = [f"`{result['meta']['command']}`", "", fmt_load(result["meta"]), "",
             "| kernel | preset | shape | old | old ms | new | new ms | speedup |",
             "|---|---|---|---|---:|---|---:|---:|"]
    for r in result["rows"]:
        lines.append(f"| {r['kernel']} | {r['preset']} | {r['shape']} | {r['old']} | {r['old_ms']:.1f} | "
                     f"{r['new']} | {r['new_ms']:.1f} | {r['speedup']:.2f}x |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="one small shape, 2 repeats")
    p.add_argument("--repeats", type=int, default=5, help="timed calls of each path per shape")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--out", type=Path, default=None, help="write JSON here (and a .md next to it)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    meta = run_meta(args.threads, args.quick, argv)
    rows = run_all(QUICK_SHAPES if args.quick else SHAPES, QUICK_HEAD_SHAPES if args.quick else HEAD_SHAPES,
                   2 if args.quick else args.repeats, QUICK_UPDATE_PRESETS if args.quick else UPDATE_PRESETS)
    close_meta(meta, start)
    result = {"meta": meta, "rows": rows}
    text = markdown(result)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1), encoding="utf-8")
        args.out.with_suffix(".md").write_text(text, encoding="utf-8")
    return result


if __name__ == "__main__":
    main()

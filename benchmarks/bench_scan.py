"""Forward + backward time of the state-space mixers on the CPU.

Rows: ``selective_scan`` (s3cmn's chunked scan), ``selective_scan_ref`` (the token loop, short T only),
mambapy's ``pscan`` (Blelloch parallel scan, with the same softplus / D / gate work around it), the whole
``MambaMixer`` and the whole ``S4DMixer`` (FFT kernel), at scan width E and mixer width D = E / expand.

    python benchmarks/bench_scan.py --quick
    python benchmarks/bench_scan.py --quick --threads 1 --clock cpu     # on a busy shared machine
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from s3cmn.evaluation.benchmarking import scan_inputs
from s3cmn.model_config import S3CMNConfig
from s3cmn.modeling.mamba import MambaMixer
from s3cmn.modeling.s4d import S4DMixer
from s3cmn.ops.selective_scan import selective_scan, selective_scan_ref

CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def time_fwd_bwd(
    fn: Callable[[], torch.Tensor], params: list[torch.Tensor], warmup: int, repeats: int, clock: str = "wall"
) -> float:
    """Best time (ms) of fn() then backward of its sum, over ``repeats`` runs after ``warmup``."""
    now = CLOCKS[clock]
    best = float("inf")
    for i in range(warmup + repeats):
        for p in params:
            p.grad = None
        start = now()
        fn().sum().backward()
        if i >= warmup:
            best = min(best, now() - start)
    return best * 1e3



def mambapy_scan(inp: dict[str, torch.Tensor]) -> torch.Tensor:
    """mambapy's ``MambaBlock.selective_scan`` (pscan) in its (B, T, E) layout, with softplus and the gate."""
    from mambapy.pscan import pscan

    x = inp["u"].transpose(1, 2)  # (B, T, E)
    delta = F.softplus(inp["delta"].transpose(1, 2) + inp["delta_bias"])  # (B, T, E)
    deltaA = torch.exp(delta.unsqueeze(-1) * inp["A"])  # (B, T, E, N)
    BX = delta.unsqueeze(-1) * inp["B"].transpose(1, 2).unsqueeze(2) * x.unsqueeze(-1)  # (B, T, E, N)
    hs = pscan(deltaA, BX)  # (B, T, E, N)
    y = (hs @ inp["C"].transpose(1, 2).unsqueeze(-1)).squeeze(3) + inp["D"] * x  # (B, T, E)
    return y * F.silu(inp["z"].transpose(1, 2))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1 warm-up and 1 timed run per row")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--d-inner", type=int, default=512, help="scan width E (Mamba inner width)")
    parser.add_argument("--expand", type=int, default=2, help="mixer width D = E / expand")
    parser.add_argument("--d-state", type=int, default=16, help="Mamba state size N")
    parser.add_argument("--s4d-state", type=int, default=64, help="S4D state size")
    parser.add_argument("--lengths", type=int, nargs="+", default=[512, 2048])
    parser.add_argument("--ref-max-length", type=int, default=512, help="skip the token loop above this T")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = leave as is)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall time, or this process's CPU time (steadier on a shared machine with "
                             "--threads 1; with more threads it adds the threads up)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    warmup, repeats = (1, 1) if args.quick else (2, 5)
    B, E, N = args.batch, args.d_inner, args.d_state
    D = E // args.expand
    config = S3CMNConfig.from_preset(
        "small", hidden_dim=D, mamba_expand=args.expand, mamba_d_state=N, s4d_d_state=args.s4d_state,
        num_attention_heads=1, memory_compression_dim=0, dropout=0.0,
    )
    torch.manual_seed(0)
    mamba, s4d = MambaMixer(config, 0), S4DMixer(config, 0)

    print(f"fwd+bwd ms ({args.clock} clock), best of {repeats} (batch {B}, E {E}, N {N}; mixers at D {D}, "
          f"S4D state {args.s4d_state}, {torch.get_num_threads()} threads)")
    print(f"{'T':>6} | {'selective_scan':>14} | {'scan_ref':>9} | {'mambapy pscan':>13} | "
          f"{'MambaMixer':>10} | {'S4DMixer':>9}")
    for T in args.lengths:
        row = bench_length(T, B, E, N, D, mamba, s4d, args.ref_max_length, warmup, repeats, args.clock)
        cells = " | ".join(f"{v:>{w}.1f}" for v, w in zip(row, (14, 9, 13, 10, 9), strict=True))
        print(f"{T:>6} | {cells}")


def bench_length(
    T: int, B: int, E: int, N: int, D: int, mamba: MambaMixer, s4d: S4DMixer, ref_max_length: int,
    warmup: int, repeats: int, clock: str,
) -> list[float]:
    """One table row: the five timings (ms) at sequence length T (nan where skipped)."""
    inp = scan_inputs(B, E, N, T)
    leaves = list(inp.values())
    row = [time_fwd_bwd(lambda: selective_scan(**inp, delta_softplus=True), leaves, warmup, repeats, clock)]
    if T <= ref_max_length:
        row.append(time_fwd_bwd(lambda: selective_scan_ref(**inp, delta_softplus=True), leaves, 0, 1, clock))
    else:
        row.append(float("nan"))
    row.append(time_fwd_bwd(lambda: mambapy_scan(inp), leaves, warmup, repeats, clock))
    x = torch.randn(B, T, D, requires_grad=True)
    row.append(time_fwd_bwd(lambda: mamba(x).y, [x, *mamba.parameters()], warmup, repeats, clock))
    row.append(time_fwd_bwd(lambda: s4d(x).y, [x, *s4d.parameters()], warmup, repeats, clock))
    return row

if __name__ == "__main__":
    main()

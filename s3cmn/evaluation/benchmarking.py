"""Shared helpers of the benchmark scripts: what a result depends on (machine, load, command), timing, writing.

Every script under ``benchmarks/`` and ``scripts/ablation.py`` records its run with :func:`run_meta` and
:func:`close_meta` and writes ``<stem>.json`` + ``<stem>.md`` with :func:`write_results`.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from s3cmn.memory.persist import atomic_write


def run_meta(threads: int, quick: bool, argv: list[str] | None, precision: str = "fp32") -> dict[str, Any]:
    """What a result depends on beyond its numbers: machine (CPU, capability, precision used and its measured
    matmul peak), load, threads, versions, the command."""
    import sys

    import transformers

    from s3cmn.utils.precision import machine_record

    return {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "quick": quick, "threads": threads,
            "cpu_count": os.cpu_count(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "loadavg_start": list(os.getloadavg()),
            "machine": platform.machine(),
            "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__,
            "command": " ".join([Path(sys.argv[0]).name, *(sys.argv[1:] if argv is None else argv)]),
            "commit": source_commit(), "machine_record": machine_record(precision, threads)}


def source_commit() -> str | None:
    """The git commit the running s3cmn comes from, with ``+changes in ...`` naming its tracked files under
    ``s3cmn/``, ``benchmarks/`` and ``scripts/`` that differ from it; None outside a git checkout."""
    import subprocess

    repo = Path(__file__).resolve().parents[2]

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()

    try:
        head = git("rev-parse", "HEAD")
        changed = git("diff", "--name-only", "HEAD", "--", "s3cmn", "benchmarks", "scripts").split()
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{head}+changes in {', '.join(changed)}" if changed else head


def repeat_ms(fn: Callable[[], Any], repeats: int, reduce: str = "min") -> float:
    """Milliseconds of ``fn()`` after one warm-up call: the ``min`` or ``median`` of ``repeats`` timed calls."""
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return (min(times) if reduce == "min" else statistics.median(times)) * 1e3


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``FIELD=VALUE`` strings -> a dict; values parsed as JSON when they are JSON, else kept as strings."""
    out: dict[str, Any] = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def close_meta(meta: dict[str, Any], start: float) -> None:
    """Add the load average at the end and the run's wall time (s) to ``meta``."""
    meta["loadavg_end"] = list(os.getloadavg())
    meta["wall_s"] = time.perf_counter() - start


def write_results(out_dir: str | os.PathLike, stem: str, result: dict[str, Any], markdown: str) -> Path:
    """``<out>/<stem>.json`` (strict JSON: no NaN) and ``<out>/<stem>.md``, each written atomically; returns the
    JSON path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{stem}.json"
    atomic_write(path, json.dumps(result, indent=1, allow_nan=False).encode("utf-8"))
    atomic_write(out / f"{stem}.md", markdown.encode("utf-8"))
    return path


def fmt_load(meta: dict[str, Any]) -> str:
    from s3cmn.utils.precision import describe_machine

    start = "/".join(f"{x:.1f}" for x in meta["loadavg_start"])
    end = "/".join(f"{x:.1f}" for x in meta["loadavg_end"])
    machine = describe_machine(meta["machine_record"]) if "machine_record" in meta else "machine not recorded"
    return f"{machine}; load average (1/5/15 min) {start} at the start, {end} at the end; {meta['cpu_count']} CPUs"


def scan_inputs(batch: int, E: int, N: int, T: int) -> dict[str, torch.Tensor]:
    """Seeded inputs of ``selective_scan`` (u, delta, A, B, C, D, z, delta_bias), all requiring gradients:
    u, delta, z (batch, E, T); A (E, N); B, C (batch, N, T); D, delta_bias (E,)."""
    g = torch.Generator().manual_seed(0)
    t = {
        "u": torch.randn(batch, E, T, generator=g),
        "delta": torch.randn(batch, E, T, generator=g) - 4.0,
        "A": -torch.arange(1, N + 1, dtype=torch.float32).repeat(E, 1),
        "B": torch.randn(batch, N, T, generator=g),
        "C": torch.randn(batch, N, T, generator=g),
        "D": torch.ones(E),
        "z": torch.randn(batch, E, T, generator=g),
        "delta_bias": torch.zeros(E),
    }
    return {k: v.requires_grad_() for k, v in t.items()}

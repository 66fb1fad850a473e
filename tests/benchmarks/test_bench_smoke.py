"""Smoke test of benchmarks/bench_core.py: a --quick run at toy sizes writes well-formed JSON.

It checks the structure (keys, finite positive numbers, every planned measurement present), never the
speeds themselves: timing on a shared CI machine is not a contract.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from types import ModuleType

import pytest

from s3cmn.utils.precision import resolve_precision

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_core.py"
# Toy model sizes: the harness is under test, not the model (1 thread: robust on an oversubscribed machine).
TOY = [
    "--quick", "--isolation", "inline", "--threads", "1", "--contexts", "8", "16", "--long-T", "32",
    "--new-tokens", "2", "--override", "vocab_size=256", "hidden_dim=32", "embedding_dim=32", "num_layers=1",
    "num_attention_heads=2", "hyena_filter_length=16", "hyena_filter_dim=8", "spiking_units=16", "s4d_d_state=8",
    "memory_size=64", "num_clusters=2", "memory_compression_dim=8",
]
TRAIN_KEYS = {"dtype", "batch", "seq_len", "tokens_per_s", "step_ms", "peak_rss_mib", "train_flops_per_token",
              "fwd_flops_per_token", "mfu", "mfu_nominal", "achieved_tflops", "tokens_per_s_best"}
INFER_KEYS = {"context", "prefill_tokens_per_s", "prefill_ms", "ms_per_token", "ms_per_token_best", "peak_rss_mib"}


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_core", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _positive(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def _check_rows(rows: list[dict], names: set[str]) -> None:
    assert {r["name"] for r in rows} == names
    for row in rows:
        assert _positive(row["params"])
        used = resolve_precision("auto", "cpu").name  # the policy's pick on this machine: fp32 unless native bf16
        assert [(m["batch"], m["seq_len"], m["dtype"]) for m in row["train"]] == [(2, 64, used), (1, 32, used)]
        assert [m["context"] for m in row["inference"]] == [8, 16]
        for m in row["train"] + row["inference"]:
            assert "error" not in m, f"{row['name']}: {m}"
        for m in row["train"]:
            assert TRAIN_KEYS <= m.keys()
            assert all(_positive(m[k]) for k in TRAIN_KEYS - {"dtype", "peak_rss_mib"}), m
            assert m["peak_rss_mib"] >= 0
        for m in row["inference"]:
            assert INFER_KEYS <= m.keys()
            assert all(_positive(m[k]) for k in INFER_KEYS - {"peak_rss_mib"}), m
            assert m["peak_rss_mib"] >= 0


def test_quick_run_writes_well_formed_json(bench: ModuleType, tmp_path: Path, capsys) -> None:
    out = tmp_path / "results.json"
    bench.main([*TOY, "--memory-preset", "tiny", "--out", str(out)])
    result = json.loads(out.read_text())

    assert {"meta", "rows", "kernels", "targets"} <= result.keys()
    assert result["meta"]["quick"] is True
    _check_rows(result["rows"], {"s3cmn-tiny", "gpt2-tiny", "s3cmn-tiny+mem"})
    (memory_row,) = [r for r in result["rows"] if r["use_memory"]]
    assert memory_row["memory"]["entries"] > 0  # filled before timing, so the reads really search
    kernels = result["kernels"]
    assert _positive(kernels["matmul_bf16_tflops"]) and _positive(kernels["matmul_fp32_tflops"])
    scan = kernels["scan"]
    assert all(_positive(scan[k]) for k in ("mamba_fwd_bwd_ms", "s4d_fwd_bwd_ms", "mamba_over_s4d"))
    assert len(result["targets"]) == 6  # 2 x latency ratio, short- and long-T training ratio, scan ratio, MFU
    meta = result["meta"]
    assert meta["cpu_capability"] and meta["cpu"] and meta["threads"] == 1
    assert meta["precision"]["used"] == resolve_precision("auto", "cpu").name and meta["precision"]["reason"]
    assert _positive(meta["bf16_probe"]["fp32_gflops"])
    for target in result["targets"].values():
        assert _positive(target["value"]) and isinstance(target["met"], bool)
    printed = capsys.readouterr().out
    assert "| s3cmn-tiny |" in printed and "| gpt2-tiny |" in printed  # the markdown tables

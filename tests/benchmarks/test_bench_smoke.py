"""Smoke test of benchmarks/bench_core.py: a --quick run at toy sizes writes well-formed JSON and markdown.

It checks the structure (keys, finite positive numbers, every planned measurement present, both models in
every interleaved measurement, MFU never over 100%), never the speeds themselves: timing on a shared CI
machine is not a contract.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_core.py"
# Toy model sizes: the harness is under test, not the model (1 thread: robust on an oversubscribed machine).
TOY = [
    "--quick", "--threads", "1", "--contexts", "8", "16", "--weight-contexts", "8", "--long-T", "32",
    "--new-tokens", "2", "--override", "vocab_size=256", "hidden_dim=32", "embedding_dim=32", "num_layers=1",
    "num_attention_heads=2", "hyena_filter_length=16", "hyena_filter_dim=8", "spiking_units=16", "s4d_d_state=8",
]


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_core", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _positive(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def _spread(s: dict) -> bool:
    return s["n"] == 2 and _positive(s["median"]) and s["min"] <= s["median"] <= s["max"]


def test_quick_run_writes_well_formed_json(bench: ModuleType, tmp_path: Path, capsys) -> None:
    out = tmp_path / "results.json"
    bench.main([*TOY, "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["schema"] == 2 and result["meta"]["quick"] is True
    m = result["machine"]
    assert m["cpu"] and m["capability"] and m["threads"] == 1 and "fp32" in m["native_precisions"]
    assert set(m["peak_tflops"]) == set(m["native_precisions"]) and all(map(_positive, m["peak_tflops"].values()))
    assert _positive(m["read_gb_s"])
    (p,) = result["presets"]
    assert [g["context"] for g in p["generation"]] == [8, 16]
    for g in p["generation"]:
        for name in ("s3cmn", "s3cmn_compiled", "gpt2"):  # eager and compiled decode steps, and GPT-2
            assert _spread(g[name]["ms_per_token"]) and _spread(g[name]["prefill_tokens_per_s"])
    (w,) = p["weights"]
    assert {"fp32", "int8", "compiled fp32", "compiled fp32 fused", "compiled bf16", "compiled fp16"} <= w.keys()
    assert ("bf16" in w) == ("bf16" in m["native_precisions"])
    assert [(t["batch"], t["seq_len"], t["dtype"]) for t in p["training"]] == [
        (2, 64, d) for d in m["native_precisions"]] + [(1, 32, d) for d in m["native_precisions"]]
    for t in p["training"]:
        for name in ("s3cmn", "gpt2"):
            assert _spread(t[name])
            assert t[name]["mfu"] is None or 0 < t[name]["mfu"] <= 1.0  # never a figure over 100%
    assert _positive(p["weight_read_bound_ms"])
    for target in result["targets"].values():
        assert isinstance(target["met"], bool) and target["goal"]
    printed = capsys.readouterr().out
    assert "| target | value | goal | met |" in printed and out.with_suffix(".md").read_text().strip() in printed


def test_mfu_over_100_percent_is_refused(bench: ModuleType) -> None:
    from s3cmn.model_config import S3CMNConfig

    config = S3CMNConfig.from_preset("tiny")
    train = [{"batch": 1, "seq_len": 64, "dtype": "fp32", "s3cmn": {"median": 1e9}, "gpt2": {"median": 1.0}}]
    bench.add_mfu(train, {"s3cmn": config, "gpt2": _gpt2(config)}, {"fp32": 0.1})
    assert train[0]["s3cmn"]["mfu"] is None and "> 100%" in train[0]["s3cmn"]["mfu_refused"]
    assert 0 < train[0]["gpt2"]["mfu"] < 1


def _gpt2(config):
    from transformers import GPT2Config

    return GPT2Config(vocab_size=config.vocab_size, n_embd=config.hidden_dim, n_layer=config.num_layers,
                      n_head=config.num_attention_heads, n_inner=4 * config.hidden_dim, n_positions=64)

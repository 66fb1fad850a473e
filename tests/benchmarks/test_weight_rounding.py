"""Smoke test of benchmarks/weight_rounding.py: a toy model saved with save_pretrained, scored on real held-out
WikiText-2 text with its fp32 and its rounded weights; the report is well formed, fp32 is its own baseline,
int8 rounding moves the score, and a test split is refused by name. The numbers of a toy model mean nothing."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from s3cmn import S3CMNConfig, S3CMNForCausalLM

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "weight_rounding.py"


def load():
    spec = importlib.util.spec_from_file_location("weight_rounding", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_weight_rounding_scores_each_width_against_fp32(tmp_path: Path, shared_data: Path) -> None:
    torch.manual_seed(0)
    config = S3CMNConfig.from_preset("tiny", vocab_size=50257, hidden_dim=32, embedding_dim=32, num_layers=1,
                                     spiking_units=16, hyena_filter_dim=8, hyena_filter_length=16, use_memory=False)
    S3CMNForCausalLM(config).save_pretrained(tmp_path / "ckpt")
    valid = shared_data / "wikitext-2-raw" / "wiki.valid.raw"
    argv = ["--checkpoint", str(tmp_path / "ckpt"), "--text", str(valid), "--max-tokens", "200", "--seq-len", "32",
            "--threads", "1", "--shared-data", str(shared_data), "--out", str(tmp_path / "out")]
    result = load().main(argv)

    saved = json.loads((tmp_path / "out" / "weight_rounding.json").read_text(encoding="utf-8"))
    assert saved["rows"] == result["rows"]
    assert [r["weights"] for r in result["rows"]] == ["fp32", "bf16", "fp16", "int8"]
    assert result["rows"][0]["word_ppl_change"] == 0.0 and 0 < result["settings"]["tokens"] <= 200
    assert all(math.isfinite(r["word_perplexity"]) and r["word_perplexity"] > 0 for r in result["rows"])
    assert result["rows"][3]["word_ppl_change"] != 0.0  # the int8 rows really were rounded
    assert "| int8 |" in (tmp_path / "out" / "weight_rounding.md").read_text(encoding="utf-8")

    test = shared_data / "wikitext-2-raw" / "wiki.test.raw"
    with pytest.raises(SystemExit, match="looks like a test split"):
        load().main([*argv[:2], "--text", str(test), *argv[4:]])

"""evaluate_checkpoint and its reports: every field, strict JSON, Markdown, plots, int8 side by side, memory start."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from s3cmn.evaluation.report import REPORT_FIELDS, RUN_FIELDS, render_markdown, write_reports
from s3cmn.evaluation.run import EvaluationError, evaluate_checkpoint
from s3cmn.run_config import DataConfig, EvalConfig

SPEED = dict(speed_prompt_tokens=16, speed_new_tokens=2, speed_repeats=1)


def _data(wikitext_dir: Path, tmp: Path) -> DataConfig:
    return DataConfig(data_dir=str(wikitext_dir), cache_dir=str(tmp / "cache"))


@pytest.fixture(scope="module")
def report(tiny_checkpoint: Path, wikitext_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("report")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # module-scoped: set up before the per-test one-thread fixture
    evaluation = EvalConfig(context_length=32, memory="both", quantize="int8", backend="torch",
                            max_eval_tokens=400, plot_dir=str(tmp / "plots"))  # fmt: skip
    try:
        return evaluate_checkpoint(tiny_checkpoint, _data(wikitext_dir, tmp), evaluation, **SPEED)
    finally:
        torch.set_num_threads(threads)


def test_report_has_every_field(report: dict) -> None:
    assert set(REPORT_FIELDS) <= set(report)
    assert [(r["precision"], r["memory"]) for r in report["runs"]] == [
        ("fp32", "off"), ("fp32", "learned"), ("int8", "off"), ("int8", "learned")]  # issue 15: on = learned
    for run in report["runs"]:
        assert set(RUN_FIELDS) <= set(run)
        assert {"token_perplexity", "word_perplexity", "bits_per_byte", "byte_perplexity"} <= set(run["perplexity"])
        assert run["perplexity"]["tokens"] == report["data"]["tokens"] <= 400
        assert len(run["sparsity"]) == 2 and (run["memory_state"] is None) == (run["memory"] == "off")
    on = report["runs"][1]["memory_state"]
    assert on["start"]["1"]["entries"] == 0 < on["end"]["1"]["entries"]
    assert {"hit_rate", "mean_similarity", "latency_ms_mean"} <= set(on["reads"]["1"])
    assert {"hit_rate", "latency_ms_p50", "entries"} <= set(on["store"]["1"])
    assert on["usage_spread"]["1"] == {"entries": 0, "retrievals": 0, "top_entry_share": 0.0,
                                       "top_percent_share": 0.0, "read_share": 0.0}  # it started empty
    scoring = on["usage_spread_scoring"]["1"]  # the reads of the scored text, on the entries it wrote
    assert scoring["retrievals"] > 0 and scoring["entries"] == on["end"]["1"]["entries"]
    assert 0 < scoring["read_share"] <= 1 and 0 < scoring["top_entry_share"] <= 1
    s = report["settings"]
    assert set(EvalConfig.field_names()) == set(s["evaluation"]) and set(DataConfig.field_names()) == set(s["data"])
    assert (s["context_length"], s["stride"], s["memory_start"]) == (32, 16, "saved")
    d = report["data"]
    assert d["source"]["file_sha256"] == d["split_text_sha256"]  # the test file is plain UTF-8
    assert d["source"]["path"].endswith("wiki.test.raw") and d["truncated"]
    assert report["tokenizer"]["vocab_size"] == 30522 and report["tokenizer"]["source"] == "checkpoint"
    assert report["memory_start"]["layers"]["1"]["entries"] == 0
    assert {"torch", "transformers", "faiss", "s3cmn", "cpu_count", "device"} <= set(report["environment"])
    assert "Horowitz" in report["energy_note"]


def test_int8_side_by_side(report: dict) -> None:
    fp32, int8 = report["models"]["fp32"], report["models"]["int8"]
    for m in (fp32, int8):
        assert m["speed"]["prefill_tokens_per_s"] > 0 and m["speed_peak_memory"]["cpu_peak_rss_bytes"] > 0
    assert int8["quantization"]["backend"] == "torch" and int8["parameters"] == fp32["parameters"]
    assert int8["serialized_state_dict_bytes"] < fp32["serialized_state_dict_bytes"]
    assert fp32["disk"]["weights"] > 0


def test_json_is_strict_and_markdown_has_the_tables(report: dict, tmp_path: Path) -> None:
    written = write_reports(report, tmp_path / "out", tmp_path / "plots")
    loaded = json.loads(Path(written["json"]).read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))
    assert set(REPORT_FIELDS) <= set(loaded)
    md = Path(written["markdown"]).read_text()
    for heading in ("## Perplexity", "## Spiking sparsity", "## Memory during evaluation", "## Speed and size",
                    "## Perplexity against context"):
        assert heading in md
    assert md == render_markdown(report)
    assert "top entry's share of reads (scoring) | entries read (scoring) |" in md
    names = sorted(Path(p).name for p in written["plots"])
    assert names == ["memory_hit_rate.png", "perplexity_vs_context.png", "spike_rate_per_layer.png"]
    assert all(Path(p).read_bytes()[:4] == b"\x89PNG" for p in written["plots"])


def test_context_curve(report: dict) -> None:
    curve = report["context_curve"]
    assert [c["context_length"] for c in curve] == [16, 32]
    assert curve[-1]["token_perplexity"] == pytest.approx(report["runs"][0]["perplexity"]["token_perplexity"])


def test_plots_without_matplotlib_say_what_to_install(report: dict, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"s3cmn\[eval\]"):
        write_reports(report, None, tmp_path)


def test_memory_both_matches_memory_off_alone(report: dict, tiny_checkpoint: Path, wikitext_dir: Path,
                                              tmp_path: Path) -> None:
    off = evaluate_checkpoint(tiny_checkpoint, _data(wikitext_dir, tmp_path),
                              EvalConfig(context_length=32, memory="off", max_eval_tokens=400), **SPEED)
    assert [r["memory"] for r in off["runs"]] == ["off"]
    assert off["runs"][0]["perplexity"] == report["runs"][0]["perplexity"]
    assert off["runs"][0]["sparsity"] == report["runs"][0]["sparsity"]


def test_saved_or_empty_starting_memory(tiny_checkpoint: Path, wikitext_dir: Path, tmp_path: Path) -> None:
    from s3cmn.data import load_tokenizer
    from s3cmn.evaluation.perplexity import prepare_text
    from s3cmn.modeling.loading import load_model

    model = load_model(tiny_checkpoint)
    tokenizer = load_tokenizer(str(tiny_checkpoint))
    text = prepare_text((wikitext_dir / "wiki.test.raw").read_text(), tokenizer, 300)
    model(text.stream[None, 1:], write_memory=True)  # a memory that already holds the scored text
    folder = tmp_path / "leaky"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    evaluation = EvalConfig(context_length=32, memory="on", max_eval_tokens=300)
    saved = evaluate_checkpoint(folder, _data(wikitext_dir, tmp_path), evaluation, **SPEED)
    assert saved["memory_start"]["layers"]["1"]["entries"] > 0
    assert saved["memory_start"]["entries_holding_scored_text"]["1"] > 0
    assert any("occurs in the scored text" in n for n in saved["notes"])
    empty = evaluate_checkpoint(folder, _data(wikitext_dir, tmp_path), evaluation, memory_start="empty", **SPEED)
    assert empty["memory_start"]["content"] == "empty" and empty["memory_start"]["layers"]["1"]["entries"] == 0
    assert empty["runs"][0]["memory_state"]["start"]["1"]["entries"] == 0
    assert not any("occurs in the scored text" in n for n in empty["notes"])
    assert saved["runs"][0]["perplexity"]["nll_sum"] != empty["runs"][0]["perplexity"]["nll_sum"]


@pytest.mark.parametrize(("evaluation", "match"), [
    (EvalConfig(context_length=32, stride=32), "stride"),
    (EvalConfig(context_length=1), "stride|context"),
])  # fmt: skip
def test_bad_window_settings(tiny_checkpoint: Path, wikitext_dir: Path, tmp_path: Path, evaluation: EvalConfig,
                             match: str) -> None:
    with pytest.raises(EvaluationError, match=match):
        evaluate_checkpoint(tiny_checkpoint, _data(wikitext_dir, tmp_path), evaluation, **SPEED)

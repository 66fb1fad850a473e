"""Smoke tests of benchmarks/compare.py, scaling.py and memory_cost.py: each runs (--quick, toy sizes) and writes
well-formed JSON and Markdown. They check structure and finiteness, never the numbers: timings on a shared CI
machine are not a contract, and a toy model's perplexity means nothing.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
# A toy s3cmn (the harness is under test, not the model); the vocabulary stays the tokenizer's.
TOY = ["hidden_dim=32", "embedding_dim=32", "num_attention_heads=2", "hyena_filter_length=32", "hyena_filter_dim=8",
       "spiking_units=16", "s4d_d_state=8", "memory_size=64", "num_clusters=1", "memory_compression_dim=8"]


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def positive(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def read_results(folder: Path, stem: str) -> dict:
    result = json.loads((folder / f"{stem}.json").read_text(encoding="utf-8"))  # strict JSON: no NaN written
    assert (folder / f"{stem}.md").read_text(encoding="utf-8").startswith(("WikiText", "Batch", "Search"))
    meta = result["meta"]
    assert meta["quick"] is True and len(meta["loadavg_start"]) == 3 and len(meta["loadavg_end"]) == 3
    assert positive(meta["wall_s"])
    return result


def test_compare_quick_writes_well_formed_json(tmp_path: Path, shared_data: Path) -> None:
    compare = load("compare")
    compare.main(["--quick", "--out", str(tmp_path), "--threads", "1", "--shared-data", str(shared_data),
                  "--max-tokens", "128", "--eval-tokens", "48", "--batch-size", "2", "--seq-len", "32",
                  "--override", *TOY])
    result = read_results(tmp_path, "compare")

    settings = result["settings"]  # honest splits: selected on text held out from training, GPT-2 BPE lossless
    assert settings["selection"]["rule"] == "holdout" and not settings["selection"]["validation_is_test_split"]
    assert settings["lossless_tokenizer"] is True and settings["data"]["test"].endswith("wiki.test.raw")
    names = {r["name"] for r in result["rows"]}
    assert names == {"s3cmn", "s3cmn+mem", "s3cmn+mem (read off at test)", "gpt2", "lstm", "mamba"}
    params = {r["model"]: r["params"] for r in result["rows"]}
    reference = params["s3cmn"]
    for kind in ("gpt2", "lstm", "mamba"):  # matched to the reference (toy sizes: the MLP rounding is coarse)
        assert abs(params[kind] - reference) / reference < 0.02, (kind, params)
    for row in result["rows"]:
        assert row["seeds"] == [0] and set(row["stopped"]) <= {"tokens", "time"}
        for metric in ("word_perplexity", "bits_per_byte", "token_perplexity", "train_tokens_per_s"):
            assert positive(row[metric]["mean"]) and row[metric]["std"] == 0.0, (row["name"], metric)
    for run in result["runs"]:
        assert run["train_tokens"] > 0 and run["curve"] and all(positive(p["loss"]) for p in run["curve"])
        assert run["validations"] and run["best_val_loss"] == min(v["loss"] for v in run["validations"])
        assert run["eval"]["default"]["tokens"] == result["settings"]["eval_tokens_scored"]
        assert not (tmp_path / "runs" / f"{run['model']}-seed0" / "last").exists()  # checkpoints are removed
    png = result["loss_curves_png"]
    assert png is None or Path(png).is_file()


def test_compare_reuses_finished_runs_with_the_same_settings(tmp_path: Path, shared_data: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    compare = load("compare")
    argv = ["--quick", "--out", str(tmp_path), "--threads", "1", "--shared-data", str(shared_data), "--models",
            "gpt2", "--max-tokens", "64", "--eval-tokens", "32", "--batch-size", "2", "--seq-len", "32",
            "--override", *TOY]
    first = compare.main(argv)
    (tmp_path / "runs" / "gpt2-seed0" / "metrics.jsonl").unlink()  # a reused run is not read again
    with caplog.at_level("INFO"):
        second = compare.main([*argv, "--seeds", "0", "1"])
    assert second["runs"][0] == first["runs"][0] and [r["seed"] for r in second["runs"]] == [0, 1]
    assert "gpt2 seed 0: reusing" in caplog.text and "gpt2 seed 1: reusing" not in caplog.text
    again = compare.main([*argv, "--seeds", "0", "1"])  # nothing trained: the report keeps the runs' meta
    assert again["meta"] == second["meta"] and again["runs"] == second["runs"]
    assert read_results(tmp_path, "compare")["meta"] == second["meta"]
    caplog.clear()
    with caplog.at_level("INFO"):  # another setting: trained again
        third = compare.main([*argv, "--lr", "1e-3"])
    assert "other settings: retraining" in caplog.text and third["runs"][0]["curve"]
    assert (tmp_path / "runs" / "gpt2-seed0" / "metrics.jsonl").is_file()


@pytest.mark.parametrize("isolation", ["inline", "subprocess"])
def test_scaling_quick_writes_well_formed_json(tmp_path: Path, isolation: str) -> None:
    scaling = load("scaling")
    models = ["s3cmn", "gpt2"] if isolation == "inline" else ["s3cmn"]
    scaling.main(["--quick", "--out", str(tmp_path), "--threads", "1", "--isolation", isolation, "--lengths", "16",
                  "32", "--new-tokens", "2", "--models", *models, "--override", *TOY])
    result = read_results(tmp_path, "scaling")

    assert [(p["model"], p["T"]) for p in result["points"]] == [(m, T) for m in models for T in (16, 32)]
    for point in result["points"]:
        assert "error" not in point and "skipped" not in point, point
        assert positive(point["train"]["ms_per_token"]) and point["train"]["peak_extra_mib"] >= 0
        assert positive(point["generation"]["ms_per_token"]) and positive(point["generation"]["prefill_s"])


def test_memory_cost_quick_writes_well_formed_json(tmp_path: Path) -> None:
    memory_cost = load("memory_cost")
    memory_cost.main(["--quick", "--out", str(tmp_path), "--threads", "1", "--sizes", "2000", "--queries", "32",
                      "--batch", "1", "--seq-len", "64", "--step-repeats", "1", "--override", *TOY])
    result = read_results(tmp_path, "memory_cost")

    assert [r["index"] for r in result["search"]] == ["Flat", "IVFFlat", "IVF-SQ8"]
    for row in result["search"]:
        assert 0.0 <= row["recall_at_k"] <= 1.0 and positive(row["us_per_query_batched"]) and positive(row["bytes"])
    assert result["search"][0]["recall_at_k"] == 1.0  # exact search is its own ground truth
    (step,) = result["training_step"]
    assert positive(step["step_s_memory_on"]) and positive(step["step_s_memory_off"])
    assert math.isfinite(step["overhead"]) and isinstance(step["met"], bool)
    assert step["memory"]["entries"] == step["memory"]["capacity"]  # filled before timing


def test_compare_lr_grid_chooses_on_validation_and_scores_the_test_split_once_per_final_run(
        tmp_path: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    compare = load("compare")
    events: list[tuple] = []  # ("train", model, seed, lr), ("score", model, seed, lr), ("test",): in call order
    train_run, score_run, score = compare.train_run, compare.score_run, compare.score

    def traced_train_run(kind, seed, lr, *rest):
        events.append(("train", kind, seed, lr))
        return train_run(kind, seed, lr, *rest)

    def traced_score_run(record, *rest):
        events.append(("score", record["model"], record["seed"], record["lr"]))
        return score_run(record, *rest)

    def traced_score(*args, **kwargs):
        events.append(("test",))
        return score(*args, **kwargs)

    monkeypatch.setattr(compare, "train_run", traced_train_run)
    monkeypatch.setattr(compare, "score_run", traced_score_run)
    monkeypatch.setattr(compare, "score", traced_score)
    grid, models, seeds = [1e-3, 6e-3], ["gpt2", "lstm"], [0, 1]
    argv = ["--quick", "--out", str(tmp_path), "--threads", "1", "--shared-data", str(shared_data), "--models",
            *models, "--seeds", "0", "1", "--lr-grid", "6e-3,1e-3", "--max-tokens", "64", "--eval-tokens", "32",
            "--batch-size", "2", "--seq-len", "32", "--override", *TOY]
    result = compare.main(argv)
    tuning = result["tuning"]
    assert tuning["grid"] == grid and tuning["seed"] == 0 and result["settings"]["lr_grid"] == grid

    # (a) tuning: every model at every rate at the first seed, and no test scoring until all of it is done
    tuned = len(models) * len(grid)
    assert sorted(events[:tuned]) == sorted(("train", m, 0, lr) for m in models for lr in grid)
    chosen = {m: tuning["chosen"][m]["lr"] for m in models}
    # final runs: the first seed's tuning run is scored (not retrained), the other seeds train at the chosen rate
    assert [e for e in events[tuned:] if e[0] == "train"] == [("train", m, 1, chosen[m]) for m in models]
    scored = [e for e in events if e[0] == "score"]
    assert sorted(scored) == sorted(("score", m, s, chosen[m]) for m in models for s in seeds)
    assert [e for e in events if e[0] == "test"] == [("test",)] * len(scored)  # one test scoring per final run
    assert [(r["model"], r["seed"], r["lr"]) for r in result["runs"]] == [(m, s, chosen[m]) for s in seeds
                                                                          for m in models]

    # (b) each model's rate is the argmin of its recorded validation losses, which are its runs' best ones
    assert len(tuning["runs"]) == tuned
    for m in models:
        losses = {r["lr"]: r["best_val_loss"] for r in tuning["runs"] if r["model"] == m}
        assert set(losses) == set(grid) and all(positive(v) for v in losses.values())
        assert chosen[m] == min(grid, key=lambda lr: losses[lr]) and tuning["chosen"][m]["best_val_loss"] == losses[
            chosen[m]]
        final = next(r for r in result["runs"] if r["model"] == m and r["seed"] == 0)
        assert final["best_val_loss"] == losses[chosen[m]] and final["run_dir"] == next(
            r["run_dir"] for r in tuning["runs"] if r["model"] == m and r["lr"] == chosen[m])
    # (d) with two rates every choice is at an edge of the grid: flagged in the JSON and the report
    assert all(tuning["chosen"][m]["at_edge"] for m in models)
    md = (tmp_path / "compare.md").read_text(encoding="utf-8")
    assert md.count("at the edge of the grid: widen it") == len(models)
    assert "the test split was never scored while tuning" in md
    saved = json.loads((tmp_path / "compare.json").read_text(encoding="utf-8"))
    assert saved["tuning"]["runs"] == tuning["runs"]
    for r in tuning["runs"]:  # every checkpoint is gone: the chosen ones once scored, the others once discarded
        run_dir = Path(r["run_dir"])
        assert (run_dir / "record.json").is_file() and not list(run_dir.glob("best*")) + list(run_dir.glob("last*"))

    # (c) the same command again retrains and rescores nothing
    events.clear()
    again = compare.main(argv)
    assert events == [] and again["runs"] == result["runs"] and again["tuning"]["chosen"] == tuning["chosen"]


def test_a_tuned_run_scored_from_its_checkpoint_scores_as_if_scored_right_after_training(
        tmp_path: Path, shared_data: Path) -> None:
    # s3cmn+mem: scored later, the run is rebuilt from its best weights and the memory training left (in `last`)
    compare = load("compare")
    argv = ["--quick", "--threads", "1", "--shared-data", str(shared_data), "--models", "s3cmn+mem",
            "--max-tokens", "64", "--eval-tokens", "32", "--batch-size", "2", "--seq-len", "32", "--override", *TOY]
    (tuned,) = compare.main([*argv, "--out", str(tmp_path / "tuned"), "--lr-grid", "2e-3"])["runs"]
    (direct,) = compare.main([*argv, "--out", str(tmp_path / "direct"), "--lr", "2e-3"])["runs"]
    assert tuned["lr"] == direct["lr"] == 2e-3 and tuned["best_val_loss"] == direct["best_val_loss"]
    for variant in ("default", "memory_off"):
        for metric in ("token_perplexity", "bits_per_byte"):
            assert tuned["eval"][variant][metric] == pytest.approx(direct["eval"][variant][metric], rel=1e-6)
    assert tuned["memory_entries"] == direct["memory_entries"]


def test_compare_lr_grid_killed_while_scoring_resumes_without_retraining(
        tmp_path: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    compare = load("compare")
    trained: list[tuple] = []
    train_run, score = compare.train_run, compare.score

    def traced_train_run(kind, seed, lr, *rest):
        trained.append((kind, seed, lr))
        return train_run(kind, seed, lr, *rest)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the comparison is stopped while scoring the first final run

    monkeypatch.setattr(compare, "train_run", traced_train_run)
    monkeypatch.setattr(compare, "score", killed)
    argv = ["--quick", "--out", str(tmp_path), "--threads", "1", "--shared-data", str(shared_data), "--models", "gpt2",
            "--lr-grid", "1e-3,3e-3", "--max-tokens", "64", "--eval-tokens", "32", "--batch-size", "2", "--seq-len",
            "32", "--override", *TOY]
    with pytest.raises(KeyboardInterrupt):
        compare.main(argv)
    assert sorted(trained) == [("gpt2", 0, 1e-3), ("gpt2", 0, 3e-3)]
    trained.clear()
    monkeypatch.setattr(compare, "score", score)
    (run,) = compare.main(argv)["runs"]  # the chosen tuning run kept its best checkpoint: scored, not retrained
    assert trained == [] and positive(run["eval"]["default"]["token_perplexity"])
    assert not list(Path(run["run_dir"]).glob("best*"))

    # The choice is made once: a record changed later (a run retrained on another CPU) does not move it
    other = next(p for p in (tmp_path / "runs").glob("gpt2-seed0-lr*") if str(p) != run["run_dir"])
    saved = json.loads((other / "record.json").read_text())
    saved["record"]["best_val_loss"] = run["best_val_loss"] - 1.0
    (other / "record.json").write_text(json.dumps(saved))
    (again,) = compare.main(argv)["runs"]
    assert again["lr"] == run["lr"] and trained == []


def test_a_run_stopped_by_a_signal_is_not_a_result_and_is_retrained(
        tmp_path: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import dataclasses
    import json

    import s3cmn.training

    compare = load("compare")
    fit = s3cmn.training.fit

    def stopped_by_sigterm(*args, **kwargs):
        return dataclasses.replace(fit(*args, **kwargs), stopped="signal SIGTERM")

    argv = ["--quick", "--out", str(tmp_path), "--threads", "1", "--shared-data", str(shared_data), "--models",
            "gpt2", "--max-tokens", "64", "--eval-tokens", "32", "--batch-size", "2", "--seq-len", "32",
            "--override", *TOY]
    monkeypatch.setattr(s3cmn.training, "fit", stopped_by_sigterm)
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        compare.main(argv)
    record = tmp_path / "runs" / "gpt2-seed0" / "record.json"
    assert not record.exists()
    monkeypatch.setattr(s3cmn.training, "fit", fit)
    (run,) = compare.main(argv)["runs"]
    assert run["stopped"] == "tokens"
    saved = json.loads(record.read_text())  # as an older compare.py recorded an interrupted run
    saved["record"]["stopped"] = "signal SIGTERM"
    record.write_text(json.dumps(saved))
    with caplog.at_level("INFO"):
        (again,) = compare.main(argv)["runs"]
    assert "was interrupted (signal SIGTERM): retraining" in caplog.text and again["stopped"] == "tokens"


def test_equal_time_gives_each_model_its_calibrated_budget_and_reuses_the_calibration(
        tmp_path: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    compare = load("compare")
    monkeypatch.setattr(compare, "CALIBRATION_STEPS", 3)
    tuned = tmp_path / "tuned" / "compare.json"  # what a --lr-grid comparison leaves (only the fields read)
    tuned.parent.mkdir()
    tuned.write_text(json.dumps({"tuning": {"chosen": {"lstm": {"lr": 3e-3}, "mamba": {"lr": 6e-3}},
                                            "validation": "held-out text"}, "settings": {"max_tokens": 4096}}))
    argv = ["--quick", "--out", str(tmp_path / "equal"), "--threads", "1", "--shared-data", str(shared_data),
            "--models", "lstm", "mamba", "--equal-time", "1.5", "--lr-from", str(tuned.parent), "--eval-tokens", "32",
            "--valid-tokens", "256",
            "--batch-size", "2", "--seq-len", "32", "--override", *TOY]
    result = compare.main(argv)
    calibration = result["settings"]["calibration"]
    assert calibration == json.loads((tmp_path / "equal" / "calibration.json").read_text())["record"]
    for run in result["runs"]:  # each model: its own budget (its tokens/s x 1.5 s, whole steps), the tuned rate
        mine = calibration["models"][run["model"]]
        assert run["train_tokens"] == mine["max_tokens"] == max(1, int(mine["tokens_per_s"] * 1.5 // 64)) * 64
        assert run["lr"] == {"lstm": 3e-3, "mamba": 6e-3}[run["model"]]
        assert mine["precision"] in ("no", "bf16") and positive(mine["tokens_per_s"])
    md = (tmp_path / "equal" / "compare.md").read_text(encoding="utf-8")
    assert "equal wall-clock: 2 s of training per run" in md and "lstm 0.003, mamba 0.006" in md

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("a rerun measured or trained again")

    monkeypatch.setattr(compare, "build_model", no_training)  # the same command again: calibration and runs reused
    assert compare.main(argv)["settings"]["calibration"] == calibration
    saved = json.loads((tmp_path / "equal" / "calibration.json").read_text())  # as if another CPU had measured it
    saved["key"]["cpu_capability"] = "ANOTHER"
    (tmp_path / "equal" / "calibration.json").write_text(json.dumps(saved))
    with pytest.raises(AssertionError, match="measured or trained again"):
        compare.main(argv)
    assert compare.main([*argv, "--keep-calibration"])["settings"]["calibration"] == calibration  # runs reused too
    with pytest.raises(SystemExit, match="holds no tuned rate for every model"):
        compare.main([*argv[:-len(TOY) - 1], "--models", "gpt2"])
    with pytest.raises(SystemExit):
        compare.parse_args(["--lr", "1e-3", "--lr-from", str(tuned.parent)])


def test_a_run_key_without_equal_time_is_the_key_runs_had_before_the_option() -> None:
    compare = load("compare")
    plain = compare.run_key(compare.parse_args(["--quick"]), 3e-3)
    timed = compare.run_key(compare.parse_args(["--quick", "--equal-time", "60"]), 3e-3)
    assert "equal_time" not in plain and timed["equal_time"] == 60.0  # runs saved before it existed stay valid
    assert {k: v for k, v in timed.items() if k != "equal_time"} == plain
    kept = compare.run_key(compare.parse_args(["--quick", "--equal-time", "60", "--keep-calibration"]), 3e-3)
    assert kept == timed  # finishing runs with a kept calibration does not change their key

"""The rate choice of equal tuning (s3cmn.evaluation.tuning): argmin of the validation losses, edges flagged."""

from __future__ import annotations

import logging
import math

import pytest

from s3cmn.evaluation.tuning import EDGE_ADVICE, choose_rates, parse_grid, tune, tuning_markdown

GRID = [1e-3, 3e-3, 6e-3]


def test_choice_is_the_argmin_and_only_an_end_of_the_grid_is_flagged(caplog: pytest.LogCaptureFixture) -> None:
    losses = {"middle": {1e-3: 5.0, 3e-3: 4.0, 6e-3: 4.5}, "low": {1e-3: 3.9, 3e-3: 4.0, 6e-3: 4.5},
              "high": {1e-3: 5.0, 3e-3: 4.0, 6e-3: 3.0}}
    with caplog.at_level(logging.WARNING):
        chosen = choose_rates(losses, GRID)
    assert {m: (c["lr"], c["at_edge"]) for m, c in chosen.items()} == {
        "middle": (3e-3, False), "low": (1e-3, True), "high": (6e-3, True)}
    assert chosen["low"]["best_val_loss"] == 3.9
    assert "low" in caplog.text and "high" in caplog.text and "middle" not in caplog.text
    assert EDGE_ADVICE in caplog.text


def test_a_diverged_rate_is_never_chosen_ties_go_to_the_smaller_rate_one_rate_is_no_edge() -> None:
    chosen = choose_rates({"m": {1e-3: 4.0, 3e-3: 4.0, 6e-3: math.inf}}, GRID)["m"]
    assert chosen == {"lr": 1e-3, "best_val_loss": 4.0, "at_edge": True}
    assert choose_rates({"m": {1e-3: 4.0}}, [1e-3])["m"]["at_edge"] is False
    with pytest.raises(ValueError, match="every rate"):
        choose_rates({"m": {1e-3: math.nan, 3e-3: math.inf, 6e-3: math.nan}}, GRID)
    with pytest.raises(ValueError, match="no validation loss"):
        choose_rates({"m": {1e-3: 4.0}}, GRID)


def test_parse_grid_sorts_and_names_a_bad_entry() -> None:
    assert parse_grid("6e-3, 1e-3,3e-3") == GRID
    for text, message in (("1e-3,x", "'x' is not a number"), ("1e-3,-1", "not a positive"),
                          ("1e-3,0.001", "repeats")):
        with pytest.raises(ValueError, match=message):
            parse_grid(text)


def test_tune_trains_every_pair_discards_the_losers_and_reports_them() -> None:
    val = {("a", 1e-3): 5.0, ("a", 3e-3): 4.0, ("a", 6e-3): 4.2, ("b", 1e-3): 3.0, ("b", 3e-3): 3.5,
           ("b", 6e-3): None}  # None: the run never validated
    trained, discarded = [], []

    def train(model: str, lr: float) -> dict:
        trained.append((model, lr))
        return {"best_val_loss": val[model, lr], "best_step": 2, "run_dir": f"runs/{model}-lr{lr:g}"}

    tuning = tune(["a", "b"], GRID, 0, "held-out text", train, lambda run: discarded.append((run["model"], run["lr"])))
    assert trained == [(m, lr) for lr in GRID for m in ("a", "b")]
    assert {m: c["lr"] for m, c in tuning["chosen"].items()} == {"a": 3e-3, "b": 1e-3}
    assert sorted(discarded) == sorted(k for k in val if k not in (("a", 3e-3), ("b", 1e-3)))
    assert tuning["test_scored_while_tuning"] is False and len(tuning["runs"]) == 6
    md = "\n".join(tuning_markdown(tuning))
    assert "held-out text" in md and md.count(EDGE_ADVICE) == 1 and "| b | **3.000** | 3.500 | – |" in md
    assert tuning["machines"] == ["unknown"] and "Mixed machines" not in md  # records without a machine


def test_a_grid_trained_on_several_cpus_is_flagged_in_the_report(caplog: pytest.LogCaptureFixture) -> None:
    cpus = {1e-3: "CPU A", 3e-3: "CPU B", 6e-3: "CPU A"}

    def train(model: str, lr: float) -> dict:
        return {"best_val_loss": lr, "best_step": 1, "run_dir": f"runs/{model}-lr{lr:g}",
                "machine": {"cpu": cpus[lr], "cpu_capability": "AVX2"}}

    tuning = tune(["a"], GRID, 0, "held-out text", train, lambda run: None)
    assert tuning["machines"] == ["CPU A (AVX2)", "CPU B (AVX2)"]
    assert "2 machines" in caplog.text
    assert "**Mixed machines.** The grid's runs were trained on 2 CPUs" in "\n".join(tuning_markdown(tuning))

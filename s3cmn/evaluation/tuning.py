"""Equal tuning for a comparison: every model picks its own learning rate on the validation text, never the test text.

``benchmarks/compare.py --lr-grid`` trains every model at every rate of a grid (first seed only), records each
run's best validation loss, and keeps, per model, the rate with the lowest one (:func:`choose_rates`). A choice
at either end of the grid may be an optimum the grid cut off, so it is flagged: widen the grid and rerun.
The test split is scored only afterwards, for the final runs at the chosen rates.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

EDGE_ADVICE = "at the edge of the grid: widen it"


def parse_grid(text: str) -> list[float]:
    """``"1e-3,3e-3,6e-3"`` -> sorted, distinct, positive, finite rates; a ValueError names a bad entry."""
    rates = []
    for part in text.split(","):
        try:
            rate = float(part)
        except ValueError:
            raise ValueError(f"learning-rate grid {text!r}: {part.strip()!r} is not a number") from None
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError(f"learning-rate grid {text!r}: {part.strip()!r} is not a positive finite rate")
        rates.append(rate)
    if len(set(rates)) != len(rates):
        raise ValueError(f"learning-rate grid {text!r} repeats a rate")
    return sorted(rates)


def choose_rates(losses: dict[str, dict[float, float]], grid: list[float]) -> dict[str, dict[str, Any]]:
    """Per model, the rate of ``grid`` whose run had the lowest best validation loss.

    ``losses[model][rate]`` is that run's best validation loss (every rate of the grid present). Returns
    ``{model: {"lr", "best_val_loss", "at_edge"}}``; ``at_edge`` when a grid of 2 or more rates has its first or
    last rate chosen (a warning is logged). Ties go to the smaller rate.
    """
    chosen = {}
    for model, by_rate in losses.items():
        missing = [rate for rate in grid if rate not in by_rate]
        if missing:
            raise ValueError(f"{model}: no validation loss for the rates {missing}")
        for rate in grid:
            if not math.isfinite(by_rate[rate]):
                logger.warning("%s at lr %g: the validation loss is %s (diverged): not chosen", model, rate,
                               by_rate[rate])
        finite = [rate for rate in grid if math.isfinite(by_rate[rate])]
        if not finite:
            raise ValueError(f"{model}: every rate of the grid {grid} diverged (no finite validation loss)")
        best = min(finite, key=lambda rate: (by_rate[rate], rate))
        at_edge = len(grid) > 1 and best in (grid[0], grid[-1])
        if at_edge:
            logger.warning("%s: the chosen lr %g is %s %s", model, best, EDGE_ADVICE, grid)
        chosen[model] = {"lr": best, "best_val_loss": by_rate[best], "at_edge": at_edge}
    return chosen


def tune(models: list[str], grid: list[float], seed: int, validation: str,
         train: Callable[[str, float], dict[str, Any]], discard: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Train every model at every rate of ``grid`` (``train(model, rate)``: the run's record, with
    ``best_val_loss``, ``best_step`` and ``run_dir``, trained at ``seed`` and never scored on the test text) and
    choose each model's rate (:func:`choose_rates`); ``discard(run)`` for every run not chosen. The tuning record:
    the grid, every run's rate and best validation loss, the choices; ``validation`` names the text they used."""
    runs = []
    for rate in grid:  # rate-major, as seeds are seed-major: a change in the machine's load spreads over the models
        for model in models:
            record = train(model, rate)
            runs.append({"model": model, "lr": rate, "best_val_loss": record["best_val_loss"],
                         "best_step": record["best_step"], "run_dir": record["run_dir"],
                         "machine": machine_name(record)})
    losses = {model: {r["lr"]: math.inf if r["best_val_loss"] is None else r["best_val_loss"] for r in runs
                      if r["model"] == model} for model in models}
    chosen = choose_rates(losses, grid)
    for run in runs:
        if run["lr"] != chosen[run["model"]]["lr"]:
            discard(run)
    machines = sorted({run["machine"] for run in runs})
    if len(machines) > 1:
        logger.warning("the grid's runs were trained on %d machines (%s): the same seed's loss differs between "
                       "CPUs, so a close choice may be the machine's", len(machines), "; ".join(machines))
    return {"grid": grid, "seed": seed, "selected_on": "validation", "validation": validation,
            "test_scored_while_tuning": False, "chosen": chosen, "runs": runs, "machines": machines}


def machine_name(record: dict[str, Any]) -> str:
    """The CPU a run trained on, as its record names it (``unknown`` for records written before it was kept)."""
    machine = record.get("machine") or {}
    return f"{machine['cpu']} ({machine['cpu_capability']})" if machine.get("cpu") else "unknown"


def tuning_markdown(tuning: dict[str, Any]) -> list[str]:
    """The report's tuning section: validation loss per (model, rate), the chosen rate, the edge flags."""
    grid = tuning["grid"]
    lines = [f"Learning rate tuned per model over the grid {', '.join(f'{r:g}' for r in grid)} at seed "
             f"{tuning['seed']}: each model's rate is the one with the lowest best validation loss on the "
             f"validation text ({tuning['validation']}). The choice used only the validation text; the test "
             "split was never scored while tuning (it is scored once per final run, at the chosen rate).", "",
             "| model | " + " | ".join(f"val loss @ {r:g}" for r in grid) + " | chosen lr |",
             "| --- | " + " | ".join("---:" for _ in grid) + " | --- |"]
    for model, chosen in tuning["chosen"].items():
        losses = {run["lr"]: run["best_val_loss"] for run in tuning["runs"] if run["model"] == model}
        cells = ["–" if losses[r] is None else f"**{losses[r]:.3f}**" if r == chosen["lr"] else f"{losses[r]:.3f}"
                 for r in grid]
        flag = f" ({EDGE_ADVICE})" if chosen["at_edge"] else ""
        lines.append(f"| {model} | " + " | ".join(cells) + f" | {chosen['lr']:g}{flag} |")
    machines = tuning.get("machines") or []
    if len(machines) > 1:
        lines += ["", f"**Mixed machines.** The grid's runs were trained on {len(machines)} CPUs "
                  f"({'; '.join(machines)}). The same seed's validation loss differs between CPUs (floating-point "
                  "order), so a choice closer than that difference may be the machine's, not the rate's."]
    return lines + [""]

"""Markdown summaries of a task run or evaluation: the S³CMN model beside its baseline."""

from __future__ import annotations

from typing import Any

__all__ = ["render_task_report"]


def _vision_rows(results: dict[str, Any]) -> list[str]:
    names = list(results)
    levels = [c["noise_std"] for c in results[names[0]]["test"]["noise_curve"]]
    head = "| model | parameters | test accuracy | " + " | ".join(f"noise {s:g}" for s in levels) + " | spike rate |"
    rows = [head, "|---" * (4 + len(levels)) + "|"]
    for name in names:
        r, test = results[name], results[name]["test"]
        curve = " | ".join(f"{c['accuracy']:.3f}" for c in test["noise_curve"])
        rates = test["spike_rates"]["conv"] + test["spike_rates"]["blocks"]
        rate = f"{sum(rates) / len(rates):.3f}" if rates else "-"
        rows.append(f"| {name} ({r['kind']}) | {r['parameters']:,} | {test['accuracy']:.3f} | {curve} | {rate} |")
    per_class = results[names[0]]["test"]["per_class_accuracy"]
    worst = min(range(len(per_class)), key=per_class.__getitem__)
    rows += ["", f"Test images: {results[names[0]]['test']['examples']}; noise: Gaussian std on [0, 1] pixels. "
             f"Hardest class for {names[0]}: {worst} ({per_class[worst]:.3f})."]
    return rows


def _robotics_rows(results: dict[str, Any]) -> list[str]:
    rows = ["| model | parameters | one-step RMSE | rollout RMSE | final-step RMSE | valid horizon |",
            "|---|---|---|---|---|---|"]
    for name, r in results.items():
        t = r["test"]
        rows.append(f"| {name} ({r['kind']}) | {r['parameters']:,} | {t['one_step_rmse']:.4f} | "
                    f"{t['rollout_rmse']:.4f} | {t['rollout_rmse_by_step'][-1]:.4f} | {t['valid_horizon']} |")
    any_result = next(iter(results.values()))["test"]
    rows += ["", f"Test trajectories: {any_result['trajectories']}; open loop over "
             f"{len(any_result['rollout_rmse_by_step'])} steps; valid horizon: steps before the per-step RMSE "
             f"exceeds {any_result['threshold']:g}."]
    if "unseen" in any_result:
        system = any_result["unseen"]["system"]
        rows += ["", f"Unseen pendulum (length {system['length']:g} m, damping {system['damping']:g}), frozen and "
                 "adapted to each trajectory's observed steps (weights, lr and steps chosen on its validation "
                 "trajectories):", "",
                 "| model | frozen rollout RMSE | adapted rollout RMSE | adapted valid horizon | weights | lr "
                 "| steps |",
                 "|---|---|---|---|---|---|---|"]
        for name, r in results.items():
            u = r["test"]["unseen"]
            rows.append(f"| {name} ({r['kind']}) | {u['frozen']['rollout_rmse']:.4f} | "
                        f"{u['adapted']['rollout_rmse']:.4f} | {u['adapted']['valid_horizon']} | "
                        f"{u['chosen']['subset']} | {u['chosen']['lr']:g} | {u['chosen']['steps']} |")
    return rows


def render_task_report(report: dict[str, Any]) -> str:
    """The test scores of every model of a task report (from ``run_task`` or ``evaluate_task``) as Markdown."""
    task = report["task"] if isinstance(report["task"], str) else report["task"]["task"]
    results = report["results"]
    rows = _vision_rows(results) if task == "vision" else _robotics_rows(results)
    return f"## {task}: test split\n\n" + "\n".join(rows) + "\n"

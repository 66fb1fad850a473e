"""The vision and robotics tasks: s3cmn vs its parameter-matched baseline at the same budget, and the ablation
switches (population coding, liquid units, cross-modal attention), each over several seeds.

For each task preset (``vision-digits``: scikit-learn's 8x8 digits; ``robotics-pendulum``: the damped pendulum
with random torques), every seed trains, with ``s3cmn.tasks.run.run_task`` (one loop, AdamW, the same epochs,
batches and data order for a given seed, the state of the best validation epoch kept):

- ``baseline``: the plain CNN (vision) / GRU (robotics), parameters within 10% of the s3cmn model's;
- ``s3cmn``: the preset's blocks (Hyena -> Mamba -> LIF -> MLP, memory off);
- ``+population``: population-coded LIF (``use_population_coding``);
- ``+liquid``: the Mamba-liquid-spiking integration (``use_liquid``);
- ``+liquid+cross``: that plus cross-modal attention between the liquid and spiking paths.

The test split is scored once per model, at the end. Each figure is the mean ± the sample standard deviation
over the seeds (the spread), with the seeds' values in the JSON.

    python benchmarks/tasks.py --out results/tasks                 # 3 seeds, both tasks
    python benchmarks/tasks.py --seeds 0 --epochs 2 --out /tmp/t   # a smoke run (about a minute)
    python benchmarks/tasks.py --presets robotics-pendulum-unseen --variants s3cmn --out results/tasks/unseen

``robotics-pendulum-unseen`` also scores each model on a pendulum it never saw (1.5 m, damping 0.3), frozen and
adapted to each trajectory's first steps (``s3cmn.tasks.adapt``: the step chosen per model on that pendulum's
validation trajectories), as ``unseen_frozen_rollout_rmse`` / ``unseen_adapted_rollout_rmse``.

Writes ``<out>/<task preset>.json`` and ``<out>/tasks.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads sleep on a shared machine

import torch  # noqa: E402

from s3cmn.evaluation.benchmarking import source_commit  # noqa: E402
from s3cmn.model_config import S3CMNConfig  # noqa: E402
from s3cmn.run_config import TrainingConfig  # noqa: E402
from s3cmn.tasks.config import TaskConfig, task_preset  # noqa: E402
from s3cmn.tasks.run import run_task  # noqa: E402
from s3cmn.utils.precision import machine_record  # noqa: E402

VARIANTS: dict[str, dict[str, Any]] = {
    "s3cmn": {},
    "+population": {"use_population_coding": True},
    "+liquid": {"use_liquid": True},
    "+liquid+cross": {"use_liquid": True, "use_cross_modal_attention": True},
}
PRESETS = ("vision-digits", "robotics-pendulum")


def metrics(task: str, test: dict[str, Any]) -> dict[str, float]:
    """The headline numbers of one test report."""
    if task == "vision":
        noisy = {f"acc@noise{c['noise_std']:g}": c["accuracy"] for c in test["noise_curve"] if c["noise_std"] > 0}
        rates = test["spike_rates"]["blocks"]
        return {"accuracy": test["accuracy"], **noisy,
                **({"spike_rate": sum(rates) / len(rates)} if rates else {})}
    unseen = test.get("unseen")
    return {"one_step_rmse": test["one_step_rmse"], "rollout_rmse": test["rollout_rmse"],
            "valid_horizon": test["valid_horizon"],
            **({"unseen_frozen_rollout_rmse": unseen["frozen"]["rollout_rmse"],
                "unseen_adapted_rollout_rmse": unseen["adapted"]["rollout_rmse"]} if unseen else {})}


def run_preset(preset: str, seeds: list[int], epochs: int | None,
               variants: tuple[str, ...] = tuple(VARIANTS)) -> dict[str, Any]:
    """Every variant and the baseline at every seed (seed-major, so load changes spread over the models)."""
    sections = task_preset(preset)
    task = TaskConfig(**sections["task"])
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in ("baseline", *variants)}
    for seed in seeds:
        training = TrainingConfig(**{**sections["training"], "seed": seed,
                                     **({"num_epochs": epochs} if epochs else {})})
        for variant, changes in ((v, VARIANTS[v]) for v in variants):
            config = S3CMNConfig(**{**sections["model"], **changes})
            names = ("s3cmn", "baseline") if variant == "s3cmn" else ("s3cmn",)
            start = time.perf_counter()
            report = run_task(config, training, task, names=names)["results"]
            logging.info("%s seed %d %s: %.0f s", preset, seed, variant, time.perf_counter() - start)
            for name, result in report.items():
                runs["baseline" if name == "baseline" else variant].append({
                    "seed": seed, "parameters": result["parameters"], "best_epoch": result["best_epoch"],
                    "epochs": result["epochs"], **metrics(task.task, result["test"]), "test": result["test"]})
    return {"preset": preset, "task": task.to_dict(), "training": sections["training"], "seeds": seeds,
            "epochs": epochs or sections["training"]["num_epochs"], "runs": runs}


def spread(values: list[float]) -> str:
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.3f} ± {sd:.3f}"


def table(result: dict[str, Any]) -> str:
    """A markdown table: one row per model, mean ± spread of each headline number."""
    runs = result["runs"]
    columns = [k for k in runs["s3cmn"][0] if k not in ("seed", "test", "best_epoch", "epochs", "parameters")]
    lines = [f"### {result['preset']} ({len(result['seeds'])} seeds, {result['epochs']} epochs)", "",
             "| model | parameters | " + " | ".join(columns) + " |", "|---" * (len(columns) + 2) + "|"]
    for name, rows in runs.items():
        cells = [spread([r[c] for r in rows]) if all(c in r for r in rows) else "-" for c in columns]
        lines.append(f"| {name} | {rows[0]['parameters']:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", default=",".join(PRESETS), help="comma list of task presets")
    parser.add_argument("--seeds", default="0,1,2", help="comma list of seeds")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per run (default: the preset's)")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma list of s3cmn variants ({', '.join(VARIANTS)}); the baseline trains beside s3cmn")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--out", default="results/tasks", help="output folder")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("s3cmn").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    machine = machine_record("fp32", threads=args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    variants = tuple(args.variants.split(","))
    if "s3cmn" not in variants or not set(variants) <= set(VARIANTS):
        parser.error(f"--variants {args.variants}: list s3cmn and any of {', '.join(VARIANTS)}")
    where = f"{machine['cpu']}, {machine['cpu_capability']}, {args.threads} torch thread(s), fp32, shared machine"
    sections = [f"Machine: {where}. Test split, scored once per model; mean ± sample std "
                "over seeds. Rollout RMSE in state units (rad, rad/s) over the open-loop horizon; valid_horizon: "
                "steps before the per-step RMSE first exceeds the threshold.", ""]
    for preset in args.presets.split(","):
        start = time.perf_counter()
        result = run_preset(preset, seeds, args.epochs, variants)
        result["machine"], result["seconds"] = machine, time.perf_counter() - start
        result["command"], result["commit"] = " ".join(["python benchmarks/tasks.py", *sys.argv[1:]]), source_commit()
        (out / f"{preset}.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
        sections.append(table(result))
        print(sections[-1])
    (out / "tasks.md").write_text("\n".join(sections), encoding="utf-8")
    print(f"wrote {out}/tasks.md")


if __name__ == "__main__":
    main()

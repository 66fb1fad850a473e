"""s3cmn-sweep: hyperparameter studies on Optuna (resumable; shareable across machines through --storage)."""

from __future__ import annotations

import argparse
import sys

from s3cmn.cli.arguments import (
    add_config_options,
    add_log_level,
    add_settings_arguments,
    configure_logging,
    parse_args_strictly,
    settings_from_args,
)
from s3cmn.settings_file import read_config_file

SECTIONS = ("model", "training", "data")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="s3cmn-sweep",
        allow_abbrev=False,
        usage="s3cmn-sweep [--space FILE] [--param NAME=SPEC ...] [--n-trials N] [--storage URL] "
        "[--preset NAME] [--<setting> VALUE ...]",
        description="Run (or resume) an Optuna study. Each trial trains with the base settings (preset, config "
        "file, --modify, flags) plus the trial's parameters and is scored by validation perplexity. Run the same "
        "command again to resume; point several machines at one --storage URL to share a study.",
    )
    sweep = parser.add_argument_group("sweep")
    sweep.add_argument("--space", help="YAML/JSON with 'space' (and optionally 'base', 'n_trials', ...)")
    sweep.add_argument("--param", action="append", default=[], metavar="NAME=SPEC",
                       help="a search dimension: NAME=log:1e-4:3e-3, NAME=float:0:0.3, NAME=int:1:4, "
                       "NAME=choice:a,b (width_scale=choice:0.5,1.0,1.5 scales all widths)")
    sweep.add_argument("--n-trials", type=int, default=10, help="finished trials the study should reach")
    sweep.add_argument("--study-name", default="s3cmn", help="the study's name in the storage (default s3cmn)")
    sweep.add_argument("--storage", help="Optuna storage URL (default sqlite:///<output-dir>/study.db)")
    sweep.add_argument("--sampler", choices=["tpe", "random", "grid"], default="tpe",
                       help="how trials pick their parameters; grid needs a choice list for every one (default tpe)")
    sweep.add_argument("--pruner", choices=["median", "none"], default="median",
                       help="median: stop a trial whose validation loss is worse than the median of earlier trials "
                       "at the same step (default median)")
    add_config_options(parser)
    add_settings_arguments(parser, SECTIONS)
    add_log_level(parser, "WARNING")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse_args_strictly(parser, argv)
    configure_logging(args.log_level)
    from s3cmn.data.errors import DataError
    from s3cmn.training import CheckpointError, TrainingError
    from s3cmn.training.sweep import SweepSpec, parse_param, run_sweep, trials_table
    from s3cmn.utils.fields import ConfigError

    try:
        file_spec = read_config_file(args.space) if args.space else {}
        unknown = set(file_spec) - {"base", "space", "n_trials", "study_name", "storage", "sampler", "pruner"}
        if unknown:
            raise ConfigError(f"{args.space}: unknown keys {sorted(unknown)} (allowed: base, space, n_trials, "
                              "study_name, storage, sampler, pruner)")
        base_values = dict(file_spec.get("base", {}))
        preset = base_values.pop("preset", None)
        if not args.preset and not args.config_path:
            args.preset = preset or "tiny"
        base = settings_from_args(args, SECTIONS, base_values, f"{args.space} [base]")
        space = dict(file_spec.get("space", {}))
        space.update(dict(parse_param(p) for p in args.param))
        output_dir = base.training.get("output_dir", "runs/sweep")
        if output_dir == "runs/s3cmn":
            output_dir = "runs/sweep"
        spec = SweepSpec(base, space, n_trials=file_spec.get("n_trials", args.n_trials),
                         study_name=file_spec.get("study_name", args.study_name),
                         storage=args.storage or file_spec.get("storage"),
                         sampler=file_spec.get("sampler", args.sampler), pruner=file_spec.get("pruner", args.pruner),
                         seed=base.build_section("training").seed)
        study = run_sweep(spec, output_dir)
    except KeyboardInterrupt as err:
        parser.exit(130, f"s3cmn-sweep: interrupted ({err}); finished trials are saved: rerun the command to resume\n")
    except (ConfigError, DataError, TrainingError, CheckpointError, ImportError, OSError) as err:
        parser.exit(2, f"s3cmn-sweep: error: {err}\n")
    print(trials_table(study))
    print(f"\nresults in {output_dir}: trials.md, best_config.yaml (s3cmn-train --config-path), PNG plots")
    return 0



if __name__ == "__main__":
    sys.exit(main())

"""s3cmn-eval: evaluate a checkpoint: WikiText-2 perplexity (token, word, bits per byte; memory off and on),
spike sparsity, memory statistics, speed, size and peak memory, optionally 8-bit side by side."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from s3cmn.cli.arguments import (
    add_log_level,
    add_settings_arguments,
    configure_logging,
    parse_args_strictly,
    settings_from_args,
)

SECTIONS = ("data", "evaluation")


def _memory_modes(text: str) -> list[str]:
    from s3cmn.evaluation.readouts import parse_memory_modes

    try:
        return parse_memory_modes(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="s3cmn-eval",
        allow_abbrev=False,
        usage="s3cmn-eval CHECKPOINT [--task vision|robotics] [--wikitext2] [--protocol sliding|lm-eval] "
        "[--split test|valid] [--data-dir DIR] [--<setting> VALUE ...]",
        description="Evaluate a checkpoint folder (save_pretrained, or a training checkpoint such as "
        "runs/s3cmn/best) on WikiText-2 with sliding windows. Offline: --data-dir ../shared/data/wikitext-2-raw. "
        "The tokenizer is the one saved in the checkpoint (else --tokenizer). Writes report.json and report.md "
        "with --report-dir, PNG charts with --plot-dir; prints the Markdown summary.",
    )
    parser.add_argument("checkpoint", nargs="?",
                        help="model folder: config.json, model.safetensors, memory/, tokenizer")
    parser.add_argument("--checkpoint", dest="checkpoint_dir", metavar="DIR", help="the same as CHECKPOINT")
    parser.add_argument("--task", choices=["llm", "vision", "robotics"], default="llm",
                        help="vision / robotics: score the s3cmn-train --task run in DIR (s3cmn and its baseline) "
                        "on its test split: accuracy and noise curve, or rollout error")
    parser.add_argument("--wikitext2", action="store_true",
                        help="score WikiText-2 raw (the default, and for now the only, text)")  # fmt: skip
    parser.add_argument("--protocol", choices=["sliding", "lm-eval"], default="sliding",
                        help="sliding: the split as one stream of raw text, overlapping windows (context_length, "
                        "stride); lm-eval: as lm-evaluation-harness's wikitext task scores it (one article a "
                        "document, detokenised, disjoint windows of max_length = context_length or the trained "
                        "length; needs the lmeval extra): the numbers to set beside published ones. "
                        "docs/evaluation.md explains the difference")  # fmt: skip
    parser.add_argument("--max-documents", type=int, default=0, metavar="N",
                        help="--protocol lm-eval: score only the first N documents (the harness's --limit N)")
    parser.add_argument("--config-path", help="a JSON or YAML settings file with 'data' / 'evaluation' sections")
    add_settings_arguments(parser, SECTIONS)
    from s3cmn.evaluation.readouts import MEMORY_MODES

    memory = next(a for a in parser._actions if a.dest == "memory")  # the generated flag takes a comma list here
    memory.choices, memory.type = None, _memory_modes
    memory.metavar = "MODE[,MODE...]"
    memory.help = (f"memory modes to score side by side, a comma list of {', '.join(MEMORY_MODES)} (old names: on = "
                   "learned, both = off,learned; default both). cache / knn / cache+knn need `s3cmn-memory fit` "
                   "(and `build` for knn) first")  # fmt: skip
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_log_level(parser, "INFO")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse_args_strictly(parser, argv)
    configure_logging(args.log_level)
    from s3cmn.data.errors import DataError
    from s3cmn.evaluation.errors import EvaluationError
    from s3cmn.evaluation.report import render_markdown, write_reports
    from s3cmn.evaluation.run import evaluate_checkpoint
    from s3cmn.utils.checkpoints import CheckpointError
    from s3cmn.utils.fields import ConfigError

    args.checkpoint = args.checkpoint_dir or args.checkpoint
    if args.checkpoint is None:
        parser.error("give the checkpoint folder: CHECKPOINT or --checkpoint DIR")
    if args.task != "llm":
        return _evaluate_task(parser, args.checkpoint)
    memory_modes = vars(args).pop("memory", None)  # a list: EvalConfig.memory keeps the old on/off/both
    try:
        settings = settings_from_args(args, SECTIONS)
        configs = settings.build()
        data, evaluation = configs.data, configs.evaluation
        if args.protocol == "lm-eval":
            return _evaluate_lm_eval(args, data, evaluation)
        report = evaluate_checkpoint(args.checkpoint, data, evaluation, memory_start=evaluation.memory_start,
                                     memory_modes=memory_modes, progress=not args.no_progress)  # fmt: skip
        written = write_reports(report, evaluation.report_dir, evaluation.plot_dir)
    except (CheckpointError, EvaluationError, DataError, ConfigError, ImportError, OSError) as err:
        message = " ".join(str(err).split()) or type(err).__name__
        parser.exit(2, f"s3cmn-eval: error: {message}\n")
    print(render_markdown(report), end="")
    for kind, path in written.items():
        print(f"{kind}: {', '.join(path) if isinstance(path, list) else path}")
    return 0


def _evaluate_lm_eval(args: argparse.Namespace, data: Any, evaluation: Any) -> int:
    """s3cmn-eval --protocol lm-eval: the report of lm_eval_protocol (no plots: it has no curves)."""
    from s3cmn.evaluation.lm_eval_protocol import evaluate_lm_eval_protocol, render_markdown
    from s3cmn.evaluation.report import write_reports

    if evaluation.plot_dir:
        logging.getLogger(__name__).warning("--protocol lm-eval draws no plots: --plot-dir is ignored")
    report = evaluate_lm_eval_protocol(args.checkpoint, data, evaluation, max_documents=args.max_documents,
                                       progress=not args.no_progress)  # fmt: skip
    written = write_reports(report, evaluation.report_dir, render=render_markdown)
    print(render_markdown(report), end="")
    for kind, path in written.items():
        print(f"{kind}: {path}")
    return 0


def _evaluate_task(parser: argparse.ArgumentParser, checkpoint: str) -> int:
    """s3cmn-eval --task vision|robotics: the run's models on its test split, side by side."""
    from s3cmn.data.errors import DataError
    from s3cmn.tasks.commands import evaluate_task_command
    from s3cmn.training.checkpoint import CheckpointError
    from s3cmn.utils.fields import ConfigError

    try:
        print(evaluate_task_command(checkpoint), end="")
    except (CheckpointError, DataError, ConfigError, OSError) as err:
        parser.exit(2, f"s3cmn-eval: error: {' '.join(str(err).split())}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

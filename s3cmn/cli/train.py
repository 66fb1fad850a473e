"""s3cmn-train: train (or resume) a model. With no arguments: the tiny preset on WikiText-2, a short run."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from s3cmn.cli.arguments import (
    add_config_options,
    add_log_level,
    add_settings_arguments,
    configure_logging,
    interactive_edit,
    parse_args_strictly,
    settings_from_args,
)
from s3cmn.settings_file import SECTION_OF, Settings, write_config_file

SECTIONS = ("model", "training", "data")
logger = logging.getLogger("s3cmn.cli.train")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="s3cmn-train",
        allow_abbrev=False,
        usage="s3cmn-train [--task llm|vision|robotics] [--preset NAME] [--config-path FILE] [--modify JSON] "
        "[--<setting> VALUE ...]",
        description="Train an S3CMN model (default: the tiny preset on WikiText-2). Offline: "
        "--train-file ../shared/data/wikitext-2-raw/wiki.valid.raw "
        "--validation-file ../shared/data/wikitext-2-raw/wiki.test.raw "
        "--tokenizer ../shared/data/tokenizers/bert-base-uncased. Under torchrun it trains data-parallel. "
        "--task vision (preset vision-digits) / --task robotics (preset robotics-pendulum) trains the S3CMN model "
        "and its parameter-matched CNN / GRU baseline on the task instead.",
    )
    add_config_options(parser)
    add_settings_arguments(parser, SECTIONS + ("task",))
    from s3cmn.tasks.config import TASK_PRESETS  # --task vision|robotics: s3cmn.tasks.commands

    preset = next(a for a in parser._actions if a.dest == "preset")
    preset.choices = sorted([*preset.choices, *TASK_PRESETS])
    add_log_level(parser, "INFO")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse_args_strictly(parser, argv)
    configure_logging(args.log_level)
    from s3cmn.data.errors import DataError
    from s3cmn.tasks.commands import is_task_preset, task_run_settings, train_task_command
    from s3cmn.training import CheckpointError, TrainingError, train
    from s3cmn.training.checkpoint import check_output_dir
    from s3cmn.utils.fields import ConfigError

    task_preset = args.preset if is_task_preset(args.preset) else None
    args.preset = None if task_preset else args.preset
    implicit_preset = not args.preset and not args.config_path and not task_preset
    if implicit_preset and getattr(args, "task", "llm") == "llm":
        args.preset = "tiny"
    try:
        settings = settings_from_args(args, SECTIONS + ("task",))
        task_settings = task_run_settings(settings, task_preset)
        if task_settings is not None:  # --task vision|robotics or a task preset: the task run, then done
            if args.save_config:
                write_config_file(task_settings, args.save_config)
            print(train_task_command(task_settings.build()), end="")
            return 0
        training = settings.build_section("training")
        if training.resume:
            check_output_dir(training.output_dir, training.resume, training.overwrite)  # before reading `last`
            settings = resumed_settings(args, settings, implicit_preset)
        if args.interactive:
            settings = interactive_edit(settings, SECTIONS)
        configs = settings.build()
        if args.save_config:
            write_config_file(settings, args.save_config)
        result = train(configs.model, configs.training, configs.data)
    except (ConfigError, DataError, TrainingError, CheckpointError, OSError) as err:
        parser.exit(2, f"s3cmn-train: error: {err}\n")
    except KeyboardInterrupt:  # a third Ctrl-C: the checkpoints on disk are whole (they are written atomically)
        parser.exit(130, "s3cmn-train: interrupted; the checkpoints already written are intact\n")
    import torch.distributed as dist

    if dist.is_initialized():
        rank = dist.get_rank()
        dist.destroy_process_group()
        if rank != 0:
            return 0
    val = ""
    if result.val_loss is not None:
        last = next((r for r in reversed(result.history) if r.get("kind") == "validation"), {})
        scored = (f" on {last['tokens_scored']:,} of {last['tokens_available']:,} validation tokens"
                  if "tokens_scored" in last else "")
        val = f", validation loss {result.val_loss:.4f} (ppl {result.val_ppl:.2f}){scored}"
    print(f"stopped ({result.stopped}) after {result.steps} steps ({result.epochs:.2f} epochs) in "
          f"{result.seconds:.0f} s, "
          f"{result.tokens} tokens, {result.tokens_per_s:.0f} tokens/s ({result.precision}){val}; "
          f"checkpoints in {result.output_dir}")
    return 130 if result.stopped.startswith("signal") else 0


def resumed_settings(args: argparse.Namespace, settings: Settings, implicit_preset: bool) -> Settings:
    """On --resume the checkpoint's own settings are the base; only what is given now (flags, --config-path,
    --modify, an explicit --preset) goes on top. The training loop then applies or refuses each difference.
    """
    from s3cmn.training.checkpoint import read_run_settings

    output_dir = settings.build_section("training").output_dir
    saved = read_run_settings(Path(output_dir) / "last")
    given_args = argparse.Namespace(**vars(args))
    if implicit_preset:
        given_args.preset = None
    given = settings_from_args(given_args, SECTIONS)
    merged = Settings()
    for section in SECTIONS:
        values = saved[section]
        if values is None:  # an older checkpoint: this section as the preset and flags make it
            logger.warning("the checkpoint in %s does not record its %s settings: using the preset and flags",
                           output_dir, section)
            values = getattr(settings, section)
        merged.update({section: {k: v for k, v in values.items() if SECTION_OF.get(k) == section}}, "checkpoint")
        merged.update({section: getattr(given, section)}, "flags")
    return merged


if __name__ == "__main__":
    sys.exit(main())

"""s3cmn-train: train (or resume) a model. With no arguments: the tiny preset on WikiText-2, a short run."""

from __future__ import annotations

import argparse
import logging
import sys

from s3cmn.cli.settings import (
    add_config_options,
    add_settings_arguments,
    interactive_edit,
    parse_args_strictly,
    settings_from_args,
    write_config_file,
)

SECTIONS = ("model", "training", "data")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="s3cmn-train",
        allow_abbrev=False,
        usage="s3cmn-train [--preset NAME] [--config-path FILE] [--modify JSON] [--<setting> VALUE ...]",
        description="Train an S3CMN model (default: the tiny preset on WikiText-2). Offline: "
        "--train-file ../shared/data/wikitext-2-raw/wiki.valid.raw "
        "--validation-file ../shared/data/wikitext-2-raw/wiki.test.raw "
        "--tokenizer ../shared/data/tokenizers/bert-base-uncased. Under torchrun it trains data-parallel.",
    )
    add_config_options(parser)
    add_settings_arguments(parser, SECTIONS)
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse_args_strictly(parser, argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from s3cmn.data.errors import DataError
    from s3cmn.training import CheckpointError, TrainingError, train
    from s3cmn.utils.fields import ConfigError

    if not args.preset and not args.config_path:
        args.preset = "tiny"
    try:
        settings = settings_from_args(args, SECTIONS)
        if args.interactive:
            settings = interactive_edit(settings, SECTIONS)
        model_config, training, data, _ = settings.build()
        if args.save_config:
            write_config_file(settings, args.save_config)
        result = train(model_config, training, data)
    except (ConfigError, DataError, TrainingError, CheckpointError, OSError) as err:
        parser.exit(2, f"s3cmn-train: error: {err}\n")
    import torch.distributed as dist

    if dist.is_initialized():
        rank = dist.get_rank()
        dist.destroy_process_group()
        if rank != 0:
            return 0
    val = f", validation loss {result.val_loss:.4f} (ppl {result.val_ppl:.2f})" if result.val_loss is not None else ""
    print(f"stopped ({result.stopped}) after {result.steps} steps, {result.tokens} tokens, "
          f"{result.tokens_per_s:.0f} tokens/s{val}; checkpoints in {result.output_dir}")
    return 130 if result.stopped.startswith("signal") else 0


if __name__ == "__main__":
    sys.exit(main())

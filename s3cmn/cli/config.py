"""s3cmn-config: create, show, modify and validate settings files."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from s3cmn.cli.arguments import (
    add_config_options,
    add_settings_arguments,
    interactive_edit,
    parse_args_strictly,
    settings_from_args,
)
from s3cmn.settings_file import SECTIONS as ALL_SECTIONS
from s3cmn.settings_file import read_config_file, write_config_file
from s3cmn.utils.fields import ConfigError

SECTIONS = tuple(ALL_SECTIONS)  # s3cmn-config handles every section


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="s3cmn-config",
        allow_abbrev=False,
        usage="s3cmn-config [show|validate] [--preset NAME] [--config-path FILE] [--modify JSON] "
        "[--save-config PATH] [--interactive] [--<setting> VALUE ...]",
        description="Create, show, modify and validate s3cmn settings. Precedence: --preset < --config-path "
        "< --modify < single flags.",
    )
    parser.add_argument(
        "action", nargs="?", choices=["show", "validate"], default="show",
        help="show: print the resulting settings (default); validate: check --config-path and say so",
    )
    add_config_options(parser)
    add_settings_arguments(parser, SECTIONS)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse_args_strictly(parser, argv)
    try:
        if args.action == "validate":
            if not args.config_path:
                raise ConfigError("validate needs --config-path FILE")
            read_config_file(args.config_path)
        settings = settings_from_args(args, SECTIONS)
        settings.build()
        if args.interactive:
            settings = interactive_edit(settings, SECTIONS)
            settings.build()
        if args.save_config:
            write_config_file(settings, args.save_config)
    except ConfigError as err:
        parser.exit(2, f"s3cmn-config: error: {err}\n")
    if args.action == "validate":
        print(f"{args.config_path}: valid")
    elif not args.save_config or args.interactive:
        print(json.dumps(dataclasses.asdict(settings.complete()), indent=2))
    else:
        print(f"wrote {args.save_config}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

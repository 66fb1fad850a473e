"""The settings on the command line: flags generated from the config dataclasses, presets, overrides, prompts.

Precedence, lowest first: the preset < the config file (``--config-path``) < ``--modify`` JSON < single
flags (``--hidden-dim 96``). The settings themselves and their files are :mod:`s3cmn.settings_file`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import types
from typing import Any, Literal, TextIO, Union, get_args, get_origin

from s3cmn.presets import PRESETS, preset_fields, preset_training
from s3cmn.settings_file import SECTIONS, Settings, read_config_file
from s3cmn.utils.fields import (
    ConfigError,
    by_group,
    check_value,
    closest_name,
    describe_type,
    field_types,
    settings_fields,
)

# --------------------------------------------------------------------------------------------------
# flags


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def parse_value(text: str, tp: Any) -> Any:
    """Parse a flag or prompt answer for a field of type ``tp`` (JSON for lists and mappings)."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if type(None) in options and text.strip().lower() in ("none", "null", ""):
            return None
        tp = next(o for o in options if o is not type(None))
        origin = get_origin(tp)
    if tp is bool:
        lowered = text.strip().lower()
        if lowered in ("1", "true", "yes", "y", "on"):
            return True
        if lowered in ("0", "false", "no", "n", "off"):
            return False
        raise ValueError(f"expected true or false, got {text!r}")
    if tp is int:
        return int(text)
    if tp is float:
        return float(text)
    if origin is Literal or tp is str:
        return text
    if origin in (list, dict):
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            if origin is list:  # also accept "0,2,-1" / "mamba,hyena,mlp": items parsed as the list's item type
                (item,) = get_args(tp) or (str,)
                return [parse_value(v.strip(), item) for v in text.split(",") if v.strip()]
            raise
        return value
    return text


def _metavar(tp: Any) -> str:
    options = [o for o in get_args(tp) if o is not type(None)] if get_origin(tp) in (Union, types.UnionType) else [tp]
    tp = options[0]
    if tp is bool:
        return "BOOL"
    if get_origin(tp) in (list, dict):
        return "JSON"
    return getattr(tp, "__name__", "VALUE").upper()


# The preset a CLI uses when neither --preset nor --config-path is given (the others start from the defaults).
DEFAULT_PRESET = {"s3cmn-train": "tiny", "s3cmn-sweep": "tiny"}


def _flag_value(argv: list[str], flag: str) -> str | None:
    for i, token in enumerate(argv):
        if token == flag and i + 1 < len(argv):
            return argv[i + 1]
        if token.startswith(flag + "="):
            return token.split("=", 1)[1]
    return None


def show_effective_defaults(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """Make ``--help`` show, for every setting, the value this command line would use: the preset's (named by
    --preset, else the CLI's default preset) and the config file's (--config-path) over the global defaults."""
    preset = _flag_value(argv, "--preset")
    config_path = _flag_value(argv, "--config-path")
    if preset is None and config_path is None:
        preset = DEFAULT_PRESET.get(parser.prog)
    values: dict[str, Any] = {}
    try:
        if preset in PRESETS:
            values.update(preset_fields(preset))
            values.update(preset_training(preset))
        if config_path:
            file_settings = Settings()
            file_settings.update(read_config_file(config_path), str(config_path))
            for section in SECTIONS:
                values.update(getattr(file_settings, section))
    except ConfigError:
        return  # the run itself reports a bad preset or file; the help keeps the global defaults
    parts = [f"preset {preset}" if preset in PRESETS else "", config_path or ""]
    source = " from " + " + ".join(part for part in parts if part)
    for action in parser._actions:
        if action.dest in values and hasattr(action, "shown_default"):
            action.shown_default = f"{values[action.dest]!r}{source}".replace("%", "%%")


def parse_args_strictly(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """``parse_args``, but an unknown flag is reported with the closest valid flag; ``--help`` shows the values
    the chosen (or default) preset will use (:func:`show_effective_defaults`)."""
    argv = sys.argv[1:] if argv is None else argv
    if "-h" in argv or "--help" in argv:
        show_effective_defaults(parser, argv)
    flags = [opt for action in parser._actions for opt in action.option_strings]
    for token in argv:
        name = token.split("=", 1)[0]
        if name.startswith("--") and name not in flags:
            hint = closest_name(name, flags)
            parser.error(f"unknown option {name}" + (f"; did you mean {hint}?" if hint else ""))
    return parser.parse_args(argv)


def add_settings_arguments(parser: argparse.ArgumentParser, sections: tuple[str, ...]) -> None:
    """One flag per field of the given sections, in help groups; defaults are left to the config objects."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    types_by_name = {name: tp for section in sections for name, tp in field_types(SECTIONS[section]).items()}
    for f in by_group(f for section in sections for f in settings_fields(SECTIONS[section])):
        tp = types_by_name[f.name]
        group_name = f.metadata["group"]
        if group_name not in groups:
            groups[group_name] = parser.add_argument_group(f"{group_name} settings")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        # %(shown_default)s is filled when the help is printed: the value the chosen preset will use.
        help_text = f"{f.metadata['help']} ({describe_type(tp)}; default %(shown_default)s)"

        def convert(text: str, tp: Any = tp) -> Any:
            try:
                return parse_value(text, tp)
            except (ValueError, json.JSONDecodeError) as err:
                raise argparse.ArgumentTypeError(f"{err}") from None

        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_text}
        if get_origin(tp) is Literal:
            kwargs["choices"] = list(get_args(tp))
        else:
            kwargs["type"] = convert
            kwargs["metavar"] = _metavar(tp)
        if tp is bool:  # a bare --resume means --resume true
            kwargs.update(nargs="?", const=True, metavar="BOOL")
        action = groups[group_name].add_argument(_flag(f.name), **kwargs)
        action.shown_default = repr(default).replace("%", "%%")


def add_log_level(parser: argparse.ArgumentParser, default: str) -> None:
    """``--log-level``: how much the library logs to stderr (set up by :func:`configure_logging`)."""
    parser.add_argument("--log-level", default=default, choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="the least severe log messages shown on stderr (default %(default)s)")


def configure_logging(level: str | int) -> None:
    """Log lines with time, level and logger name, from ``level`` up, to stderr."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """--preset, --config-path, --modify, --save-config and --interactive (shared by every CLI)."""
    group = parser.add_argument_group("configuration")
    group.add_argument("--preset", choices=sorted(PRESETS), help="start from a preset (lowest precedence)")
    group.add_argument("--config-path", help="a JSON or YAML settings file (overrides the preset)")
    group.add_argument("--modify", help="JSON overrides, e.g. '{\"liquid_units\": 96}' (overrides the file)")
    group.add_argument("--save-config", metavar="PATH", help="write the resulting settings (JSON or YAML)")
    group.add_argument("--interactive", action="store_true", help="walk the settings and edit them at prompts")


def settings_from_args(
    args: argparse.Namespace, sections: tuple[str, ...], extra: dict[str, Any] | None = None, extra_source: str = ""
) -> Settings:
    """Apply preset < config file < ``extra`` (e.g. a sweep file's base) < --modify < flags, in that order.

    A time budget decides the run's length: when ``max_time`` is given above the preset and ``num_epochs`` is
    not, ``num_epochs`` is 0 (no epoch limit), so the preset's (or the default) epoch count cannot end it first.
    """
    settings, given = Settings(), Settings()  # given: everything above the preset
    if getattr(args, "preset", None):
        settings.update(preset_fields(args.preset), f"preset {args.preset}")
        settings.update(preset_training(args.preset), f"preset {args.preset}")
    layers: list[tuple[dict[str, Any], str]] = []
    if getattr(args, "config_path", None):
        layers.append((read_config_file(args.config_path), str(args.config_path)))
    if extra:
        layers.append((extra, extra_source))
    if getattr(args, "modify", None):
        layers.append((_modify_overrides(args.modify), "--modify"))
    flags = {}
    for section in sections:
        for f in settings_fields(SECTIONS[section]):
            if f.name in vars(args):
                flags[f.name] = getattr(args, f.name)
    layers.append((flags, "flags"))
    for values, source in layers:
        settings.update(values, source)
        given.update(values, source)
    if given.training.get("max_time") and "num_epochs" not in given.training:
        settings.update({"num_epochs": 0}, "max_time without num_epochs")
    return settings


def _modify_overrides(text: str) -> dict[str, Any]:
    try:
        overrides = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"--modify is not valid JSON: {err}") from None
    if not isinstance(overrides, dict):
        raise ConfigError("--modify must be a JSON object, e.g. '{\"hidden_dim\": 96}'")
    return overrides


# --------------------------------------------------------------------------------------------------
# interactive editing


def interactive_edit(settings: Settings, sections: tuple[str, ...], stdin: TextIO | None = None,
                     stdout: TextIO | None = None) -> Settings:
    """Walk the fields group by group; an empty answer keeps the value, a bad one is explained and re-asked.

    Works with piped stdin (one answer a line); at the end of input the remaining fields are kept.
    """
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    stdout.write("Press Enter to keep a value. Lists and mappings are JSON.\n")
    for section in sections:
        cls = SECTIONS[section]
        hints = field_types(cls)
        current_obj = settings.build_section(section)
        last_group = None
        for f in settings_fields(cls):
            if f.metadata["group"] != last_group:
                last_group = f.metadata["group"]
                stdout.write(f"\n[{last_group}]\n")
            while True:
                current = getattr(current_obj, f.name)
                stdout.write(f"{f.name} ({f.metadata['help']}) [{json.dumps(current)}]: ")
                stdout.flush()
                line = stdin.readline()
                if not line:
                    stdout.write("\n")
                    return settings
                answer = line.strip()
                if not answer:
                    break
                try:
                    value = check_value(cls.__name__, f.name, parse_value(answer, hints[f.name]), hints[f.name],
                                        dict(f.metadata))
                    trial = settings.copy()
                    trial.update({f.name: value}, "interactive")
                    current_obj = trial.build_section(section)
                except (ConfigError, ValueError, json.JSONDecodeError) as err:
                    stdout.write(f"  not accepted: {err}\n")
                    continue
                settings = trial
                break
    return settings

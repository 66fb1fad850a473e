"""Pages generated at build time (mkdocs-gen-files): the configuration and CLI references, results pages.

Nothing here is hand-copied: the configuration reference is read from the typed settings (their fields,
groups, defaults, ranges and help), the CLI reference from each command's argparse parser, and the reports page
embeds the Markdown reports and PNGs under ``results/`` that the benchmark and evaluation commands wrote. (The
numbers page, ``docs/results.md``, is generated from the same folder by ``scripts/results_page.py`` and committed,
so that a test can say when it is stale.)
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import re
from pathlib import Path

import mkdocs_gen_files

from s3cmn.presets import PRESETS
from s3cmn.settings_file import SECTIONS
from s3cmn.utils.fields import by_group, describe_type, field_types, settings_fields

REPO = Path(__file__).resolve().parents[1]
CLIS = ["train", "eval", "generate", "memory", "config", "sweep"]


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _range(meta: dict) -> str:
    bounds = [f"{op} {meta[key]}" for key, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
              if meta.get(key) is not None]
    return ", ".join(bounds)


def configuration_page() -> str:
    lines = ["# Configuration reference", "",
             "Generated from the typed settings (`S3CMNConfig`, `TrainingConfig`, `DataConfig`, `EvalConfig`) "
             "when the site is built. Every field is a flag of the CLIs that use its section "
             "(`hidden_dim` is `--hidden-dim`) and a key of a settings file. Precedence: preset < config file "
             "(`--config-path`) < `--modify` JSON < single flags. Values are checked once, at construction: "
             "an unknown key names the closest valid key, a wrong type or range names the field.", ""]
    for section, cls in SECTIONS.items():
        lines += [f"## `{section}`: {cls.__name__}", "", (cls.__doc__ or "").strip().splitlines()[0], ""]
        hints = field_types(cls)
        fields = by_group(settings_fields(cls))
        group = None
        for f in fields:
            if f.metadata["group"] != group:
                group = f.metadata["group"]
                lines += ["", f"### {group}", "", "| setting | type | default | allowed | help |",
                          "| --- | --- | --- | --- | --- |"]
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            lines.append(f"| `{f.name}` | {_cell(describe_type(hints[f.name]))} | `{_cell(repr(default))}` | "
                         f"{_cell(_range(f.metadata))} | {_cell(f.metadata['help'])} |")
        lines.append("")
    lines += ["## Presets", "", "What each preset sets on top of the defaults above (`--preset NAME`, "
              "`S3CMNConfig.from_preset(NAME)`). `s3cmn-train` and `s3cmn-sweep` start from `tiny` when "
              "neither `--preset` nor `--config-path` is given.", "",
              "| preset | model settings | training settings |", "| --- | --- | --- |"]
    for name, preset in PRESETS.items():
        model = ", ".join(f"`{k}={v!r}`" for k, v in preset["model"].items())
        training = ", ".join(f"`{k}={v!r}`" for k, v in preset.get("training", {}).items())
        lines.append(f"| `{name}` | {_cell(model)} | {_cell(training)} |")
    return "\n".join(lines) + "\n"


def _parser_help(parser) -> str:
    os.environ["COLUMNS"] = "110"
    text = parser.format_help()
    sub = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    for action in sub:
        for name, subparser in action.choices.items():
            text += f"\n\n--- {parser.prog} {name} ---\n\n" + subparser.format_help()
    return text


def cli_page() -> str:
    lines = ["# Command-line reference", "",
             "Generated from each command's argparse parser when the site is built (the text `--help` prints). "
             "Setting flags show the default the command's default preset uses (`s3cmn-train --preset small "
             "--help` shows the `small` values).", ""]
    for name in CLIS:
        module = importlib.import_module(f"s3cmn.cli.{name}")
        parser = module.build_parser()
        from s3cmn.cli.arguments import show_effective_defaults

        show_effective_defaults(parser, [])
        lines += [f"## `{parser.prog}`", "", f"`{module.__name__}`: {(module.__doc__ or '').strip().splitlines()[0]}",
                  "", "```text", _parser_help(parser).rstrip(), "```", ""]
    return "\n".join(lines) + "\n"


def _demote(markdown: str) -> str:
    return re.sub(r"^(#+) ", r"\1## ", markdown, flags=re.M)


def reports_page(title: str, intro: str, folder: str) -> str:
    """Every Markdown report and PNG plot under ``folder``, in path order (the page sits at the top of the site)."""
    lines = [f"# {title}", "", intro, ""]
    for path in sorted(p for p in (REPO / folder).rglob("*") if p.suffix in (".md", ".png")):
        rel = path.relative_to(REPO).as_posix()
        if path.suffix == ".md":
            lines += [f"## `{rel}`", "", _demote(path.read_text(encoding="utf-8")), ""]
        else:
            with mkdocs_gen_files.open(f"assets/{rel}", "wb") as out:
                out.write(path.read_bytes())
            lines += [f"## `{rel}`", "", f"![{path.stem}](assets/{rel})", ""]
    return "\n".join(lines) + "\n"


with mkdocs_gen_files.open("reference/configuration.md", "w") as page:
    page.write(configuration_page())
with mkdocs_gen_files.open("reference/cli.md", "w") as page:
    page.write(cli_page())
with mkdocs_gen_files.open("reports.md", "w") as page:
    page.write(reports_page(
        "Reports and plots", "The Markdown reports and the plots that the commands behind [Results](results.md) "
        "wrote into `results/`, as they wrote them. The numbers with their commands, dates and machines are on "
        "[Results](results.md), generated from the same folder by `scripts/results_page.py`.", "results"))

"""One source for every number: docs/results.md is what scripts/results_page.py renders from results/, and every
figure in the README's headline table is on that page, in the section of the result file the row cites."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
PAGE = REPO / "docs" / "results.md"
MAX_HEADLINE_ROWS = 12
# A figure: optional sign, digits with thousands commas, decimals, an optional "± spread", "%" or "x". Not a digit
# inside a name (GPT-2, bf16, s3cmn).
FIGURE = re.compile(r"(?<![\w.\-])[-+]?\d[\d,]*(?:\.\d+)?(?: ± \d[\d,]*(?:\.\d+)?)?(?:%|x\b)?")
SOURCE = re.compile(r"`(results/[^`]+\.json)`")


def results_page() -> ModuleType:
    spec = importlib.util.spec_from_file_location("results_page", REPO / "scripts" / "results_page.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def headline_rows(readme: str) -> list[list[str]]:
    """The cells of the README's headline results table: the first table under '## Results' with a source column."""
    section = readme.split("\n## Results", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header[-1] == "source", f"the headline table's last column should be 'source', not {header[-1]!r}"
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]


def page_sections(page: str) -> dict[str, str]:
    """``results/x/y.json`` -> the text of its section on the results page."""
    parts = re.split(r"^### `(results/[^`]+)`$", page, flags=re.M)
    return {parts[i]: parts[i + 1].split("\n## ", 1)[0] for i in range(1, len(parts), 2)}


def missing_figures(row: list[str], sections: dict[str, str]) -> list[str]:
    """The figures of a headline row (all cells but the first, the description, and the last, the source) that
    are in none of the page sections of the files the row cites."""
    sources = SOURCE.findall(row[-1])
    assert sources, f"row {row[0]!r} cites no result file"
    texts = [sections.get(source, "") for source in sources]
    figures = [f for cell in row[1:-1] for f in FIGURE.findall(cell)]
    assert figures, f"row {row[0]!r} has no figure"
    return [f for f in figures if not any(on_page(f, text) for text in texts)]


def on_page(figure: str, text: str) -> bool:
    """Whether ``figure`` is in ``text`` as a whole figure (661 is not in 1,661 or 46.61)."""
    return re.search(r"(?<![\d,.])" + re.escape(figure) + r"(?![\d,]|\.\d)", text) is not None


def test_results_page_is_rendered_from_the_committed_files() -> None:
    rendered = results_page().render_page()
    assert PAGE.read_text(encoding="utf-8") == rendered, "docs/results.md is stale: run python scripts/results_page.py"


def test_results_page_cites_command_commit_date_and_cpu_for_every_file() -> None:
    sections = page_sections(PAGE.read_text(encoding="utf-8"))
    assert len(sections) >= 10
    for path, text in sections.items():
        assert (REPO / path).is_file(), path
        for field in ("- command: ", "- commit: ", "- date: ", "- CPU: "):
            assert field in text, f"{path}: no {field.strip('- :')} line"
        assert "|" in text, f"{path}: no table of numbers"


def test_readme_headline_figures_are_on_the_results_page_with_their_source() -> None:
    rows = headline_rows(README.read_text(encoding="utf-8"))
    assert 1 <= len(rows) <= MAX_HEADLINE_ROWS
    sections = page_sections(PAGE.read_text(encoding="utf-8"))
    for row in rows:
        for source in SOURCE.findall(row[-1]):
            assert source in sections, f"row {row[0]!r} cites {source}, which has no section on docs/results.md"
        assert not missing_figures(row, sections), (row[0], missing_figures(row, sections))


def test_a_figure_not_in_its_source_section_is_caught() -> None:
    sections = {"results/a.json": "| s3cmn | 1,879.7 ± 2.2 | -66.4% |", "results/b.json": "| gpt2 | 2,371.3 |"}
    row = ["word ppl", "1,879.7 ± 2.2", "GPT-2 2,371.3; -66.4%", "`results/a.json`"]
    assert missing_figures(row, sections) == ["2,371.3"]  # on the page, but under another file
    row[1] = "1,879.8 ± 2.2"
    assert missing_figures(row, sections) == ["1,879.8 ± 2.2", "2,371.3"]
    row[-1] = "`results/a.json`, `results/b.json`"
    assert missing_figures(row, sections) == ["1,879.8 ± 2.2"]
    assert on_page("1,879.7", "| 1,879.7 |")
    assert not on_page("879.7", "| 1,879.7 |") and not on_page("1,879", "| 1,879.7 |")


def test_the_check_flag_fails_on_a_stale_page(tmp_path: Path, monkeypatch) -> None:
    module = results_page()
    stale = tmp_path / "results.md"
    stale.write_text(PAGE.read_text(encoding="utf-8").replace("| s3cmn |", "| s3cmn (edited) |", 1), encoding="utf-8")
    monkeypatch.setattr(module, "PAGE", stale)
    assert module.main(["--check"]) == 1
    stale.write_text(module.render_page(), encoding="utf-8")
    assert module.main(["--check"]) == 0

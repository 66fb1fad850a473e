"""A second real corpus: the ``.py`` files of this Python's standard library, split by file.

Every Python installation has it (``sysconfig.get_paths()["stdlib"]``), so it needs no download. A file's
split is decided by the SHA-256 of its path relative to the library folder (POSIX form): the first 8 bytes
read as a fraction in [0, 1) put it in ``train`` below 0.8, ``validation`` below 0.9, else ``test``. The
rule depends on nothing but the path, so the splits are the same in every process and on every machine with
the same Python version (another version has other files: the record below says which version was read).

Left out: third-party packages (``site-packages``, ``dist-packages``) and the test suites (``test``,
``tests``, ``idle_test`` folders: 60% of the bytes, with deliberately malformed and non-UTF-8 sources).
Files that are not UTF-8 are skipped and counted. A split's text is its files in path order, each ending in a
newline, concatenated; ``files(split)`` keeps them apart (held-out validation takes whole files).
"""

from __future__ import annotations

import hashlib
import logging
import platform
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

from s3cmn.data.errors import DataError

logger = logging.getLogger(__name__)

SPLIT_BOUNDS = (("train", 0.8), ("validation", 0.9), ("test", 1.0))
TEST_SUITE_FOLDERS = frozenset({"test", "tests", "idle_test"})
EXCLUDED_FOLDERS = frozenset({"site-packages", "dist-packages", "__pycache__"}) | TEST_SUITE_FOLDERS


def split_of(relative_path: str) -> str:
    """``"train"`` / ``"validation"`` / ``"test"`` for a file's POSIX path relative to the library folder."""
    digest = hashlib.sha256(relative_path.encode("utf-8")).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2**64
    return next(name for name, bound in SPLIT_BOUNDS if fraction < bound)


@dataclass
class SourceFile:
    """One source file: its path relative to the library folder and its text (ending in a newline)."""

    path: str
    text: str


@dataclass
class PythonCorpus:
    """The standard library's source files by split, and what was read."""

    root: str
    python_version: str
    splits: dict[str, list[SourceFile]] = field(default_factory=dict)
    skipped_not_utf8: list[str] = field(default_factory=list)
    test_suites: bool = False  # the test-suite folders were read too

    def files(self, split: str) -> list[SourceFile]:
        return self.splits[split]

    def text(self, split: str) -> str:
        return "".join(f.text for f in self.splits[split])

    def record(self) -> dict[str, object]:
        """JSON-ready: where the corpus came from and how many files each split has."""
        return {"corpus": "python-stdlib", "root": self.root, "python_version": self.python_version,
                "files": {s: len(v) for s, v in self.splits.items()},
                "skipped_not_utf8": len(self.skipped_not_utf8), "test_suites": self.test_suites,
                "split_rule": "sha256(relative path) < 0.8 train, < 0.9 validation, else test"}


def stdlib_root() -> Path:
    """The folder of this Python's standard library."""
    return Path(sysconfig.get_paths()["stdlib"])


def load_python_corpus(root: str | Path | None = None, test_suites: bool = False) -> PythonCorpus:
    """Read every ``.py`` file under ``root`` (default :func:`stdlib_root`) outside the excluded folders;
    ``test_suites``: read the test-suite folders too (split by the same path rule), for a datastore that needs
    more text than the corpus (about 2.5x the tokens; their malformed and non-UTF-8 files are still skipped)."""
    root = Path(root) if root is not None else stdlib_root()
    excluded = EXCLUDED_FOLDERS - TEST_SUITE_FOLDERS if test_suites else EXCLUDED_FOLDERS
    if not root.is_dir():
        raise DataError(f"the Python library folder {root} does not exist: the python-stdlib corpus needs it")
    corpus = PythonCorpus(str(root), platform.python_version(), {name: [] for name, _ in SPLIT_BOUNDS},
                          test_suites=test_suites)
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        if excluded.intersection(relative.parts[:-1]) or not path.is_file():
            continue
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            corpus.skipped_not_utf8.append(relative.as_posix())
            continue
        if not text.strip():
            continue  # empty __init__.py files carry no text to model
        text = text.removeprefix("\ufeff")
        corpus.splits[split_of(relative.as_posix())].append(SourceFile(relative.as_posix(),
                                                                       text if text.endswith("\n") else text + "\n"))
    counts = {s: len(v) for s, v in corpus.splits.items()}
    if not counts["train"] or not counts["validation"] or not counts["test"]:
        raise DataError(f"the Python library folder {root} has too few .py files for three splits ({counts})")
    logger.info("python-stdlib corpus (Python %s, %s): %d train / %d validation / %d test files; %d files "
                "skipped as not UTF-8", corpus.python_version, root, counts["train"], counts["validation"],
                counts["test"], len(corpus.skipped_not_utf8))
    return corpus

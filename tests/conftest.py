"""Shared fixtures: the real data beside the checkout, seeding, tiny configs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# The hub is never reached from the tests; the real data lives in ../shared/data.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# Test tensors are tiny: one thread avoids the threading overhead that dominates them (and contention).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``: real WikiText-2 valid/test text and tokenizer vocabularies (see its README)."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"the test data folder {SHARED_DATA} is missing: check out the repo beside ../shared")
    return SHARED_DATA


@pytest.fixture(scope="session")
def wikitext_valid(shared_data: Path) -> str:
    return (shared_data / "wikitext-2-raw" / "wiki.valid.raw").read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def bert_vocab(shared_data: Path) -> Path:
    return shared_data / "tokenizers" / "bert-base-uncased" / "vocab.txt"


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def run_main(main, args: list[str], capsys) -> tuple[int, str, str]:
    """Call a CLI's ``main(args)`` in-process: (exit code, stdout, stderr); a ``SystemExit`` gives its code."""
    try:
        code = main(args)
    except SystemExit as stop:
        code = stop.code
    out, err = capsys.readouterr()
    return code, out, err

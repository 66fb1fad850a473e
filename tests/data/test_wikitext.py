"""WikiText as lm-eval reads it: the hub's document rows from a raw file, and the harness's detokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest

from s3cmn.data.wikitext import detokenize, split_articles

CARD_NUM_BYTES = {"test": 1_290_775, "valid": 1_147_025}  # the hub card's wikitext_document_level split sizes


@pytest.mark.parametrize("split", ["test", "valid"])
def test_articles_are_the_hub_rows(shared_data: Path, split: str) -> None:
    text = (shared_data / "wikitext-2-raw" / f"wiki.{split}.raw").read_text(encoding="utf-8")
    pages = split_articles(text)
    assert " \n" + "\n".join(pages) == text  # the rows joined give back the file (less its first blank line)
    assert sum(len(p.encode("utf-8")) + 4 for p in pages) == CARD_NUM_BYTES[split]  # 4 bytes of offset a row
    assert all(p.startswith(" = ") and not p.startswith(" = = ") for p in pages)
    assert len(pages) == {"test": 62, "valid": 60}[split]


def test_detokenize_is_the_harness_detokenizer(shared_data: Path) -> None:
    harness = pytest.importorskip("lm_eval.tasks.wikitext.preprocess_wikitext", reason="lmeval extra not installed")
    for split in ("test", "valid"):
        text = (shared_data / "wikitext-2-raw" / f"wiki.{split}.raw").read_text(encoding="utf-8")
        for page in split_articles(text):
            assert detokenize(page) == harness.wikitext_detokenizer({"page": page})
    assert detokenize("a 1 @,@ 000 @-@ year , ( old ) \n = = b = = \n") == "a 1,000-year, (old)\n== b ==\n"

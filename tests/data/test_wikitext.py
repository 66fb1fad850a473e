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


def test_train_detokenize_reads_what_the_harness_scores(shared_data: Path) -> None:
    from s3cmn.cli.arguments import settings_from_args
    from s3cmn.cli.train import SECTIONS, build_parser
    from s3cmn.data.text import load_text_splits
    from s3cmn.data.validation import load_training_texts
    from s3cmn.data.wikitext import detokenize_text
    from s3cmn.run_config import DataConfig

    args = build_parser().parse_args(["--preset", "tiny", "--detokenize"])
    assert settings_from_args(args, SECTIONS).build_section("data").detokenize is True  # a bare flag means true
    raw_path = shared_data / "wikitext-2-raw" / "wiki.valid.raw"
    raw = raw_path.read_text(encoding="utf-8")
    plain = load_training_texts(DataConfig(train_file=str(raw_path)))
    texts = load_training_texts(DataConfig(train_file=str(raw_path), detokenize=True))
    assert texts.train == detokenize_text(plain.train) and texts.validation == detokenize_text(plain.validation)
    assert texts.selection["detokenized"] and " @-@ " in plain.train and " @-@ " not in texts.train
    pages = split_articles(raw)
    trained = detokenize_text(raw)
    assert all(detokenize(page) in trained for page in pages)  # every page the harness scores, as it scores it
    assert load_text_splits(DataConfig(test_file=str(raw_path), detokenize=True), ["test"])["test"] == \
        detokenize_text(raw)

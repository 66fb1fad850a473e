"""Honest validation: the held-out slice of the training text (whole articles), and when it replaces the given text."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest

from s3cmn.data import DataError, hold_out, load_training_texts
from s3cmn.data.validation import WIKITEXT_HEADING, describe_selection, split_documents, why_test_split
from s3cmn.run_config import DataConfig

# The split of wiki.valid.raw a checkpoint was trained on by hand (the last 6 of its 60 articles held out):
# the SHA-256 of the two texts of /work/honest/{train,heldout}.raw.
HAND_TRAIN_SHA256 = "b5ace5c8d260937d5a4d614ed104ac2d05e1313ca95d63a10643c74f5d2bef5e"
HAND_HELDOUT_SHA256 = "a87480b2d06d0ed0eb306059ac614e87484455824e91ddb24069e54fe3e9facd"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@pytest.fixture(scope="module")
def raw(shared_data: Path) -> Path:
    return shared_data / "wikitext-2-raw"


def titles(text: str) -> list[str]:
    return [line for line in text.splitlines() if WIKITEXT_HEADING.match(line)]


def test_offline_recipe_holds_out_the_last_articles_byte_for_byte(raw: Path, caplog) -> None:
    # The offline recipe's pair (train wiki.valid.raw, "validate" wiki.test.raw) must not select on the test split.
    with caplog.at_level(logging.INFO, logger="s3cmn.data.validation"):
        texts = load_training_texts(DataConfig(train_file=str(raw / "wiki.valid.raw"),
                                               validation_file=str(raw / "wiki.test.raw")))
    assert sha(texts.train) == HAND_TRAIN_SHA256 and sha(texts.validation) == HAND_HELDOUT_SHA256
    whole = (raw / "wiki.valid.raw").read_text(encoding="utf-8")
    assert texts.train + texts.validation == whole and texts.train.startswith(" \n = Homarus gammarus = \n")
    assert len(titles(texts.train)) == 54 and len(titles(texts.validation)) == 6
    assert WIKITEXT_HEADING.match(texts.validation.splitlines()[0])  # it starts at an article, not mid-article
    assert not set(titles(texts.train)) & set(titles(texts.validation))
    record = texts.selection
    assert (record["rule"], record["unit"], record["total"], record["held_out"]) == ("holdout", "articles", 60, 6)
    assert record["validation_sha256"] == HAND_HELDOUT_SHA256 and record["unused_validation_source"]["path"].endswith(
        "wiki.test.raw")
    assert "last 6 of 60 articles of wiki.valid.raw" in describe_selection(record)
    assert "is a test split" in describe_selection(record)
    assert any("test split" in r.message and r.levelname == "WARNING" for r in caplog.records)
    assert any("validation text: held out" in r.message for r in caplog.records)


def test_no_validation_text_gives_the_same_deterministic_slice(raw: Path) -> None:
    first = load_training_texts(DataConfig(train_file=str(raw / "wiki.valid.raw")))
    second = load_training_texts(DataConfig(train_file=str(raw / "wiki.valid.raw"), validation_source="holdout"))
    assert (first.train, first.validation) == (second.train, second.validation)
    assert sha(first.validation) == HAND_HELDOUT_SHA256 and first.selection["reason"] == "no validation text was given"
    wider = load_training_texts(DataConfig(train_file=str(raw / "wiki.valid.raw"), validation_holdout=0.25))
    assert wider.selection["held_out"] == 15 and wider.validation.endswith(first.validation)


def test_validating_on_the_training_text_is_replaced(raw: Path) -> None:
    path = str(raw / "wiki.valid.raw")
    texts = load_training_texts(DataConfig(train_file=path, validation_file=path))
    assert sha(texts.validation) == HAND_HELDOUT_SHA256 and "is the training text" in texts.selection["reason"]


def test_an_honest_validation_file_is_used_as_given(tmp_path: Path, raw: Path) -> None:
    whole = (raw / "wiki.valid.raw").read_text(encoding="utf-8")
    (tmp_path / "train.txt").write_text(whole[:600_000], encoding="utf-8")
    (tmp_path / "dev.txt").write_text(whole[600_000:], encoding="utf-8")
    texts = load_training_texts(DataConfig(train_file=str(tmp_path / "train.txt"),
                                           validation_file=str(tmp_path / "dev.txt")))
    assert (texts.train, texts.validation) == (whole[:600_000], whole[600_000:])
    assert texts.selection["rule"] == "file" and texts.selection["validation_is_test_split"] is False


def test_opting_out_validates_on_the_test_file_with_a_warning(raw: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="s3cmn.data.validation"):
        texts = load_training_texts(DataConfig(train_file=str(raw / "wiki.valid.raw"),
                                               validation_file=str(raw / "wiki.test.raw"), validation_source="file"))
    assert texts.validation == (raw / "wiki.test.raw").read_text(encoding="utf-8")
    assert texts.train == (raw / "wiki.valid.raw").read_text(encoding="utf-8")
    assert texts.selection["rule"] == "file" and texts.selection["validation_is_test_split"] is True
    assert any("select on the text the model is scored on" in r.message for r in caplog.records)
    with pytest.raises(DataError, match="no validation text was given: pass --validation-file"):
        load_training_texts(DataConfig(train_file=str(raw / "wiki.valid.raw"), validation_source="file"))


def test_test_splits_are_recognised_by_name_or_content(raw: Path) -> None:
    test = (raw / "wiki.test.raw").read_text(encoding="utf-8")
    assert "SHA-256" in why_test_split("copy.txt", test)
    assert "name" in why_test_split("/data/wiki.test.raw", "text") and why_test_split("test.txt", "x")
    assert why_test_split("latest.txt", "text") is None and why_test_split("wiki.valid.raw", "text") is None


def test_documents_without_headings_are_paragraphs_then_lines() -> None:
    text = "\nfirst paragraph\nstill first\n\nsecond\n\n\nthird\n"
    documents, unit = split_documents(text)
    assert unit == "paragraphs" and "".join(documents) == text
    assert documents == ["\nfirst paragraph\nstill first\n\n", "second\n\n\n", "third\n"]
    held = hold_out(text, 0.34)  # round(1.02) = 1: the last paragraph
    assert (held.train, held.validation, held.held, held.total) == (text[: -len("third\n")], "third\n", 1, 3)
    assert split_documents("a\nb\nc\n") == (["a\n", "b\n", "c\n"], "lines")  # one paragraph: lines
    assert split_documents("one line only")[1] == "lines"
    with pytest.raises(DataError, match="at least 2 are needed"):
        hold_out("one line only", 0.1)
    with pytest.raises(DataError, match=r"must be in \(0, 1\)"):
        hold_out(text, 1.0)

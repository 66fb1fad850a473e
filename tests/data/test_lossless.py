"""Lossless tokenizers: GPT-2 byte-level BPE and bpe:8192 give the raw WikiText-2 test text back byte for byte."""

from __future__ import annotations

from pathlib import Path

import pytest

from s3cmn.data import load_tokenizer, load_training_texts, round_trips, tokenize_cached
from s3cmn.run_config import DataConfig


@pytest.fixture(scope="module")
def test_text(shared_data: Path) -> str:
    return (shared_data / "wikitext-2-raw" / "wiki.test.raw").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def trained_bpe(shared_data: Path):
    # as training builds it: on the training part of the offline recipe (held-out articles excluded)
    texts = load_training_texts(DataConfig(train_file=str(shared_data / "wikitext-2-raw" / "wiki.valid.raw")))
    return load_tokenizer("bpe:8192", train_text=texts.train)


def decoded(tokenizer, ids) -> str:
    return tokenizer.decode(ids.tolist(), skip_special_tokens=False, clean_up_tokenization_spaces=False)


@pytest.mark.parametrize("which", ["gpt2", "bpe:8192"])
def test_decode_encode_is_the_raw_text(which: str, shared_data: Path, test_text: str, trained_bpe,
                                       tmp_path: Path) -> None:
    tokenizer = load_tokenizer(str(shared_data / "tokenizers" / "gpt2")) if which == "gpt2" else trained_bpe
    ids = tokenize_cached(test_text, tokenizer, tmp_path)  # the ids training and scoring use
    assert decoded(tokenizer, ids).encode("utf-8") == test_text.encode("utf-8")
    assert ids.numel() > 200_000 and test_text.count("\n") == 4_358  # every newline is in the stream
    pieces = tokenizer.convert_ids_to_tokens(ids.tolist())  # byte-level symbols: "\u010a" is the byte "\n"
    assert sum(p.count("\u010a") for p in pieces) == 4_358
    tokenizer.save_pretrained(tmp_path / "saved")  # as saved beside a checkpoint
    reloaded = load_tokenizer(str(tmp_path / "saved"))
    assert round_trips(test_text, reloaded)


def test_bert_uncased_is_not_lossless(bert_vocab: Path, test_text: str) -> None:
    assert not round_trips(test_text[:5_000], load_tokenizer(str(bert_vocab)))  # lower-cases, drops newlines

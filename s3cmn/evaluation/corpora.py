"""The texts of an honest comparison: train, held-out validation and test, tokenised the same for every model.

Used by ``benchmarks/compare.py`` and ``scripts/ablation.py``: training text, validation text held out from it
under s3cmn's validation rule (``s3cmn.data.validation``), and the test text, scored once at the end.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

CORPORA = ("wikitext2", "python")
TOKENIZER_FOLDERS = {"gpt2": "gpt2", "bert": "bert-base-uncased"}  # short names for ../shared/data/tokenizers/*
LOSSLESS_PROBE_CHARS = 20_000


@dataclass
class Corpus:
    """The three texts of an honest comparison, tokenised: train on ``train_ids``, select on ``valid_ids``
    (held out from the training text unless a real validation split was given), score ``test_text`` once."""

    name: str
    tokenizer: Any
    tokenizer_spec: str
    lossless: bool  # decode(encode(text)) == text on the start of the test text
    train_ids: Tensor  # (N,)
    valid_ids: Tensor  # (M,)
    test_text: str
    selection: dict[str, Any]  # s3cmn.data.validation's record: which text validation scored, and why
    source: dict[str, str]


def resolve_tokenizer_spec(spec: str, shared_data: str | os.PathLike) -> str:
    """``gpt2`` / ``bert`` -> the shared tokenizer folder; anything else (a path, ``bpe:8192``) as given."""
    if spec in TOKENIZER_FOLDERS:
        return str(Path(shared_data) / "tokenizers" / TOKENIZER_FOLDERS[spec])
    return spec


def is_lossless(tokenizer: Any, text: str) -> bool:
    """Whether the tokenizer gives back the text byte for byte (newlines, capitals, spacing)."""
    probe = text[:LOSSLESS_PROBE_CHARS]
    return tokenizer.decode(tokenizer(probe)["input_ids"]) == probe


def load_corpus(corpus: str, tokenizer: str, shared_data: str | os.PathLike, data_dir: str | None = None) -> Corpus:
    """Training, validation and test text of ``corpus`` under s3cmn's validation rule (s3cmn.data.validation).

    wikitext2: with ``data_dir`` the real train / valid / test files; offline, training text
    ``wiki.valid.raw`` minus its last articles (held out for validation) and test text ``wiki.test.raw``.
    python: the standard library's files split by path (s3cmn.data.python_corpus), validated on its
    validation files, scored on its test files. ``tokenizer``: see :func:`resolve_tokenizer_spec`; a
    ``bpe:N`` tokenizer is trained on the training text only.
    """
    from s3cmn.data import load_tokenizer, tokenize_cached
    from s3cmn.data.text import read_text_file
    from s3cmn.data.validation import load_training_texts
    from s3cmn.run_config import DataConfig

    if corpus not in CORPORA:
        raise ValueError(f"unknown corpus {corpus!r}: expected one of {', '.join(CORPORA)}")
    spec = resolve_tokenizer_spec(tokenizer, shared_data)
    if corpus == "python":
        from s3cmn.data.python_corpus import load_python_corpus

        data = DataConfig(corpus="python-stdlib", tokenizer=spec)
        test_text = load_python_corpus().text("test")
        source = {"train": "python-stdlib train files", "test": "python-stdlib test files"}
    elif data_dir:
        data = DataConfig(data_dir=data_dir, tokenizer=spec)
        test_path = Path(data_dir) / "wiki.test.raw"
        test_text = read_text_file(test_path)
        source = {"train": f"{data_dir}/wiki.train.raw", "test": str(test_path)}
    else:
        raw = Path(shared_data) / "wikitext-2-raw"
        data = DataConfig(train_file=str(raw / "wiki.valid.raw"), tokenizer=spec)
        test_text = read_text_file(raw / "wiki.test.raw")
        source = {"train": str(raw / "wiki.valid.raw"), "test": str(raw / "wiki.test.raw")}
    texts = load_training_texts(data)
    if texts.validation is None:
        raise ValueError(f"{corpus}: no validation text (the comparison selects checkpoints on it)")
    source["validation"] = texts.selection["description"]
    tok = load_tokenizer(spec, train_text=texts.train)
    return Corpus(corpus, tok, tokenizer, is_lossless(tok, test_text), tokenize_cached(texts.train, tok),
                  tokenize_cached(texts.validation, tok), test_text, texts.selection, source)

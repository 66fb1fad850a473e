"""Loader of the ``wikitext_local`` lm-eval task: WikiText raw files split into articles, as the hub's
``EleutherAI/wikitext_document_level`` does (an article starts at a top-level heading line `` = Title = ``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lm_eval.tasks.wikitext.preprocess_wikitext import process_results, wikitext_detokenizer

from s3cmn.data.wikitext import split_articles

__all__ = ["load_documents", "split_articles", "wikitext_detokenizer", "process_results"]

SPLIT_FILES = {"train": "wiki.train.raw", "validation": "wiki.valid.raw", "test": "wiki.test.raw"}


def load_documents(data_dir: str | None = None, max_documents: int = 0, **_: Any) -> Any:
    """A ``DatasetDict`` {split: Dataset with a ``page`` column} from the files in ``data_dir``.

    ``max_documents`` > 0 keeps the first N articles of each split (for quick checks). Splits whose file is
    missing are left out (the offline data here has no train split); no split at all is an error.
    """
    import datasets

    if not data_dir:
        raise ValueError("wikitext_local needs the folder of wiki.{valid,test}.raw: pass "
                         "--metadata '{\"data_dir\": \"../shared/data/wikitext-2-raw\"}'")
    folder = Path(data_dir).expanduser()
    splits = {}
    for split, name in SPLIT_FILES.items():
        path = folder / name
        if path.is_file():
            pages = split_articles(path.read_text(encoding="utf-8"))
            splits[split] = datasets.Dataset.from_dict({"page": pages[:max_documents] if max_documents else pages})
    if not splits:
        raise FileNotFoundError(f"wikitext_local: {folder} holds none of {sorted(SPLIT_FILES.values())}")
    return datasets.DatasetDict(splits)

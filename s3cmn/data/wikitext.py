"""WikiText as lm-evaluation-harness reads it: the articles of a raw split, and the harness's detokenizer.

``split_articles`` gives the rows of the hub's ``EleutherAI/wikitext_document_level`` (the harness's ``wikitext``
task) from a raw file; ``detokenize`` is the harness's ``wikitext_detokenizer`` (``lm_eval/tasks/wikitext/
preprocess_wikitext.py``) on a plain string, kept here so that training can use it without lm-eval installed
(``s3cmn-train --detokenize``); a test checks that the two agree on the whole of WikiText-2 valid and test.
"""

from __future__ import annotations

import re

__all__ = ["detokenize", "detokenize_text", "split_articles"]

_HEADING = re.compile(r"^ = [^=].* = $")


def split_articles(text: str) -> list[str]:
    """The articles of a WikiText raw file, each from its `` = Title = `` line to the next one, as the hub's rows.

    The hub's builder joins a page's lines with ``"\\n"``, so every page but the last lacks the newline that ends
    its last line (``"\\n".join(pages)`` gives back the file less its leading blank line). Checked: the pages'
    bytes plus 4 a row equal the dataset card's ``num_bytes`` (test 1,290,775, validation 1,147,025).
    """
    articles: list[list[str]] = []
    for line in text.splitlines(keepends=True):
        if _HEADING.match(line.rstrip("\n")) or not articles:
            articles.append([])
        articles[-1].append(line)
    pages = ["".join(a) for a in articles if "".join(a).strip()]
    return [p.removesuffix("\n") for p in pages[:-1]] + pages[-1:]


def detokenize_text(text: str) -> str:
    """``detokenize`` applied to each article of ``text`` (split at `` = Title = `` lines, nothing dropped), as the
    harness applies it to each page: its quote and bracket patterns never pair across two articles."""
    chunks: list[list[str]] = []
    for line in text.splitlines(keepends=True):
        if _HEADING.match(line.rstrip("\n")) or not chunks:
            chunks.append([])
        chunks[-1].append(line)
    return "".join(detokenize("".join(c)) for c in chunks)


def detokenize(string: str) -> str:
    """lm-eval's ``wikitext_detokenizer``, step for step: WikiText's spaced tokens back to ordinary text."""
    # contractions
    string = string.replace("s '", "s'")
    string = re.sub(r"/' [0-9]/", r"/'[0-9]/", string)
    # number separators
    string = string.replace(" @-@ ", "-")
    string = string.replace(" @,@ ", ",")
    string = string.replace(" @.@ ", ".")
    # punctuation
    string = string.replace(" : ", ": ")
    string = string.replace(" ; ", "; ")
    string = string.replace(" . ", ". ")
    string = string.replace(" ! ", "! ")
    string = string.replace(" ? ", "? ")
    string = string.replace(" , ", ", ")
    # double brackets
    string = re.sub(r"\(\s*([^\)]*?)\s*\)", r"(\1)", string)
    string = re.sub(r"\[\s*([^\]]*?)\s*\]", r"[\1]", string)
    string = re.sub(r"{\s*([^}]*?)\s*}", r"{\1}", string)
    string = re.sub(r"\"\s*([^\"]*?)\s*\"", r'"\1"', string)
    string = re.sub(r"'\s*([^']*?)\s*'", r"'\1'", string)
    # miscellaneous
    string = string.replace("= = = =", "====")
    string = string.replace("= = =", "===")
    string = string.replace("= =", "==")
    string = string.replace(" " + chr(176) + " ", chr(176))
    string = string.replace(" \n", "\n")
    string = string.replace("\n ", "\n")
    string = string.replace(" N ", " 1 ")
    string = string.replace(" 's", "'s")
    return string

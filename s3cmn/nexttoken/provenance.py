"""Where the read-outs' texts came from, by content: a fingerprint of the fit and datastore texts, and the guards.

The read-out settings are fitted on one text and the datastore is built from another; neither may be the text
that is finally scored. A file's SHA-256 only catches the identical file: a prefix (what ``--max-eval-tokens``
scores), the same text minus a line, or re-wrapped, has other bytes. So every read-out records a
:class:`TextFingerprint` of its text, and the evaluation measures how many of the scored text's long word
n-grams the fingerprint holds, and how many of the fingerprint's the scored text holds (a fit text hidden
inside a longer scored text), whatever the bytes around them (:func:`text_overlap`). Texts are hashed a few
MiB at a time (about 1.5 s per million words), so a training text of any size can be fingerprinted.

Fingerprint: the text case-folded (NFKC) and cut into words (``\\w+``); every run of ``NGRAM`` = 8 words is
hashed to 64 bits, and only the hashes with ``h % MODULUS == 0`` (``MODULUS`` = 16) are kept. The choice
depends on the n-gram alone, never on its position, so a text and any copy of part of it keep the same
n-grams, and a fingerprint is ~1/16 of a text's distinct 8-grams: 8 bytes per ~16 words (11,271 hashes, 88 KiB,
for the 183,691 words of WikiText-2's valid split). Different articles share almost no 8-grams: of the ~200,000
distinct 8-grams of WikiText-2's valid and test splits, 9 are shared, and none of the sampled ones
(``tests/memory/test_provenance.py`` checks it on the real files), so a scored text is refused above
``MAX_OVERLAP`` = 5%.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import logging
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from s3cmn.data.errors import DataError
from s3cmn.data.validation import why_test_split

logger = logging.getLogger(__name__)

NGRAM = 8
MODULUS = 16
MAX_OVERLAP = 0.05  # the largest share of shared n-grams a scored text may have with a read-out's text
_WORD = re.compile(r"\w+")
CHUNK_CHARS = 1 << 22  # texts are hashed ~4 MiB at a time
_PRIME = np.uint64(0x100000001B3)  # FNV-64 prime: the polynomial that combines an n-gram's word hashes


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: every output bit depends on every input bit, so ``h % MODULUS`` is unbiased."""
    h = h ^ (h >> np.uint64(30))
    h = h * np.uint64(0xBF58476D1CE4E5B9)
    h = h ^ (h >> np.uint64(27))
    h = h * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


def _word_chunks(text: str, chunk_chars: int) -> Iterator[list[str]]:
    """The normalised words of ``text``, about ``chunk_chars`` characters at a time (cut at whitespace, so no
    word is split): a training text of any size is hashed in bounded memory."""
    start = 0
    while start < len(text):
        end = min(len(text), start + chunk_chars)
        if end < len(text):
            cut = max(text.rfind(" ", start, end), text.rfind("\n", start, end))
            end = cut + 1 if cut > start else end
        yield _WORD.findall(unicodedata.normalize("NFKC", text[start:end]).casefold())
        start = end


def _ngram_chunks(text: str, n: int, chunk_chars: int) -> Iterator[tuple[np.ndarray, int]]:
    """(hashes of the n-grams that end in the chunk, words in the chunk), chunk by chunk."""
    word_hash: dict[str, int] = {}  # one blake2b per distinct word
    tail = np.zeros(0, np.uint64)  # the last n - 1 words of the previous chunk: n-grams cross chunk ends
    for words in _word_chunks(text, chunk_chars):
        for w in words:
            if w not in word_hash:
                word_hash[w] = int.from_bytes(hashlib.blake2b(w.encode("utf-8"), digest_size=8).digest(), "little")
        wh = np.concatenate([tail, np.fromiter((word_hash[w] for w in words), np.uint64, len(words))])  # (W,)
        count = max(len(wh) - n + 1, 0)
        h = np.zeros(count, np.uint64)
        with np.errstate(over="ignore"):  # arithmetic mod 2^64 on purpose
            for i in range(n):
                h = h * _PRIME + wh[i : i + count]  # (W - n + 1,)
        yield _mix(h), len(words)
        tail = wh[len(wh) - min(len(wh), n - 1) :]


def ngram_hashes(text: str, n: int = NGRAM, chunk_chars: int = CHUNK_CHARS) -> np.ndarray:
    """The 64-bit hash of every run of ``n`` normalised words of ``text``, in order (W - n + 1,) uint64."""
    parts = [h for h, _ in _ngram_chunks(text, n, chunk_chars)]
    return np.concatenate(parts) if parts else np.zeros(0, np.uint64)


def _sample(text: str, n: int, modulus: int, chunk_chars: int) -> tuple[np.ndarray, int]:
    """The distinct n-gram hashes of ``text`` kept by the fingerprint (``h % modulus == 0``), sorted, and the
    number of words."""
    kept, words = [np.zeros(0, np.uint64)], 0
    for h, count in _ngram_chunks(text, n, chunk_chars):
        kept.append(np.unique(h[h % np.uint64(modulus) == 0]))
        words += count
    return np.unique(np.concatenate(kept)), words


def sampled_ngrams(text: str, n: int = NGRAM, modulus: int = MODULUS) -> np.ndarray:
    """The distinct n-gram hashes of ``text`` kept by the fingerprint (``h % modulus == 0``), sorted."""
    return _sample(text, n, modulus, CHUNK_CHARS)[0]


@dataclass(eq=False)
class TextFingerprint:
    """The sampled word n-gram hashes of a text (module docstring): ``hashes`` (S,) sorted distinct uint64."""

    hashes: np.ndarray
    ngram: int = NGRAM
    modulus: int = MODULUS
    words: int = 0

    @classmethod
    def from_text(cls, text: str, chunk_chars: int = CHUNK_CHARS) -> TextFingerprint:
        hashes, words = _sample(text, NGRAM, MODULUS, chunk_chars)
        return cls(hashes, NGRAM, MODULUS, words)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, TextFingerprint) and (self.ngram, self.modulus, self.words)
                == (other.ngram, other.modulus, other.words) and np.array_equal(self.hashes, other.hashes))  # fmt: skip

    def to_dict(self, with_hashes: bool = True) -> dict[str, object]:
        """JSON-ready: the hashes as base64 of their little-endian bytes (``with_hashes=False``: without them,
        for a caller that stores them in a file of their own)."""
        out: dict[str, object] = {"kind": "sampled word n-grams", "ngram": self.ngram, "modulus": self.modulus,
                                  "words": self.words, "count": len(self.hashes)}  # fmt: skip
        if with_hashes:
            out["hashes"] = base64.b64encode(self.hashes.astype("<u8").tobytes()).decode("ascii")
        return out

    @classmethod
    def from_dict(cls, data: dict[str, object], hashes: np.ndarray | None = None) -> TextFingerprint:
        """The inverse of :meth:`to_dict`; ``hashes`` where they were stored apart."""
        if hashes is None:
            hashes = np.frombuffer(base64.b64decode(str(data["hashes"])), dtype="<u8")
        hashes = np.asarray(hashes).astype(np.uint64)
        if len(hashes) != data["count"]:
            raise ValueError(f"text fingerprint: {len(hashes)} hashes, but the record says {data['count']}")
        return cls(hashes, int(data["ngram"]), int(data["modulus"]), int(data["words"]))


@dataclass(frozen=True)
class TextOverlap:
    """How much a scored text shares with a read-out's text: ``scored_share`` of the scored text's sampled
    n-grams occur in the read-out's text, ``source_share`` of the read-out text's occur in the scored text."""

    scored_share: float
    source_share: float
    shared: int
    scored_ngrams: int
    source_ngrams: int

    @property
    def fraction(self) -> float:
        """The larger share: a copy of part of either text in the other counts."""
        return max(self.scored_share, self.source_share)

    def to_dict(self) -> dict[str, float | int]:
        return {"fraction": self.fraction, "scored_share": self.scored_share, "source_share": self.source_share,
                "shared_ngrams": self.shared, "scored_ngrams": self.scored_ngrams,
                "source_ngrams": self.source_ngrams, "ngram": NGRAM, "modulus": MODULUS}  # fmt: skip


def text_overlap(text: str, fingerprint: TextFingerprint) -> TextOverlap:
    """The sampled word n-grams ``text`` shares with the text behind ``fingerprint``."""
    scored = sampled_ngrams(text, fingerprint.ngram, fingerprint.modulus)
    shared = int(np.isin(scored, fingerprint.hashes, assume_unique=True).sum())
    return TextOverlap(shared / max(len(scored), 1), shared / max(len(fingerprint.hashes), 1), shared, len(scored),
                       len(fingerprint.hashes))  # fmt: skip


def refuse_overlap(text: str, fingerprint: TextFingerprint, text_name: str, source: str, action: str,
                   max_overlap: float = MAX_OVERLAP) -> TextOverlap:
    """The overlap of ``text`` with the text behind ``fingerprint`` (``source`` says which, e.g. "the text the
    read-out settings were fitted on (heldout.raw)"); a one-line :class:`DataError` above ``MAX_OVERLAP``,
    ending in ``action``, what to do instead. ``max_overlap``: the limit (``MAX_OVERLAP`` suits prose; disjoint
    files of source code share common idioms, about 8% of the Python corpus' sampled 8-grams)."""
    overlap = text_overlap(text, fingerprint)
    if overlap.fraction > max_overlap:
        which = "its" if overlap.scored_share >= overlap.source_share else "that text's"
        raise DataError(f"{text_name} shares {overlap.fraction:.1%} of {which} sampled {fingerprint.ngram}-word "
                        f"sequences with {source} (at most {max_overlap:.0%} allowed): {action}")
    return overlap


def refuse_test_split(name: str | None, text: str, role: str) -> None:
    """Raise a one-line :class:`DataError` if ``text`` is a test split by name or content (as training refuses
    to select on one); ``role`` is "fit" or "build"."""
    reason = why_test_split(name, text)
    if reason is None:
        return
    use = {"fit": "fit the read-outs on a held-out text (e.g. wiki.valid.raw, or the held-out slice of the "
                  "training text)", "build": "build the datastore from the training text (e.g. wiki.train.raw)"}[role]
    shown = name if name is not None else "the text"
    raise DataError(f"{shown} is a test split ({reason}): it is kept for the final score; {use} instead")


@functools.cache
def warn_unchecked(what: str) -> None:
    """Log once per ``what`` that a read-out was made without its text, so no evaluation can check it."""
    logger.warning("%s was given no text (text=...), so it records no content fingerprint: s3cmn-eval cannot "
                   "check that the scored text is not the text it came from", what)  # fmt: skip

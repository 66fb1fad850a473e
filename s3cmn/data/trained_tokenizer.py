"""Tokenizers trained on the training text with ``tokenizers``: ``bpe:N`` and ``wordpiece:N``.

- ``bpe`` — byte-level BPE (GPT-2 style: every string encodes, no unknown token); ``<|endoftext|>``
  (id 0) is its eos / bos / pad / unk token. Newlines are learned as tokens, so text round-trips.
- ``wordpiece`` — BERT-style WordPiece (cased, accents kept, ``##`` continuation pieces) with
  ``[PAD] [UNK] [CLS] [SEP] [MASK]`` (ids 0-4; ``[CLS]`` is bos, ``[SEP]`` eos). Characters beyond the
  most frequent ``(N - 5) // 4`` become ``[UNK]``, so half the vocabulary is left for learned pieces.

Both are deterministic: the same text and size give the same vocabulary and ids, in any process.
(The ``tokenizers`` WordPiece trainer is not: it numbers ``##`` pieces in hash-map order, which also
changes which pieces win ties. So WordPiece is trained here as BPE over words whose first character
carries a private-use marker, and the merges are then read as WordPiece pieces: ``<mark>ab`` -> ``ab``,
``ab`` -> ``##ab``.)
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

from s3cmn.data.errors import DataError

if TYPE_CHECKING:
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

logger = logging.getLogger(__name__)

BPE_EOS = "<|endoftext|>"
WORDPIECE_SPECIALS = {"pad": "[PAD]", "unk": "[UNK]", "bos": "[CLS]", "eos": "[SEP]", "mask": "[MASK]"}
MIN_VOCAB = {"bpe": 257, "wordpiece": 100}  # bpe: the 256 byte symbols + eos
_WORD_START = "\ue000"  # private-use character marking a word's first piece while training WordPiece


def train_tokenizer(kind: str, vocab_size: int, text: str) -> PreTrainedTokenizerFast:
    """A ``"bpe"`` or ``"wordpiece"`` tokenizer of at most ``vocab_size`` tokens trained on ``text``."""
    from transformers import PreTrainedTokenizerFast

    if kind not in MIN_VOCAB:
        raise DataError(f"unknown tokenizer kind '{kind}': expected bpe or wordpiece")
    if vocab_size < MIN_VOCAB[kind]:
        raise DataError(f"{kind}:{vocab_size}: the vocabulary size must be at least {MIN_VOCAB[kind]}")
    if not text.strip():
        raise DataError(f"cannot train a {kind} tokenizer on empty text")
    if kind == "bpe":
        backend = _train_byte_level_bpe(vocab_size, text)
        specials = {"bos_token": BPE_EOS, "eos_token": BPE_EOS, "unk_token": BPE_EOS, "pad_token": BPE_EOS}
    else:
        backend = _train_wordpiece(vocab_size, text)
        specials = {f"{role}_token": token for role, token in WORDPIECE_SPECIALS.items()}
        specials.update(cls_token=WORDPIECE_SPECIALS["bos"], sep_token=WORDPIECE_SPECIALS["eos"])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, **specials)
    tokenizer.name_or_path = f"{kind}:{vocab_size}"
    logger.info("trained a %s tokenizer on %d characters: %d tokens", kind, len(text), len(tokenizer))
    return tokenizer


def _train_byte_level_bpe(vocab_size: int, text: str) -> Tokenizer:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[BPE_EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes, sorted: ids fixed
        show_progress=False,
    )
    lines = text.splitlines(keepends=True)  # lines keep their "\n": newlines are learned
    backend.train_from_iterator(lines, trainer=trainer, length=len(lines))
    return backend


def _train_wordpiece(vocab_size: int, text: str) -> Tokenizer:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=False
    )
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    words: Counter[str] = Counter()
    for line in text.splitlines():
        words.update(w for w, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(line)))

    # 1. The alphabet: the most frequent characters (ties by code point); each takes two entries, c and ##c.
    specials = list(WORDPIECE_SPECIALS.values())
    char_counts: Counter[str] = Counter()
    for word, count in words.items():
        for char in word:
            char_counts[char] += count
    char_counts.pop(_WORD_START, None)
    alphabet = sorted(char_counts, key=lambda c: (-char_counts[c], c))[: (vocab_size - len(specials)) // 4]
    kept = set(alphabet)
    words = Counter({w: n for w, n in words.items() if set(w) <= kept})  # words with rarer chars -> [UNK]
    if not words:
        raise DataError("cannot train a wordpiece tokenizer: the text has no words")

    # 2. BPE over marked words. A prefix of BPE's merge list is what a smaller run learns, so train
    #    with room to spare and keep merges in order until the WordPiece vocabulary is full.
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(specials) + 1,
        min_frequency=2,
        initial_alphabet=[_WORD_START],
        show_progress=False,
    )

    def marked_words() -> Iterator[str]:
        for word in sorted(words):
            yield (_WORD_START + word + " ") * words[word]

    bpe.train_from_iterator(marked_words(), trainer=trainer, length=len(words))

    # 3. Read the merges as WordPiece pieces.
    pieces = specials + sorted(alphabet) + ["##" + c for c in sorted(alphabet)]
    seen = set(pieces)
    for token, _ in sorted(bpe.get_vocab().items(), key=lambda item: item[1]):
        if len(pieces) >= vocab_size:
            break
        piece = token[1:] if token.startswith(_WORD_START) else "##" + token
        if piece not in seen and piece not in ("", "##"):
            seen.add(piece)
            pieces.append(piece)

    backend = Tokenizer(
        models.WordPiece({p: i for i, p in enumerate(pieces)}, unk_token=WORDPIECE_SPECIALS["unk"])
    )
    backend.normalizer = normalizer
    backend.pre_tokenizer = pre_tokenizer
    backend.decoder = decoders.WordPiece(prefix="##")
    return backend

"""Token ids for a text (tokenised once, then cached), packed into fixed-length blocks for LM training.

The cache is a ``.npy`` file (read with ``allow_pickle=False``; never a pickle) under
``<cache_dir>/tokens/``, named by the SHA-256 of the text and a fingerprint of the tokenizer (its
full serialisation, class and library versions), and written atomically (temporary file, then
``os.replace``), so concurrent ranks and interrupted runs never leave a half-written entry.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
import torch
from torch.utils.data import Dataset

from s3cmn.data.errors import DataError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1  # bump when the tokenisation procedure below changes, to invalidate old entries
MAX_CHUNK_CHARS = 100_000  # longer lines are split at whitespace before tokenising
_LINES_PER_BATCH = 4096


def default_cache_dir() -> Path:
    """``~/.cache/s3cmn``: where token caches go when no cache folder is given."""
    return Path.home() / ".cache" / "s3cmn"


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """A SHA-256 hex digest that changes whenever the tokenizer could produce different ids."""
    import transformers

    parts = [f"format={CACHE_FORMAT}", type(tokenizer).__name__, f"transformers={transformers.__version__}"]
    if tokenizer.is_fast:
        import tokenizers

        # The full serialisation: vocabulary, merges, normaliser, pre-tokeniser, added tokens.
        parts += [f"tokenizers={tokenizers.__version__}", tokenizer.backend_tokenizer.to_str()]
    else:
        parts += [
            tokenizer.name_or_path,
            json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False),
        ]
    return hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()


def _text_chunks(text: str) -> Iterator[str]:
    """The text's lines (with their newline), long lines cut before a whitespace: joined, the input."""
    for line in text.splitlines(keepends=True):
        while len(line) > MAX_CHUNK_CHARS:
            cut = line.rfind(" ", 0, MAX_CHUNK_CHARS)
            cut = cut if cut > 0 else MAX_CHUNK_CHARS
            yield line[:cut]
            line = line[cut:]
        if line:
            yield line


def encode_text(text: str, tokenizer: PreTrainedTokenizerBase) -> np.ndarray:
    """Token ids of ``text`` (N,), int64, without special tokens, encoded line by line in batches.

    Line-by-line encoding keeps each call small (no "sequence longer than the maximum" warnings) and
    uses the batch encoder; it can differ from encoding the whole string only across line breaks.
    """
    chunks = list(_text_chunks(text))
    pieces: list[list[int]] = []
    for start in range(0, len(chunks), _LINES_PER_BATCH):
        encoded = tokenizer(
            chunks[start : start + _LINES_PER_BATCH],
            add_special_tokens=False,
            return_attention_mask=False,
            return_token_type_ids=False,
            verbose=False,  # lines longer than model_max_length are fine: they are packed, not fed whole
        )
        pieces.extend(encoded["input_ids"])
    total = sum(len(p) for p in pieces)
    return np.fromiter(itertools.chain.from_iterable(pieces), dtype=np.int64, count=total)


def round_trips(text: str, tokenizer: PreTrainedTokenizerBase) -> bool:
    """True if decoding :func:`encode_text`'s ids gives ``text`` back exactly (a lossless tokenizer for it).

    BERT-uncased is not: it lower-cases and drops newlines. Byte-level BPE (GPT-2, ``bpe:N``) is.
    """
    ids = encode_text(text, tokenizer).tolist()
    return tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False) == text


def _cache_paths(
    text: str, tokenizer: PreTrainedTokenizerBase, cache_dir: str | Path | None
) -> tuple[Path, dict]:
    text_sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
    fingerprint = tokenizer_fingerprint(tokenizer)
    folder = (Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()) / "tokens"
    meta = {
        "format": CACHE_FORMAT,
        "text_sha256": text_sha,
        "text_chars": len(text),
        "tokenizer_fingerprint": fingerprint,
        "tokenizer_class": type(tokenizer).__name__,
        "tokenizer_name": tokenizer.name_or_path,
    }
    return folder / f"{text_sha[:32]}-{fingerprint[:32]}.npy", meta


def _write_atomic(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write through ``write(file)`` into a temporary file beside ``path``, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _load_cached(path: Path) -> np.ndarray | None:
    if not path.is_file():
        return None
    try:
        ids = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        logger.warning("token cache %s is unreadable (%s): tokenising again", path, err)
        return None
    if ids.ndim != 1 or ids.dtype.kind not in "iu":
        logger.warning(
            "token cache %s holds %s %s, not 1-D ids: tokenising again", path, ids.dtype, ids.shape
        )
        return None
    return ids


def tokenize_cached(
    text: str, tokenizer: PreTrainedTokenizerBase, cache_dir: str | Path | None = None
) -> torch.Tensor:
    """Token ids of ``text`` (N,) as a LongTensor, from the cache if this text and tokenizer were seen.

    ``cache_dir`` None means :func:`default_cache_dir`. Ids are stored as uint16 when they fit, else int32.
    """
    path, meta = _cache_paths(text, tokenizer, cache_dir)
    cached = _load_cached(path)
    if cached is not None:
        logger.info("loaded %d tokens from the cache %s", cached.size, path)
        return torch.from_numpy(cached.astype(np.int64))
    start = time.perf_counter()
    ids = encode_text(text, tokenizer)  # (N,)
    dtype = np.uint16 if ids.size == 0 or ids.max() < 2**16 else np.int32
    _write_atomic(path, lambda f: np.save(f, ids.astype(dtype), allow_pickle=False))
    meta.update(num_tokens=int(ids.size), dtype=np.dtype(dtype).name)
    _write_atomic(path.with_suffix(".json"), lambda f: f.write(json.dumps(meta, indent=1).encode("utf-8")))
    logger.info(
        "tokenised %d characters into %d tokens in %.1f s; cached at %s",
        len(text),
        ids.size,
        time.perf_counter() - start,
        path,
    )
    return torch.from_numpy(ids)


def pack_blocks(ids: torch.Tensor, sequence_length: int) -> torch.Tensor:
    """Cut a token stream (N,) into ``N // sequence_length`` blocks (num_blocks, T); the remainder is dropped.

    A view of ``ids``: no copy. Each block is one training sequence (labels = inputs, shifted by the model).
    """
    if ids.ndim != 1:
        raise DataError(f"pack_blocks expects a 1-D token stream, got shape {tuple(ids.shape)}")
    if sequence_length < 1:
        raise DataError(f"sequence_length must be at least 1, got {sequence_length}")
    num_blocks = ids.numel() // sequence_length
    if num_blocks == 0:
        raise DataError(
            f"the text has only {ids.numel()} tokens, but one block needs sequence_length={sequence_length} "
            "tokens: give more text or a shorter --sequence-length"
        )
    return ids[: num_blocks * sequence_length].view(num_blocks, sequence_length)  # (num_blocks, T)


class LMBlockDataset(Dataset):
    """Fixed-length blocks of token ids: item ``i`` is ``{"input_ids": (T,), "labels": (T,)}``, one tensor."""

    def __init__(self, blocks: torch.Tensor) -> None:
        if blocks.ndim != 2 or blocks.dtype != torch.long:
            raise DataError(
                f"LMBlockDataset expects a (num_blocks, T) LongTensor, "
                f"got {blocks.dtype} of shape {tuple(blocks.shape)}"
            )
        self.blocks = blocks  # (num_blocks, T)

    @property
    def sequence_length(self) -> int:
        return self.blocks.shape[1]

    def __len__(self) -> int:
        return self.blocks.shape[0]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        block = self.blocks[index]  # (T,)
        return {"input_ids": block, "labels": block}

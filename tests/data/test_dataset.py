"""Token cache, packing into blocks, and the block dataset."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from s3cmn.data import (
    BlockSampler,
    DataError,
    LMBlockDataset,
    encode_text,
    load_tokenizer,
    pack_blocks,
    tokenize_cached,
)

LOGGER = "s3cmn.data.dataset"


@pytest.fixture(scope="module")
def bert(bert_vocab: Path):
    return load_tokenizer(str(bert_vocab))


@pytest.fixture(scope="module")
def text(wikitext_valid: str) -> str:
    return wikitext_valid[:30_000]


def _cache_files(cache_dir: Path) -> list[Path]:
    return sorted((cache_dir / "tokens").glob("*.npy"))


def test_cache_hit_returns_identical_ids_without_tokenising_again(
    tmp_path: Path, bert, text: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    first = tokenize_cached(text, bert, tmp_path)
    (cache_file,) = _cache_files(tmp_path)
    written = cache_file.stat().st_mtime_ns
    assert any(r.message.startswith("tokenised") for r in caplog.records)

    caplog.clear()
    second = tokenize_cached(text, bert, tmp_path)

    assert second.dtype == torch.long and second.shape == first.shape
    torch.testing.assert_close(second, first, rtol=0, atol=0)
    assert [r.message.split()[0] for r in caplog.records] == ["loaded"]  # no "tokenised" record
    assert cache_file.stat().st_mtime_ns == written
    assert _cache_files(tmp_path) == [cache_file]  # no temporary files left behind
    assert np.load(cache_file, allow_pickle=False).dtype == np.uint16  # 30,522 ids fit in 16 bits


def test_cached_ids_match_the_tokenizer(tmp_path: Path, bert, text: str) -> None:
    ids = tokenize_cached(text, bert, tmp_path)
    lines = text.splitlines(keepends=True)
    expected = [i for line in lines for i in bert(line, add_special_tokens=False)["input_ids"]]
    assert ids.tolist() == expected
    assert ids[:3].tolist() == bert(" = Homarus gammarus", add_special_tokens=False)["input_ids"][:3]


def test_cache_key_depends_on_text_and_tokenizer(tmp_path: Path, bert, shared_data: Path, text: str) -> None:
    gpt2 = load_tokenizer(str(shared_data / "tokenizers" / "gpt2"))
    tokenize_cached(text, bert, tmp_path)
    tokenize_cached(text[:-1], bert, tmp_path)
    by_gpt2 = tokenize_cached(text, gpt2, tmp_path)
    assert len(_cache_files(tmp_path)) == 3
    assert gpt2.decode(by_gpt2.tolist()) == text  # byte-level BPE keeps the newlines


def test_unreadable_cache_is_rebuilt(
    tmp_path: Path, bert, text: str, caplog: pytest.LogCaptureFixture
) -> None:
    expected = tokenize_cached(text, bert, tmp_path)
    (cache_file,) = _cache_files(tmp_path)
    cache_file.write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        again = tokenize_cached(text, bert, tmp_path)
    assert "unreadable" in caplog.text
    torch.testing.assert_close(again, expected, rtol=0, atol=0)


def test_very_long_line_is_tokenised_in_pieces_without_warnings(
    tmp_path: Path, bert, caplog: pytest.LogCaptureFixture
) -> None:
    line = "the quick brown fox jumps over the lazy dog " * 5_000  # 220,000 characters, one line
    with caplog.at_level(logging.WARNING):
        ids = encode_text(line, bert)
    assert ids.shape == (45_000,) and ids.dtype == np.int64
    assert "longer than the specified maximum" not in caplog.text


def test_pack_blocks_shapes_and_values() -> None:
    ids = torch.arange(10)
    blocks = pack_blocks(ids, 3)
    assert blocks.shape == (3, 3)
    assert blocks.tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]  # the remainder (9) is dropped
    assert pack_blocks(torch.arange(12), 4).shape == (3, 4)


def test_too_few_tokens_for_one_block(tmp_path: Path, bert) -> None:
    ids = tokenize_cached("hello world\n", bert, tmp_path)
    with pytest.raises(DataError, match=r"only 2 tokens, but one block needs sequence_length=64"):
        pack_blocks(ids, 64)


def test_blocks_through_a_dataloader(tmp_path: Path, bert, text: str) -> None:
    ids = tokenize_cached(text, bert, tmp_path)
    blocks = pack_blocks(ids, 64)  # (num_blocks, 64)
    assert blocks.shape == (ids.numel() // 64, 64)
    dataset = LMBlockDataset(blocks)
    sampler = BlockSampler(len(dataset), seed=0)
    loader = DataLoader(dataset, batch_size=4, sampler=sampler)
    batch = next(iter(loader))
    assert batch["input_ids"].shape == (4, 64) and batch["input_ids"].dtype == torch.long
    assert torch.equal(batch["input_ids"], batch["labels"])
    first = sampler.epoch_order(0)[:4].tolist()
    assert torch.equal(batch["input_ids"], blocks[first])
    assert sampler.state_dict()["position"] == 4  # num_workers=0: exactly what was consumed


def test_dataset_rejects_bad_blocks() -> None:
    with pytest.raises(DataError, match="LongTensor"):
        LMBlockDataset(torch.zeros(4, 8))


def test_reloaded_tokenizer_hits_the_same_cache_entry(
    tmp_path: Path, bert, text: str, caplog: pytest.LogCaptureFixture
) -> None:
    # A run resumed with the tokenizer saved beside the checkpoint must not tokenise again.
    tokenize_cached(text, bert, tmp_path / "cache")
    bert.save_pretrained(tmp_path / "tok")
    reloaded = load_tokenizer(str(tmp_path / "tok"))
    with caplog.at_level(logging.INFO, logger=LOGGER):
        tokenize_cached(text, reloaded, tmp_path / "cache")
    assert [r.message.split()[0] for r in caplog.records] == ["loaded"]

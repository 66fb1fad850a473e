"""Tokenizers: the real BERT / GPT-2 vocabularies, trained BPE / WordPiece, save and reload."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from s3cmn.data import DataError, load_tokenizer


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@pytest.fixture(scope="module")
def train_slice(wikitext_valid: str) -> str:
    return wikitext_valid[:60_000]


@pytest.fixture(scope="module")
def held_out(wikitext_valid: str) -> str:
    return wikitext_valid[200_000:203_000]


@pytest.mark.parametrize("which", ["folder", "vocab.txt"])
def test_bert_vocab_gives_the_known_ids(bert_vocab: Path, which: str) -> None:
    tokenizer = load_tokenizer(str(bert_vocab.parent if which == "folder" else bert_vocab))
    assert len(tokenizer) == 30_522
    assert _ids(tokenizer, "the") == [1996]
    assert _ids(tokenizer, "Hello") == [7592]  # uncased vocabulary: lower-cased
    assert tokenizer.convert_ids_to_tokens(2075) == "##ing"
    # BERT has no eos: [SEP] serves, and [PAD] pads.
    assert (tokenizer.eos_token, tokenizer.eos_token_id) == ("[SEP]", 102)
    assert (tokenizer.pad_token, tokenizer.pad_token_id) == ("[PAD]", 0)


def test_gpt2_folder(shared_data: Path) -> None:
    tokenizer = load_tokenizer(str(shared_data / "tokenizers" / "gpt2"))
    assert len(tokenizer) == 50_257
    assert _ids(tokenizer, "Hello world") == [15496, 995]
    assert tokenizer.eos_token_id == 50_256 and tokenizer.pad_token_id == 50_256
    text = " = Valkyria Chronicles III = \n"
    assert tokenizer.decode(_ids(tokenizer, text)) == text


@pytest.mark.parametrize("spec", ["bpe:512", "wordpiece:512"])
def test_trained_tokenizer_save_and_reload_gives_identical_ids(
    tmp_path: Path, spec: str, train_slice: str, held_out: str
) -> None:
    tokenizer = load_tokenizer(spec, train_text=train_slice)
    assert len(tokenizer) == 512
    assert tokenizer.eos_token_id is not None and tokenizer.pad_token_id is not None
    ids = _ids(tokenizer, held_out)
    assert len(ids) > len(held_out) // 10 and max(ids) < 512

    tokenizer.save_pretrained(tmp_path)
    reloaded = load_tokenizer(str(tmp_path))

    assert _ids(reloaded, held_out) == ids
    assert reloaded.get_vocab() == tokenizer.get_vocab()
    assert (reloaded.eos_token_id, reloaded.pad_token_id) == (tokenizer.eos_token_id, tokenizer.pad_token_id)


def test_trained_bpe_round_trips_text(train_slice: str, held_out: str) -> None:
    tokenizer = load_tokenizer("bpe:512", train_text=train_slice)
    assert tokenizer.eos_token == "<|endoftext|>"
    assert tokenizer.decode(_ids(tokenizer, held_out)) == held_out  # byte level: lossless, newlines kept


def test_trained_wordpiece_special_tokens(train_slice: str) -> None:
    tokenizer = load_tokenizer("wordpiece:512", train_text=train_slice)
    assert tokenizer.convert_ids_to_tokens(list(range(5))) == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert (tokenizer.eos_token, tokenizer.pad_token, tokenizer.unk_token) == ("[SEP]", "[PAD]", "[UNK]")
    pieces = tokenizer.convert_ids_to_tokens(_ids(tokenizer, "The game"))
    assert "".join(p.removeprefix("##") for p in pieces).replace(" ", "") == "Thegame"


@pytest.mark.parametrize("spec", ["bpe:600", "wordpiece:600"])
def test_training_is_deterministic(spec: str, train_slice: str) -> None:
    first = load_tokenizer(spec, train_text=train_slice)
    second = load_tokenizer(spec, train_text=train_slice)
    assert first.get_vocab() == second.get_vocab()
    assert first.backend_tokenizer.to_str() == second.backend_tokenizer.to_str()


def test_bad_specs() -> None:
    with pytest.raises(DataError, match="bpe:N or wordpiece:N"):
        load_tokenizer("bpe:lots", train_text="x")
    with pytest.raises(DataError, match="at least 257"):
        load_tokenizer("bpe:100", train_text="some text\n")
    with pytest.raises(DataError, match="trained on the training text"):
        load_tokenizer("wordpiece:1000")
    with pytest.raises(DataError, match="does not exist"):
        load_tokenizer("./no/such/tokenizer")


def test_offline_hub_name_not_cached_says_how_to_point_to_a_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(DataError) as info:
        load_tokenizer("s3cmn-test/no-such-tokenizer")
    assert time.perf_counter() - start < 10.0  # no network retries
    assert "local folder" in str(info.value) and "bpe:8192" in str(info.value)


def test_folder_without_tokenizer_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="holds no tokenizer .looked for tokenizer.json"):
        load_tokenizer(str(tmp_path))


def test_tokenizer_without_eos_or_sep_gets_one_for_packing() -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from s3cmn.data import ensure_special_tokens

    backend = Tokenizer(models.WordLevel({"a": 0, "b": 1, "<unk>": 2}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = ensure_special_tokens(PreTrainedTokenizerFast(tokenizer_object=backend))
    assert tokenizer.eos_token == "<|endoftext|>" and tokenizer.eos_token_id == 3
    assert tokenizer.pad_token_id == 3 and len(tokenizer) == 4

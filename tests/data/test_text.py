"""Raw text splits: local folder, named files, the hub switched off, and bad files."""

from __future__ import annotations

import gzip
import time
from pathlib import Path

import huggingface_hub.constants
import pytest

from s3cmn.data import DataError, load_text_splits, read_text_file
from s3cmn.run_config import DataConfig


@pytest.fixture(scope="module")
def raw_dir(shared_data: Path) -> Path:
    return shared_data / "wikitext-2-raw"


def test_splits_from_data_dir_plain_and_gz(tmp_path: Path, raw_dir: Path) -> None:
    valid = (raw_dir / "wiki.valid.raw").read_text(encoding="utf-8")
    test = (raw_dir / "wiki.test.raw").read_text(encoding="utf-8")
    (tmp_path / "wiki.train.raw").write_text(valid[:20_000], encoding="utf-8")
    (tmp_path / "wiki.valid.raw.gz").write_bytes(gzip.compress(valid[20_000:30_000].encode("utf-8")))
    (tmp_path / "wiki.test.raw").write_text(test[:5_000], encoding="utf-8")

    texts = load_text_splits(DataConfig(data_dir=str(tmp_path)))

    assert list(texts) == ["train", "validation", "test"]
    assert texts["train"] == valid[:20_000]
    assert texts["validation"] == valid[20_000:30_000]
    assert texts["test"] == test[:5_000]


def test_real_data_dir_gives_only_the_splits_asked_for(raw_dir: Path) -> None:
    data = DataConfig(data_dir=str(raw_dir))
    texts = load_text_splits(data, splits=("valid", "test"))  # "valid" is an alias; keys keep the asked name
    assert set(texts) == {"valid", "test"}
    assert texts["valid"].startswith(" \n = Homarus gammarus = \n")
    assert len(texts["test"].encode("utf-8")) == 1_290_590  # README byte count
    # The train split is not in ../shared/data: asking for it names the way to provide it.
    with pytest.raises(DataError, match=r"train split is needed.*--train-file.*wiki\.train\.raw"):
        load_text_splits(data, splits=("train",))


def test_named_files_as_in_the_offline_example(raw_dir: Path) -> None:
    data = DataConfig(
        train_file=str(raw_dir / "wiki.valid.raw"), validation_file=str(raw_dir / "wiki.test.raw")
    )
    texts = load_text_splits(data, splits=("train", "validation"))
    assert texts["train"] == (raw_dir / "wiki.valid.raw").read_text(encoding="utf-8")
    assert texts["validation"] == (raw_dir / "wiki.test.raw").read_text(encoding="utf-8")
    assert texts["train"].count("\n") == 3_760  # README line count
    with pytest.raises(DataError, match="--test-file"):
        load_text_splits(data)  # the test split was not given


def test_named_file_overrides_data_dir(tmp_path: Path, raw_dir: Path) -> None:
    own = tmp_path / "mine.txt"
    own.write_text("my own validation text\n", encoding="utf-8")
    texts = load_text_splits(
        DataConfig(data_dir=str(raw_dir), validation_file=str(own)), splits=("validation", "test")
    )
    assert texts["validation"] == "my own validation text\n"
    assert texts["test"].startswith(" \n = Robert Boulter = \n")


def test_offline_without_local_data_fails_fast_and_says_how_to_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(DataError) as info:
        load_text_splits(DataConfig())
    assert time.perf_counter() - start < 2.0
    message = str(info.value)
    assert "wikitext/wikitext-2-raw-v1" in message
    assert "--data-dir" in message and "--train-file" in message and "--validation-file" in message


def test_unreachable_hub_fails_fast_without_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    # Online mode, but the endpoint refuses connections (nothing listens on port 9): no ~25 s of retries.
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    start = time.perf_counter()
    with pytest.raises(DataError, match=r"not reachable.*--data-dir"):
        load_text_splits(DataConfig(), splits=("validation",))
    assert time.perf_counter() - start < 2.0


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.raw does not exist"):
        load_text_splits(DataConfig(train_file=str(tmp_path / "nope.raw")), splits=("train",))


def test_data_dir_that_is_not_a_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="is not a folder"):
        load_text_splits(DataConfig(data_dir=str(tmp_path / "absent")), splits=("test",))


@pytest.mark.parametrize("content", [b"", b" \n \n\t\n"])
def test_empty_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "empty.txt"
    path.write_bytes(content)
    with pytest.raises(DataError, match=r"empty\.txt is empty"):
        read_text_file(path)


def test_non_utf8_file_names_the_file_and_the_byte_offset(tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\u00e9 = ok\n".encode() + "na\u00efve\n".encode("latin-1"))
    with pytest.raises(DataError) as info:
        load_text_splits(DataConfig(validation_file=str(path)), splits=("validation",))
    message = str(info.value)
    assert str(path) in message
    assert "byte 0xef at byte offset 13" in message  # "café = ok\n" is 11 bytes, then "na", then 0xef
    assert "must be UTF-8" in message


def test_non_utf8_inside_gzip_and_corrupt_gzip(tmp_path: Path) -> None:
    bad = tmp_path / "wiki.test.raw.gz"
    bad.write_bytes(gzip.compress(b"abc\xffdef\n"))
    with pytest.raises(DataError, match="byte offset 3 of the decompressed text"):
        load_text_splits(DataConfig(data_dir=str(tmp_path)), splits=("test",))
    corrupt = tmp_path / "corrupt.raw.gz"
    corrupt.write_bytes(b"this is not gzip")
    with pytest.raises(DataError, match="not a valid gzip file"):
        read_text_file(corrupt)


def test_unknown_split() -> None:
    with pytest.raises(DataError, match="unknown split 'dev'"):
        load_text_splits(DataConfig(data_dir="."), splits=("dev",))

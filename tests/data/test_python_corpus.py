"""The python-stdlib corpus: splits by file, deterministic and disjoint; non-UTF-8 files skipped and counted."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from s3cmn.data import DataError, load_python_corpus, load_text_splits, load_training_texts
from s3cmn.data.python_corpus import split_of
from s3cmn.run_config import DataConfig


@pytest.fixture(scope="module")
def corpus():
    return load_python_corpus()


def test_splits_are_deterministic_disjoint_and_cover_the_library(corpus) -> None:
    again = load_python_corpus()
    paths = {split: [f.path for f in corpus.files(split)] for split in ("train", "validation", "test")}
    assert paths == {split: [f.path for f in again.files(split)] for split in paths}
    train, validation, test = (set(paths[s]) for s in ("train", "validation", "test"))
    assert not train & validation and not train & test and not validation & test
    on_disk = {p.relative_to(corpus.root).as_posix() for p in Path(corpus.root).rglob("*.py")
               if not {"site-packages", "dist-packages", "test", "tests", "idle_test"} & set(p.relative_to(
                   corpus.root).parts[:-1])}
    assert train | validation | test <= on_disk and len(train | validation | test) > 0.9 * len(on_disk)
    assert all(split_of(p) == s for s, ps in paths.items() for p in ps)  # the split is a function of the path
    assert len(validation) > 10 and len(test) > 10 and len(train) > 5 * len(test)
    assert corpus.text("validation") == "".join((Path(corpus.root) / p).read_text(encoding="utf-8")
                                                if (Path(corpus.root) / p).read_text(encoding="utf-8").endswith("\n")
                                                else (Path(corpus.root) / p).read_text(encoding="utf-8") + "\n"
                                                for p in paths["validation"])


def test_split_of_is_a_fixed_hash_rule() -> None:
    # pinned: the split of a path must not change between versions of this package (checkpoints record it)
    assert [split_of(p) for p in ("os.py", "json/decoder.py", "asyncio/tasks.py")] == ["validation", "train", "train"]
    counts = {"train": 0, "validation": 0, "test": 0}
    for i in range(10_000):
        counts[split_of(f"pkg/module_{i}.py")] += 1
    assert 7_700 < counts["train"] < 8_300 and 800 < counts["validation"] < 1_200 and 800 < counts["test"] < 1_200


def test_non_utf8_files_are_skipped_and_counted(tmp_path: Path, caplog) -> None:
    for i in range(40):
        (tmp_path / f"m{i}.py").write_text(f"x = {i}\n", encoding="utf-8")
    (tmp_path / "latin1.py").write_bytes("# caf\xe9\n".encode("latin-1"))
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "test_x.py").write_text("left out\n", encoding="utf-8")
    with caplog.at_level(logging.INFO, logger="s3cmn.data.python_corpus"):
        small = load_python_corpus(tmp_path)
    assert small.skipped_not_utf8 == ["latin1.py"] and "1 files skipped as not UTF-8" in caplog.text
    assert sum(len(small.files(s)) for s in ("train", "validation", "test")) == 40


def test_the_corpus_through_the_data_settings(corpus) -> None:
    data = DataConfig(corpus="python-stdlib")
    texts = load_training_texts(data)
    assert texts.train == corpus.text("train") and texts.validation == corpus.text("validation")
    assert texts.selection["rule"] == "split"
    assert texts.selection["source"]["files"]["test"] == len(corpus.files("test"))
    assert load_text_splits(data, ("test",))["test"] == corpus.text("test")
    held = load_training_texts(DataConfig(corpus="python-stdlib", validation_source="holdout"))
    files = corpus.files("train")
    n = round(0.1 * len(files))
    assert held.selection["held_out_files"] == [f.path for f in files[-n:]]
    assert held.train + held.validation == corpus.text("train")
    with pytest.raises(DataError, match="cannot be used with it"):
        load_text_splits(DataConfig(corpus="python-stdlib", train_file="x.txt"), ("train",))


def test_test_suites_are_read_on_request_and_split_by_the_same_rule(tmp_path: Path) -> None:
    for i in range(40):
        (tmp_path / f"m{i}.py").write_text(f"x = {i}\n", encoding="utf-8")
        (tmp_path / "test").mkdir(exist_ok=True)
        (tmp_path / "test" / f"test_m{i}.py").write_text(f"assert {i}\n", encoding="utf-8")
    plain, suites = load_python_corpus(tmp_path), load_python_corpus(tmp_path, test_suites=True)
    assert sum(len(plain.files(s)) for s in ("train", "validation", "test")) == 40
    assert sum(len(suites.files(s)) for s in ("train", "validation", "test")) == 80
    for split in ("train", "validation", "test"):
        assert all(split_of(f.path) == split for f in suites.files(split))
        assert {f.path for f in plain.files(split)} <= {f.path for f in suites.files(split)}
    assert suites.record()["test_suites"] is True and plain.record()["test_suites"] is False

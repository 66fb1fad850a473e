"""Content provenance of the read-outs: the n-gram fingerprint, its overlap on real WikiText-2 text, the
test-split guard, and the fingerprint surviving save -> load of the settings and the datastore."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from s3cmn.data.errors import DataError
from s3cmn.nexttoken.datastore import NextTokenDatastore
from s3cmn.nexttoken.fitted import CacheSettings, ReadoutSettings
from s3cmn.nexttoken.provenance import (
    MAX_OVERLAP,
    TextFingerprint,
    refuse_overlap,
    refuse_test_split,
    text_overlap,
    warn_unchecked,
)


@pytest.fixture(scope="module")
def splits(shared_data: Path) -> dict[str, str]:
    raw = shared_data / "wikitext-2-raw"
    return {s: (raw / f"wiki.{s}.raw").read_text(encoding="utf-8") for s in ("valid", "test")}


@pytest.fixture(scope="module")
def fit_text(splits: dict[str, str]) -> str:
    """The first ~40,000 characters of the test split, cut at a line: the text the read-outs were fitted on."""
    return splits["test"][: splits["test"].index("\n", 40_000) + 1]


def test_different_wikitext_articles_share_almost_no_long_ngrams(splits):
    # valid and test are different articles: the natural overlap (measured: 0 of ~12,000 sampled 8-grams
    # either way) stays far below the refusal threshold.
    valid, test = TextFingerprint.from_text(splits["valid"]), TextFingerprint.from_text(splits["test"])
    for scored, fingerprint in ((splits["test"], valid), (splits["valid"], test)):
        overlap = text_overlap(scored, fingerprint)
        assert overlap.scored_ngrams > 10_000 and overlap.source_ngrams > 10_000
        assert overlap.fraction < 0.005 < MAX_OVERLAP, overlap


def test_a_prefix_suffix_rewrapped_or_shortened_copy_is_refused(fit_text, splits):
    fingerprint = TextFingerprint.from_text(fit_text)
    lines = fit_text.splitlines(keepends=True)
    copies = {
        "prefix": "".join(lines[: len(lines) // 4]),
        "suffix": "".join(lines[-len(lines) // 4 :]),
        "re-wrapped": "\n".join(" ".join(fit_text.split()[i : i + 13]) for i in range(0, 5000, 13)),
        "minus its first line": "".join(lines[1:]),
        "plus a trailing newline": fit_text + "\n",
        "upper case, other spacing": "  ".join(fit_text.upper().split()),
    }
    for name, text in copies.items():
        assert text_overlap(text, fingerprint).scored_share > 0.9, name
        with pytest.raises(DataError) as err:
            refuse_overlap(text, fingerprint, "the scored text", "the fit text (heldout.raw)", "score other text")
        message = str(err.value)
        assert "\n" not in message and "heldout.raw" in message and "%" in message, name
    # The fit text inside a much longer scored text: a small share of the scored text, all of the fit text.
    overlap = text_overlap(splits["valid"] + fit_text, fingerprint)
    assert overlap.scored_share < MAX_OVERLAP and overlap.source_share == 1.0 and overlap.fraction > MAX_OVERLAP


def test_the_refusal_reads_as_one_sentence(fit_text):
    with pytest.raises(DataError) as err:
        refuse_overlap(fit_text, TextFingerprint.from_text(fit_text), "the scored text",
                       "the text the read-out settings were fitted on (/data/heldout.raw)",
                       "score held-out text")  # fmt: skip
    assert str(err.value) == ("the scored text shares 100.0% of its sampled 8-word sequences with the text the "
                              "read-out settings were fitted on (/data/heldout.raw) (at most 5% allowed): "
                              "score held-out text")  # fmt: skip


def test_a_test_split_is_refused_by_name_and_by_content(splits):
    with pytest.raises(DataError, match=r"wiki\.test\.raw is a test split .*fit the read-outs on a held-out text"):
        refuse_test_split("/data/wiki.test.raw", "any text", "fit")
    with pytest.raises(DataError, match=r"heldout\.raw is a test split \(its text is the WikiText-2 raw test split"
                                         r".*build the datastore from the training text"):
        refuse_test_split("/data/heldout.raw", splits["test"], "build")
    refuse_test_split("/data/wiki.valid.raw", splits["valid"], "fit")  # not a test split: no error


def test_the_fingerprint_round_trips_through_settings_and_datastore(fit_text, tmp_path):
    fingerprint = TextFingerprint.from_text(fit_text)
    assert len(fingerprint.hashes) > 100 and np.all(np.diff(fingerprint.hashes.astype(np.float64)) > 0)
    settings = ReadoutSettings(cache=CacheSettings(), fitted_on={"path": "heldout.raw"}, fingerprint=fingerprint)
    loaded = ReadoutSettings.load(settings.save(tmp_path / "readout.json"))
    assert loaded == settings and loaded.fingerprint == fingerprint
    assert ReadoutSettings.load(ReadoutSettings().save(tmp_path / "old.json")).fingerprint is None
    rng = np.random.default_rng(0)
    store = NextTokenDatastore.build(rng.standard_normal((50, 8)).astype(np.float32), np.arange(50), np.arange(50),
                                     source={"path": "train.raw"}, fingerprint=fingerprint)  # fmt: skip
    folder = store.save(tmp_path / "store")
    assert NextTokenDatastore.load(folder).fingerprint == fingerprint
    manifest = json.loads((folder / "datastore.json").read_text())  # the hashes sit in a file of their own
    assert "hashes" not in manifest["fingerprint"] and "fingerprint.npy" in manifest["files"]


def test_a_text_hashed_in_pieces_gives_the_same_fingerprint(fit_text):
    # Big training texts are hashed a few MiB at a time; n-grams that cross a piece's end are kept.
    whole = TextFingerprint.from_text(fit_text)
    assert TextFingerprint.from_text(fit_text, chunk_chars=997) == whole
    short = TextFingerprint.from_text("One two, THREE four-five")  # 5 words, fewer than 8: no n-gram
    assert short.words == 5 and len(short.hashes) == 0


def test_a_read_out_made_without_its_text_is_warned_about_once(caplog):
    warn_unchecked.cache_clear()
    with caplog.at_level(logging.WARNING, logger="s3cmn.nexttoken.provenance"):
        warn_unchecked("fit_readouts")
        warn_unchecked("fit_readouts")
    assert [r.message.count("cannot check") for r in caplog.records] == [1]


def test_the_overlap_limit_is_a_setting(fit_text):
    fingerprint = TextFingerprint.from_text(fit_text)
    half = fit_text[: len(fit_text) // 2] + " ".join(f"word{i}" for i in range(40_000))  # ~30% shared
    share = text_overlap(half, fingerprint).fraction
    assert MAX_OVERLAP < share < 0.9
    with pytest.raises(DataError, match=r"at most 5% allowed"):
        refuse_overlap(half, fingerprint, "the scored text", "the fit text", "score other text")
    assert refuse_overlap(half, fingerprint, "the scored text", "the fit text", "score other text",
                          max_overlap=0.9).fraction == share

"""The read-outs' guards check content, not file identity: s3cmn-memory fit / build refuse a test split, the
evaluation refuses a scored text that shares the fit or datastore text's long n-grams (a prefix, a suffix, a
re-wrapped copy), accepts a different real text and reports the overlap, and the Python API records it too."""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from s3cmn.evaluation.errors import EvaluationError
from s3cmn.evaluation.readouts import scored_text_overlap
from s3cmn.nexttoken.fit import build_datastore, fit_readouts
from s3cmn.nexttoken.fitted import CacheSettings, ReadoutSettings, settings_path
from s3cmn.nexttoken.provenance import MAX_OVERLAP, TextFingerprint, warn_unchecked
from tests.conftest import run_main


@pytest.fixture(scope="module")
def texts(shared_data: Path) -> dict[str, str]:
    """The fit text (the first ~60 lines of the test split's articles) and a disjoint real text (valid)."""
    raw = shared_data / "wikitext-2-raw"
    test = (raw / "wiki.test.raw").read_text(encoding="utf-8")
    return {"fit": test[: test.index("\n", 30_000) + 1], "valid": (raw / "wiki.valid.raw").read_text("utf-8")}


def _settings(fit_text: str | None) -> ReadoutSettings:
    fingerprint = TextFingerprint.from_text(fit_text) if fit_text is not None else None
    return ReadoutSettings(cache=CacheSettings(), fitted_on={"path": "/data/heldout.raw", "sha256": "0" * 64},
                           fingerprint=fingerprint)  # fmt: skip


def test_a_prefix_suffix_or_rewrapped_fit_text_is_refused_in_one_readable_line(texts):
    fit = texts["fit"]
    lines = fit.splitlines(keepends=True)
    copies = {"prefix": "".join(lines[:10]), "suffix": "".join(lines[-10:]), "minus its first line": "".join(lines[1:]),
              "re-wrapped": "\n".join(" ".join(fit.split()[i : i + 11]) for i in range(0, 3000, 11))}  # fmt: skip
    for name, scored in copies.items():
        with pytest.raises(EvaluationError) as err:
            scored_text_overlap(scored, _settings(fit), None, [])
        message = str(err.value)
        assert "\n" not in message and "were the datastore" not in message, name
        assert message.startswith("the scored text shares 100.0% of its sampled 8-word sequences with the text the "
                                  "read-out settings were fitted on (/data/heldout.raw)"), (name, message)  # fmt: skip


def test_the_datastore_text_is_checked_too(texts):
    store = SimpleNamespace(source={"path": "/data/train.raw"}, fingerprint=TextFingerprint.from_text(texts["fit"]))
    with pytest.raises(EvaluationError, match=r"the text the kNN datastore was built from \(/data/train\.raw\)"):
        scored_text_overlap(texts["fit"][:5000], _settings(texts["valid"]), store, [])


def test_a_disjoint_real_text_is_accepted_and_its_overlap_reported(texts):
    notes: list[str] = []
    store = SimpleNamespace(source={"path": "/data/train.raw"}, fingerprint=TextFingerprint.from_text(texts["fit"]))
    overlap = scored_text_overlap(texts["valid"], _settings(texts["fit"]), store, notes)
    for key in ("fit_text", "datastore_text"):
        assert overlap[key]["fraction"] < MAX_OVERLAP / 10 and overlap[key]["scored_ngrams"] > 10_000
    assert sum("the scored text shares 0.00% of its sampled 8-word sequences" in n for n in notes) == 2


def test_without_a_fingerprint_only_the_identical_text_is_refused_and_that_is_noted(texts):
    settings = _settings(None)
    settings.fitted_on["sha256"] = hashlib.sha256(texts["fit"].encode("utf-8")).hexdigest()
    with pytest.raises(EvaluationError) as err:
        scored_text_overlap(texts["fit"], settings, None, [])
    assert str(err.value) == ("the scored text is the text the read-out settings were fitted on (/data/heldout.raw): "
                              "score held-out text, or refit on other text")  # fmt: skip
    notes: list[str] = []
    assert scored_text_overlap(texts["fit"][:5000], settings, None, notes) == {"fit_text": None}
    assert "has no content fingerprint" in notes[0]


@pytest.mark.parametrize("command", ["fit", "build"])
def test_memory_fit_and_build_refuse_a_test_split_by_name_and_content(command, shared_data, tmp_path, capsys):
    from s3cmn.cli.memory import main as memory_main

    raw = shared_data / "wikitext-2-raw"
    by_name, by_content = tmp_path / "wiki.test.raw", tmp_path / "heldout.raw"
    shutil.copyfile(raw / "wiki.valid.raw", by_name)  # other text, but a test split's name
    shutil.copyfile(raw / "wiki.test.raw", by_content)  # the test split under another name
    # Refused before the model is read: the checkpoint need not exist.
    for text, why in ((by_name, "its name 'wiki.test.raw' marks a test split"),
                      (by_content, "its text is the WikiText-2 raw test split (by SHA-256)")):  # fmt: skip
        code, _, err = run_main(memory_main, [command, str(tmp_path / "ckpt"), "--text", str(text)], capsys)
        lines = [line for line in err.splitlines() if "error:" in line]
        assert code == 2 and len(lines) == 1 and "Traceback" not in err
        use = "fit the read-outs on a held-out text" if command == "fit" else "build the datastore from the training"
        assert why in lines[0] and use in lines[0], lines[0]


def test_the_python_api_records_the_fingerprint_and_it_round_trips(tiny_model, texts, tmp_path, caplog):
    model = tiny_model()
    stream = torch.randint(1, 97, (120,), generator=torch.Generator().manual_seed(0))
    store = build_datastore(model, stream, 32, 16, 4, text=texts["valid"][:20_000])
    assert store.fingerprint == TextFingerprint.from_text(texts["valid"][:20_000])
    settings = fit_readouts(model, stream, 32, 16, 4, datastore=store, nprobe=4, text=texts["fit"])
    assert settings.fingerprint == TextFingerprint.from_text(texts["fit"])
    assert ReadoutSettings.load(settings.save(tmp_path / "readout.json")).fingerprint == settings.fingerprint
    with pytest.raises(ValueError, match="the text the datastore was built from"):  # fit on the datastore's text
        fit_readouts(model, stream, 32, 16, 4, datastore=store, nprobe=4, text=texts["valid"][:5000])
    warn_unchecked.cache_clear()
    with caplog.at_level(logging.WARNING, logger="s3cmn.nexttoken.provenance"):
        assert fit_readouts(model, stream, 32, 16, 4).fingerprint is None
        fit_readouts(model, stream, 32, 16, 4)
    assert len([r for r in caplog.records if "fit_readouts was given no text" in r.message]) == 1


def test_eval_refuses_settings_fitted_on_a_prefix_of_the_scored_split(tiny_checkpoint, wikitext_dir, tmp_path, capsys):
    from s3cmn.cli.eval import main as eval_main

    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, ckpt)
    test = (wikitext_dir / "wiki.test.raw").read_text(encoding="utf-8")
    prefix = "".join(test.splitlines(keepends=True)[:40])  # what --max-eval-tokens scores
    settings = ReadoutSettings(cache=CacheSettings(), fitted_on={"path": "/data/heldout.raw"},
                               fingerprint=TextFingerprint.from_text(prefix), context_length=32, stride=16)  # fmt: skip
    settings.save(settings_path(ckpt))
    args = [str(ckpt), "--data-dir", str(wikitext_dir), "--memory", "off,cache", "--max-eval-tokens", "400",
            "--context-length", "32", "--stride", "16", "--report-dir", str(tmp_path / "r"), "--no-progress"]
    code, _, err = run_main(eval_main, args, capsys)
    lines = [line for line in err.splitlines() if "s3cmn-eval: error:" in line]
    assert code == 2 and len(lines) == 1, err
    assert "% of its sampled 8-word sequences with the text the read-out settings were fitted on" in lines[0]
    assert not (tmp_path / "r" / "report.json").exists()  # the report of an accepted text: test_readouts

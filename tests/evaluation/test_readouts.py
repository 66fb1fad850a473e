"""Next-token read-outs on a real (tiny, untrained) S3CMN: causality with every memory kind, the cache copies a
repeated sequence, a datastore holds only its own text, fitting, generation, and the s3cmn-eval modes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from s3cmn.evaluation.perplexity import score_stream
from s3cmn.evaluation.readouts import parse_memory_modes
from s3cmn.nexttoken.datastore import NextTokenDatastore, file_source
from s3cmn.nexttoken.fit import build_datastore, fit_readouts
from s3cmn.nexttoken.fitted import CacheSettings, KnnSettings, ReadoutSettings
from s3cmn.nexttoken.stream import score_readouts

CONTEXT, STRIDE = 32, 16
MODES = ["off", "cache", "knn", "cache+knn"]


def _stream(n: int, lo: int, hi: int, seed: int) -> torch.Tensor:
    return torch.randint(lo, hi, (n,), generator=torch.Generator().manual_seed(seed))


def _settings(lam_cache: float = 0.3, lam_knn: float = 0.2) -> ReadoutSettings:
    return ReadoutSettings(cache=CacheSettings(lam_cache, 1.0, 8, 64), knn=KnnSettings(lam_knn, 1.0, 8, 4),
                           combined=(0.2, 0.2), context_length=CONTEXT, stride=STRIDE)  # fmt: skip


@pytest.fixture
def model_and_store(tiny_model):
    model = tiny_model()
    store = build_datastore(model, _stream(300, 1, 97, seed=9), CONTEXT, STRIDE, 4)
    return model, store


def test_changing_token_t_changes_no_earlier_score_with_any_memory_kind(model_and_store, tiny_model):
    model, store = model_and_store
    a = _stream(200, 1, 97, seed=0)
    b = a.clone()
    t = 120
    b[t] = (a[t] + 1) % 97
    scores = [score_readouts(model, s, CONTEXT, STRIDE, 4, MODES, _settings(), store).nll for s in (a, b)]
    # Index i scores token i + 1. Not bit-exact: the FFT long convolution (Hyena) mixes every position of a
    # window at float rounding level, so later tokens move earlier outputs by ~1e-7, never more.
    for m in MODES:
        torch.testing.assert_close(scores[0][m][: t - 1], scores[1][m][: t - 1], atol=1e-5, rtol=0, msg=m)
        assert float((scores[0][m][t - 1 :] - scores[1][m][t - 1 :]).abs().max()) > 1e-2, m
    learned = []
    for s in (a, b):  # the learned reader: a fresh memory each time, written after each forward
        model.memory_bank.reset()
        learned.append(score_stream(model, s, CONTEXT, STRIDE, 4, use_memory=True, write_memory=True).nll)
    torch.testing.assert_close(learned[0][: t - 1], learned[1][: t - 1], atol=1e-5, rtol=0)


def test_off_mode_equals_the_plain_scoring_pass(tiny_model):
    model = tiny_model()
    stream = _stream(150, 1, 97, seed=1)
    off = score_readouts(model, stream, CONTEXT, STRIDE, 4, ["off"]).nll["off"]
    torch.testing.assert_close(off, score_stream(model, stream, CONTEXT, STRIDE, 4).nll, atol=1e-9, rtol=1e-9)


def test_the_cache_predicts_a_repeated_random_sequence_almost_perfectly(tiny_model):
    model = tiny_model()
    seq = _stream(100, 1, 97, seed=2)
    stream = torch.cat([torch.tensor([0]), seq, seq])
    settings = ReadoutSettings(cache=CacheSettings(0.95, 0.05, 8, 256), context_length=CONTEXT, stride=STRIDE)
    nll = score_readouts(model, stream, CONTEXT, STRIDE, 4, ["off", "cache"], settings)
    first, second = slice(0, 100), slice(100 + CONTEXT, 200)  # the second copy, once its context repeats too
    assert float(nll.nll["off"][second].mean()) > 3.5  # the untrained LM: about log 97 = 4.57
    assert float(nll.nll["cache"][first].mean()) > 3.5  # nothing to copy the first time
    # An untrained model's state at a token also depends on where its window starts, so the nearest cached
    # state is not always the matching one; most positions are still copied with p > 0.9.
    copied = (nll.nll["cache"][second] < -torch.log(torch.tensor(0.9))).double().mean()
    assert float(copied) > 0.7 and float(nll.nll["cache"][second].mean()) < 1.5


def test_a_datastore_built_from_text_a_never_contains_text_b(tiny_model):
    model = tiny_model()
    text_a, text_b = _stream(200, 1, 48, seed=3), _stream(200, 48, 97, seed=4)
    store = build_datastore(model, text_a, CONTEXT, STRIDE, 4, source={"path": "a.txt"})
    assert len(store) == 199 and store.source["tokens"] == 199 and store.source["path"] == "a.txt"
    values = np.asarray(store.values)
    assert np.array_equal(values, text_a.numpy()[np.asarray(store.positions) + 1])  # each entry: A's next token
    assert not set(values.tolist()) & set(text_b.tolist())
    nb = store.search(torch.randn(5, 32), 8)  # whatever the query, only A's tokens come back
    assert set(nb.values[nb.hit].tolist()) <= set(text_a.tolist())


def test_fit_finds_the_cache_on_repetitive_text_and_round_trips(model_and_store, tmp_path):
    model, store = model_and_store
    seq = _stream(80, 1, 97, seed=5)
    heldout = torch.cat([torch.tensor([0]), seq, seq, seq])
    settings = fit_readouts(model, heldout, CONTEXT, STRIDE, 4, datastore=store, nprobe=4,
                            fitted_on={"path": "heldout.raw", "sha256": "0" * 64})  # fmt: skip
    nll = settings.fit["nll_per_token"]
    assert settings.cache.lam > 0.3 and nll["cache"] < 0.75 * nll["off"], nll
    assert nll["cache+knn"] <= min(nll["cache"], nll["knn"]) + 1e-9  # the joint fit includes both alone
    assert ReadoutSettings.load(settings.save(tmp_path / "readout.json")) == settings


def test_generate_with_the_cache(model_and_store):
    model, store = model_and_store
    prompt = _stream(12, 1, 97, seed=6)[None]
    plain = model.generate(prompt, max_new_tokens=6, do_sample=False, memory="off")
    zero = ReadoutSettings(cache=CacheSettings(0.0, 1.0, 8, 64), knn=KnnSettings(0.0, 1.0, 8, 4), combined=(0.0, 0.0))
    for memory in ("cache", "knn", "cache+knn"):  # lambda 0: exactly the LM's greedy continuation
        out = model.generate(prompt, max_new_tokens=6, memory=memory, readout_settings=zero, datastore=store)
        assert torch.equal(out, plain), memory
    seq = _stream(40, 1, 97, seed=7)
    copy = ReadoutSettings(cache=CacheSettings(0.9, 0.05, 4, 128))
    out = model.generate(torch.cat([seq, seq[:20]])[None], max_new_tokens=10, memory="cache", readout_settings=copy)
    assert int((out[0, 60:] == seq[20:30]).sum()) >= 8  # the cache continues the repeated sequence
    with pytest.raises(ValueError, match="must be one of"):
        model.generate(prompt, memory="both")


def test_memory_mode_lists_and_old_names():
    assert parse_memory_modes("off,cache,knn,cache+knn") == ["off", "cache", "knn", "cache+knn"]
    assert parse_memory_modes("both") == ["off", "learned"] and parse_memory_modes("on") == ["learned"]
    with pytest.raises(ValueError, match="not one of"):
        parse_memory_modes("off,cash")


def test_eval_scores_modes_side_by_side_and_names_the_fitted_text(tiny_checkpoint, wikitext_dir, tmp_path, capsys):
    from s3cmn.cli.eval import main as eval_main
    from s3cmn.cli.memory import main as memory_main

    ckpt = tmp_path / "ckpt"
    import shutil

    shutil.copytree(tiny_checkpoint, ckpt)
    train, heldout = tmp_path / "train.raw", tmp_path / "heldout.raw"
    lines = (wikitext_dir / "wiki.valid.raw").read_text(encoding="utf-8").splitlines(keepends=True)
    train.write_text("".join(lines[:60]), encoding="utf-8")
    heldout.write_text("".join(lines[60:120]), encoding="utf-8")
    flags = ["--context-length", "32", "--stride", "16", "--no-progress"]
    assert memory_main(["build", str(ckpt), "--text", str(train), *flags]) == 0
    assert memory_main(["fit", str(ckpt), "--text", str(heldout), *flags]) == 0
    assert "fitted on" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # never fit on the datastore's own text
        memory_main(["fit", str(ckpt), "--text", str(train), *flags])
    report_dir = tmp_path / "report"
    args = [str(ckpt), "--data-dir", str(wikitext_dir), "--memory", "off,cache,knn,cache+knn", "--max-eval-tokens",
            "400", "--context-length", "32", "--stride", "16", "--report-dir", str(report_dir), "--no-progress"]
    assert eval_main(args) == 0
    report = json.loads((report_dir / "report.json").read_text())
    assert [r["memory"] for r in report["runs"]] == ["off", "cache", "knn", "cache+knn"]
    assert report["readouts"]["cache"]["fitted_on"]["sha256"] == file_source(heldout)["sha256"]
    assert report["readouts"]["knn"]["datastore"]["built_from"]["sha256"] == file_source(train)["sha256"]
    assert str(heldout.resolve()) in (report_dir / "report.md").read_text()
    overlap = report["readouts"]["scored_text_overlap"]  # valid lines vs the test split: different articles
    assert overlap["fit_text"]["fraction"] < 0.05 and overlap["datastore_text"]["fraction"] < 0.05
    assert "overlap with the read-outs' texts" in (report_dir / "report.md").read_text()
    assert NextTokenDatastore.load(ckpt / "nexttoken" / "datastore").source["path"] == str(train.resolve())

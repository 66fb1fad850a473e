"""The perplexity metric loaded through `evaluate` as a local module, offline."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

import s3cmn.evaluation
from s3cmn.evaluation.perplexity import nll_summary

evaluate = pytest.importorskip("evaluate")
METRIC = Path(s3cmn.evaluation.__file__).parent / "metric_perplexity.py"


@pytest.fixture(scope="module")
def metric():
    return evaluate.load(str(METRIC))


def test_uniform_nlls(metric) -> None:
    texts = ["the cat sat", "on the  mat\n", "naïve"]
    nlls = [[math.log(7.0)] * n for n in (4, 5, 2)]
    out = metric.compute(predictions=nlls, references=texts)
    words, nbytes = 3 + 3 + 1, sum(len(t.encode("utf-8")) for t in texts)
    assert (out["tokens"], out["words"], out["bytes"]) == (11, words, nbytes)
    assert out["perplexity"] == pytest.approx(7.0, rel=1e-12)
    assert out["perplexities"] == pytest.approx([7.0] * 3)
    assert out["word_perplexity"] == pytest.approx(7.0 ** (11 / words))
    assert out["bits_per_byte"] == pytest.approx(11 * math.log2(7.0) / nbytes)


def test_agrees_with_the_library_and_takes_log_probs(metric) -> None:
    nlls = [[0.5, 2.0, 1.25], [3.0]]
    texts = ["a b c", "d"]
    out = metric.compute(predictions=nlls, references=texts)
    expected = nll_summary(6.75, 4, 4, 6)
    for key, ours in (("perplexity", "token_perplexity"), ("word_perplexity", "word_perplexity"),
                      ("byte_perplexity", "byte_perplexity"), ("bits_per_byte", "bits_per_byte")):
        assert out[key] == pytest.approx(expected[ours], rel=1e-12)
    log_probs = [[-x for x in row] for row in nlls]
    again = metric.compute(predictions=log_probs, references=texts, log_probs=True)
    assert {k: again[k] for k in expected if k in again} == pytest.approx({k: out[k] for k in expected if k in out})
    assert again["perplexity"] == pytest.approx(out["perplexity"]) and again["perplexities"] == out["perplexities"]

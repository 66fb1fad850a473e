"""Sliding-window perplexity: closed-form models, every token scored once, counts, truncation, batching."""

from __future__ import annotations

import math

import pytest
import torch

from s3cmn.data import encode_text
from s3cmn.evaluation.perplexity import (
    count_bytes,
    count_words,
    nll_summary,
    prepare_text,
    score_stream,
    sliding_windows,
    truncate_to_lines,
    window_batches,
)

COMBOS = [(1, 2, 1), (5, 2, 1), (10, 4, 1), (10, 4, 3), (33, 8, 4), (64, 16, 8), (65, 16, 15), (7, 64, 32)]


@pytest.mark.parametrize(("n", "context", "stride"), COMBOS)
def test_each_token_scored_once_with_its_context(n: int, context: int, stride: int) -> None:
    windows = sliding_windows(n + 1, context, stride)
    targets = [t for w in windows for t in range(w.first_target, w.end)]
    assert sorted(targets) == list(range(1, n + 1)) and len(targets) == n
    for w in windows:
        assert w.length <= context and w.begin < w.first_target
        # each target sees all tokens from the window start: at least context - stride of them (or all before it)
        assert w.first_target - w.begin >= min(w.first_target, context - stride)
    for batch in window_batches(windows, 3):
        assert len(batch) <= 3 and len({(w.length, w.num_scored) for w in batch}) == 1


@pytest.mark.parametrize(("context", "stride"), [(16, 16), (16, 0), (1, 1)])
def test_bad_window_settings(context: int, stride: int) -> None:
    with pytest.raises(ValueError, match="stride|context_length"):
        sliding_windows(50, context, stride)


@pytest.mark.parametrize(("context", "stride", "batch"), [(8, 4, 1), (16, 3, 4), (64, 63, 2)])
def test_uniform_model_gives_vocab_size(constant_lm, context: int, stride: int, batch: int) -> None:
    V = 50
    stream = torch.randint(0, V, (301,))
    score = score_stream(constant_lm(torch.zeros(V)), stream, context, stride, batch)
    assert score.nll.shape == (300,)
    torch.testing.assert_close(score.nll, torch.full((300,), math.log(V), dtype=torch.float64))
    assert nll_summary(score.nll_sum, 300, 10, 10)["token_perplexity"] == pytest.approx(V, rel=1e-12)


def test_word_ppl_and_bits_per_byte_closed_form(constant_lm, bert_tokenizer, wikitext_valid: str) -> None:
    text = "".join(wikitext_valid.splitlines(keepends=True)[:12])
    prepared = prepare_text(text, bert_tokenizer)
    N = len(encode_text(text, bert_tokenizer))
    assert prepared.num_tokens == N and prepared.stream[0] == bert_tokenizer.eos_token_id
    V = len(bert_tokenizer)
    score = score_stream(constant_lm(torch.zeros(V)), prepared.stream, 32, 16, 4)
    summary = nll_summary(score.nll_sum, prepared.num_tokens, prepared.words, prepared.bytes)
    W, nbytes = len(text.split()), len(text.encode("utf-8"))
    assert (summary["tokens"], summary["words"], summary["bytes"]) == (N, W, nbytes)
    assert summary["token_perplexity"] == pytest.approx(V, rel=1e-12)
    assert summary["word_perplexity"] == pytest.approx(V ** (N / W), rel=1e-9)
    assert summary["byte_perplexity"] == pytest.approx(V ** (N / nbytes), rel=1e-9)
    assert summary["bits_per_byte"] == pytest.approx(N * math.log2(V) / nbytes, rel=1e-12)


def test_context_free_model_ignores_context_and_stride(constant_lm) -> None:
    V = 40
    log_p = torch.log_softmax(torch.randn(V), -1)
    stream = torch.randint(0, V, (200,))
    expected = -log_p[stream[1:]].double()  # (199,)
    for context, stride, batch in [(2, 1, 1), (8, 4, 3), (50, 7, 2), (300, 150, 8)]:
        score = score_stream(constant_lm(log_p), stream, context, stride, batch)
        torch.testing.assert_close(score.nll, expected, atol=1e-6, rtol=0)


def test_batch_size_changes_nothing_without_memory(tiny_model) -> None:
    model = tiny_model(use_memory=False)
    stream = torch.randint(0, 97, (120,))
    one = score_stream(model, stream, 24, 8, 1)
    many = score_stream(model, stream, 24, 8, 5)
    torch.testing.assert_close(one.nll, many.nll, atol=1e-5, rtol=1e-5)
    assert one.spike_stats is not None and one.spike_stats[0].num_steps == many.spike_stats[0].num_steps


def test_scores_match_a_plain_full_forward(tiny_model) -> None:
    """A window holding the whole stream gives the model's own next-token losses."""
    model = tiny_model(use_memory=False)
    stream = torch.randint(0, 97, (40,))
    score = score_stream(model, stream, 64, 32, 1)
    logits = model(stream[None]).logits[0, :-1]  # (39, V)
    expected = torch.nn.functional.cross_entropy(logits, stream[1:], reduction="none").double()
    torch.testing.assert_close(score.nll, expected, atol=1e-5, rtol=1e-5)


def test_truncate_to_whole_lines(bert_tokenizer, wikitext_valid: str) -> None:
    text = "".join(wikitext_valid.splitlines(keepends=True)[:40])
    cut, count = truncate_to_lines(text, bert_tokenizer, 300)
    assert text.startswith(cut) and cut.endswith("\n") and 0 < count <= 300
    assert count == len(encode_text(cut, bert_tokenizer))
    next_line = text[len(cut) :].splitlines(keepends=True)[0]
    assert count + len(encode_text(next_line, bert_tokenizer)) > 300  # the longest prefix of whole lines
    prepared = prepare_text(text, bert_tokenizer, max_tokens=300)
    assert prepared.truncated and prepared.num_tokens == count
    assert (prepared.words, prepared.bytes) == (count_words(cut), count_bytes(cut))


def test_tokenizer_larger_than_the_model_is_an_error(bert_tokenizer) -> None:
    from s3cmn.data.errors import DataError

    with pytest.raises(DataError, match="does not belong to this model"):
        prepare_text("hello world, the weather\n", bert_tokenizer, vocab_size=100)


def test_nll_float64_matches_float64_cross_entropy() -> None:
    from s3cmn.evaluation.perplexity import nll_float64

    logits = torch.randn(1500, 300) * 4  # more rows than one chunk
    targets = torch.randint(0, 300, (1500,))
    expected = torch.nn.functional.cross_entropy(logits.double(), targets, reduction="none")
    torch.testing.assert_close(nll_float64(logits, targets), expected, atol=1e-5, rtol=1e-6)
    uniform = nll_float64(torch.zeros(3, 30522), torch.tensor([0, 5, 30521]))
    assert uniform.tolist() == [math.log(30522)] * 3  # exactly

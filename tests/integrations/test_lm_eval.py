"""lm-evaluation-harness on a path-loaded checkpoint: its scores equal the model's own and s3cmn-eval's.

Tolerance: 1e-4 nats per continuation, 1e-3 nats per document total (fp32 logits; the harness batches and
right-pads, s3cmn scores one window at a time in float64 sums).
"""

from __future__ import annotations

import math

import pytest
import torch

lm_eval = pytest.importorskip("lm_eval", reason="the lmeval extra (pip install -e '.[lmeval]') is not installed")

from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.models.huggingface import HFLM  # noqa: E402

from s3cmn import S3CMNForCausalLM  # noqa: E402
from s3cmn.data import load_tokenizer  # noqa: E402
from s3cmn.evaluation.perplexity import prepare_text, score_stream  # noqa: E402

TRAINED_LENGTH = 32  # conftest.TRAINED_LENGTH
CONTEXT = "the game was released in"
CONTINUATIONS = [" japan", " 2010", " ."]


@pytest.fixture(scope="module")
def harness(checkpoint) -> HFLM:
    return HFLM(pretrained=str(checkpoint), batch_size=4, device="cpu")


def model_logprob(model: S3CMNForCausalLM, context_ids: list[int], continuation_ids: list[int]) -> float:
    """log p(continuation | context) from one forward of the model."""
    ids = torch.tensor([context_ids + continuation_ids])  # (1, T)
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0].double(), -1)  # (T, V)
    n = len(context_ids)
    return sum(float(logp[n - 1 + i, t]) for i, t in enumerate(continuation_ids))


def test_hflm_loads_a_checkpoint_path(harness: HFLM, checkpoint) -> None:
    assert isinstance(harness.model, S3CMNForCausalLM)
    assert harness.max_length == TRAINED_LENGTH  # trainer_state.json, not max_position_embeddings (512)
    ids = harness.tok_encode(" japan")
    assert ids == [harness.tokenizer.convert_tokens_to_ids("japan")]  # no [CLS] / [SEP] around the piece
    assert harness.prefix_token_id == harness.tokenizer.eos_token_id  # no bos: the stream starts at eos


def test_loglikelihood_equals_the_models_log_probabilities(harness: HFLM, checkpoint) -> None:
    requests = [Instance("loglikelihood", {}, (CONTEXT, c), i) for i, c in enumerate(CONTINUATIONS)]
    scores = [ll for ll, _ in harness.loglikelihood(requests)]
    model = S3CMNForCausalLM.from_pretrained(str(checkpoint))
    tokenizer = load_tokenizer(str(checkpoint))
    context = tokenizer(CONTEXT, add_special_tokens=False).input_ids
    expected = [model_logprob(model, context, tokenizer(c, add_special_tokens=False).input_ids)
                for c in CONTINUATIONS]
    assert scores == pytest.approx(expected, abs=1e-4)
    assert len({round(s, 3) for s in scores}) == 3  # not one shared special-token score


def _text_of_tokens(tokenizer, words: list[str], count: int) -> str:
    """Whole words of ``words`` joined until the text has exactly ``count`` tokens."""
    text, n = "", 0
    for word in words:
        candidate = f"{text} {word}" if text else word
        m = len(tokenizer(candidate, add_special_tokens=False).input_ids)
        if m <= count:
            text, n = candidate, m
        if n == count:
            return text
    raise AssertionError(f"could not build a text of {count} tokens")


def test_loglikelihood_rolling_equals_s3cmn_eval(harness: HFLM, checkpoint, wikitext_valid: str, tmp_path) -> None:
    tokenizer = load_tokenizer(str(checkpoint))
    words = wikitext_valid.split()
    L = TRAINED_LENGTH
    # One window, exactly one, two and three full windows: where the harness's disjoint windows and
    # s3cmn's (context L + 1, stride L) windows are the same windows.
    docs = [_text_of_tokens(tokenizer, words[i * 400 :], n) for i, n in enumerate([20, L, 2 * L, 3 * L])]
    requests = [Instance("loglikelihood_rolling", {}, (d,), i) for i, d in enumerate(docs)]
    rolling = harness.loglikelihood_rolling(requests)
    model = S3CMNForCausalLM.from_pretrained(str(checkpoint))
    for doc, harness_ll in zip(docs, rolling, strict=True):
        text = prepare_text(doc, tokenizer, cache_dir=str(tmp_path))
        score = score_stream(model, text.stream, context_length=L + 1, stride=L, batch_size=2, use_memory=True)
        assert -harness_ll == pytest.approx(score.nll_sum, abs=1e-3)
    assert len({round(ll, 2) for ll in rolling}) == len(docs)


def test_wikitext_local_task_runs_offline(harness: HFLM, shared_data) -> None:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager
    from lm_eval.tasks.wikitext.preprocess_wikitext import wikitext_detokenizer

    from s3cmn.integrations import TASKS_DIR

    data_dir = shared_data / "wikitext-2-raw"
    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False,
                          metadata={"data_dir": str(data_dir), "max_documents": 2})
    results = simple_evaluate(model=harness, tasks=["wikitext_local"], task_manager=manager, bootstrap_iters=0,
                              log_samples=False)
    word_ppl = results["results"]["wikitext_local"]["word_perplexity,none"]
    # The same two documents scored directly through the harness's rolling loglikelihood.
    from s3cmn.integrations.tasks.wikitext_local.wikitext_local import split_articles

    pages = split_articles((data_dir / "wiki.test.raw").read_text(encoding="utf-8"))[:2]
    lls = harness.loglikelihood_rolling(
        [Instance("loglikelihood_rolling", {}, (wikitext_detokenizer({"page": p}),), i) for i, p in enumerate(pages)]
    )
    import re

    words = sum(len(re.split(r"\s+", p)) for p in pages)
    assert word_ppl == pytest.approx(math.exp(-sum(lls) / words), rel=1e-6)


PROMPTS = ["the game was released in", "robert boulter is an english film , television and theatre actor", "du fu"]


def _generate(lm, prompts: list[str]) -> list[str]:
    args = {"until": ["\n\n"], "max_gen_toks": 6, "do_sample": False}
    return lm.generate_until([Instance("generate_until", {}, (p, dict(args)), i) for i, p in enumerate(prompts)])


def test_generate_until_batches_prompts_of_different_lengths(checkpoint) -> None:
    from s3cmn.integrations.lm_eval import S3CMNLM

    batched = _generate(S3CMNLM(pretrained=str(checkpoint), batch_size=3, device="cpu"), PROMPTS)
    one_by_one = _generate(S3CMNLM(pretrained=str(checkpoint), batch_size=1, device="cpu"), PROMPTS)
    assert batched == one_by_one
    assert all(text.strip() for text in batched)


def test_plain_hflm_refuses_a_padded_generation_batch_clearly(harness: HFLM) -> None:
    with pytest.raises(ValueError, match="left-padded batch"):
        _generate(harness, PROMPTS)

"""An ``evaluate`` metric: token perplexity, word perplexity and bits per byte from per-token NLLs and the texts.

The Hugging Face hub's ``perplexity`` metric runs a model itself and needs the network; this one takes what a
model already computed, and works offline as a local module::

    import evaluate
    metric = evaluate.load("/path/to/s3cmn/evaluation/metric_perplexity.py")
    metric.compute(predictions=[[2.1, 0.4, ...], ...], references=["the scored text", ...])
    metric.compute(predictions=log_probs, references=texts, log_probs=True)   # log-probabilities instead

``predictions``: one list per text of the per-token negative log-likelihoods in nats (or, with
``log_probs=True``, the log-probabilities); ``references``: the texts those tokens encode. Totals over all
texts, as lm-evaluation-harness aggregates its ``wikitext`` task (see :mod:`s3cmn.evaluation.perplexity`):
perplexity = exp(ΣNLL / Σtokens), word_perplexity = exp(ΣNLL / Σwords), byte_perplexity = exp(ΣNLL / Σbytes),
bits_per_byte = ΣNLL / (ln 2 · Σbytes); ``perplexities``: each text's token perplexity.
"""

import math

import datasets
import evaluate

from s3cmn.evaluation.perplexity import count_bytes, count_words, nll_summary

_CITATION = """\
@misc{eval-harness,
  author = {Gao, Leo and others},
  title = {A framework for few-shot language model evaluation},
  publisher = {Zenodo},
  year = {2023},
  url = {https://github.com/EleutherAI/lm-evaluation-harness}
}
"""

_DESCRIPTION = __doc__

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of list of float): per text, the negative log-likelihood (nats) of each scored token,
        or its log-probability with log_probs=True.
    references (list of str): the texts; words (whitespace-separated) and UTF-8 bytes are counted on them.
    log_probs (bool): predictions are log-probabilities (NLL = -value). Default False.
Returns:
    perplexity, word_perplexity, byte_perplexity, bits_per_byte (over all texts), perplexities (one per text),
    nll_sum, tokens, words, bytes.
Examples:
    >>> metric = evaluate.load("metric_perplexity.py")
    >>> round(metric.compute(predictions=[[math.log(4.0)] * 3], references=["a b"])["perplexity"], 6)
    4.0
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Perplexity(evaluate.Metric):
    """Perplexity from per-token NLLs (module docstring)."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            module_type="metric",
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("float64")), "references": datasets.Value("string")}
            ),
            reference_urls=[
                "https://huggingface.co/docs/transformers/perplexity",
                "https://github.com/EleutherAI/lm-evaluation-harness/blob/main/lm_eval/tasks/wikitext/wikitext.yaml",
            ],
        )

    def _compute(self, predictions: list, references: list, log_probs: bool = False) -> dict:
        sign = -1.0 if log_probs else 1.0
        per_text, total, tokens, words, nbytes = [], 0.0, 0, 0, 0
        for values, text in zip(predictions, references, strict=True):
            nll = sign * math.fsum(values)
            if not values:
                raise ValueError("every text needs at least one scored token")
            per_text.append(math.exp(nll / len(values)))
            total, tokens = total + nll, tokens + len(values)
            words, nbytes = words + count_words(text), nbytes + count_bytes(text)
        summary = nll_summary(total, tokens, words, nbytes)
        return {
            "perplexity": summary["token_perplexity"],
            "word_perplexity": summary["word_perplexity"],
            "byte_perplexity": summary["byte_perplexity"],
            "bits_per_byte": summary["bits_per_byte"],
            "perplexities": per_text,
            "nll_sum": total,
            "tokens": tokens,
            "words": words,
            "bytes": nbytes,
        }

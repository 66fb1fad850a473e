"""The ``lm-eval`` protocol of s3cmn-eval: WikiText scored exactly as lm-evaluation-harness's ``wikitext`` task.

The default protocol, ``sliding`` (:mod:`s3cmn.evaluation.perplexity`), scores the raw split as one stream with
overlapping windows. This one reproduces the harness (``lm_eval/tasks/wikitext/wikitext.yaml``, run through
``HFLM.loglikelihood_rolling``), using the harness's own functions wherever they exist:

1. **documents**: one article a document, the rows of ``EleutherAI/wikitext_document_level``
   (:func:`s3cmn.data.wikitext.split_articles`, also the ``wikitext_local`` task's split);
2. **text scored**: ``wikitext_detokenizer(doc)`` (``" @-@ "`` -> ``"-"``, ``" , "`` -> ``", "``, ...), tokenised
   without special tokens;
3. **windows**: each document alone, ``get_rolling_token_windows(ids, prefix, max_length, context_len=1)`` made
   disjoint (``make_disjoint_window``): the first window starts at the prefix token (the tokenizer's bos, else its
   eos, as ``HFLM.prefix_token_id``), every later one predicts up to ``max_length`` new tokens with only the
   window's own tokens as context, and nothing is carried from one document to the next;
4. **metrics**: ``process_results`` weights each document's log-likelihood by its words
   ``len(re.split(r"\\s+", page))`` and bytes ``len(page.encode())`` -- counted on the page *before*
   detokenisation -- and ``weighted_perplexity`` / ``bits_per_byte`` aggregate them over the documents.

The model is called as ``HFLM._model_call`` calls it: ``model(ids)``, with the model's defaults (the saved
memory is read, nothing is written), asking only for the logits of the predicted positions.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from s3cmn.ops.nll import model_device, nll_float64

__all__ = ["DocumentScores", "evaluate_lm_eval_protocol", "harness_functions", "harness_max_length", "lm_eval_metrics",
           "render_markdown", "score_documents", "wikitext_documents"]

logger = logging.getLogger(__name__)

PROTOCOL = "lm-eval"


def harness_functions() -> dict[str, Any]:
    """The lm-eval functions this protocol calls; an ``ImportError`` that says what to install without it."""
    try:
        from lm_eval.api.metrics import bits_per_byte, weighted_perplexity
        from lm_eval.models.utils import resolve_max_length
        from lm_eval.tasks.wikitext.preprocess_wikitext import process_results, wikitext_detokenizer
        from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
    except ImportError as err:
        raise ImportError(f"--protocol lm-eval needs lm-evaluation-harness ({err}): pip install 's3cmn[lmeval]'") \
            from err  # fmt: skip
    return {"detokenize": wikitext_detokenizer, "process_results": process_results,
            "rolling_windows": get_rolling_token_windows, "disjoint": make_disjoint_window,
            "weighted_perplexity": weighted_perplexity, "bits_per_byte": bits_per_byte,
            "resolve_max_length": resolve_max_length}  # fmt: skip


def wikitext_documents(raw: str, max_documents: int = 0) -> list[str]:
    """The articles of a WikiText raw split as the harness's dataset rows; the first ``max_documents`` if > 0."""
    from s3cmn.data.wikitext import split_articles  # also the wikitext_local task's split

    pages = split_articles(raw)
    return pages[:max_documents] if max_documents > 0 else pages


def harness_max_length(model: Any, tokenizer: Any) -> int:
    """The ``max_length`` ``HFLM`` gives this model when none is passed (``n_positions``: the trained length)."""
    return harness_functions()["resolve_max_length"](model.config, tokenizer, default=2048)


def harness_prefix_token_id(tokenizer: Any) -> int:
    """``HFLM.prefix_token_id``: the bos, else the eos."""
    token_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if token_id is None:
        raise ValueError(f"tokenizer {tokenizer.name_or_path!r} has neither a bos nor an eos token")
    return int(token_id)


@dataclass
class DocumentScores:
    """Per document: the log-likelihood (nats, summed over its tokens) and its token count; the windows run."""

    logliks: list[float]
    tokens: list[int]
    windows: int
    seconds: float


@torch.no_grad()
def score_documents(model: torch.nn.Module, tokenizer: Any, pages: list[str], max_length: int, batch_size: int = 8,
                    progress: bool = False, detokenize: bool = True) -> DocumentScores:
    """Each detokenised page scored alone in the harness's disjoint rolling windows (module docstring).

    ``detokenize`` False scores the raw page instead (not the harness: it shows what detokenising changes).

    Windows of the same length are batched, ``batch_size`` at a time (a causal model's scores do not depend on the
    batch; the logits kept are (batch_size, max_length, V) floats); only the predicted positions' logits are
    computed, and their log-softmax is taken in float64 (the harness: in the logits' dtype).
    """
    from tqdm.auto import tqdm

    h = harness_functions()
    prefix = harness_prefix_token_id(tokenizer)
    # 1. every page's windows: (page index, context + continuation tokens, number of predicted tokens)
    jobs: list[tuple[int, list[int], int]] = []
    tokens = []
    for i, page in enumerate(pages):
        ids = tokenizer.encode(h["detokenize"]({"page": page}) if detokenize else page, add_special_tokens=False)
        tokens.append(len(ids))
        for context, continuation in map(h["disjoint"], h["rolling_windows"](ids, prefix, max_length, 1)):
            jobs.append((i, context + continuation, len(continuation)))
    # 2. windows grouped by length, up to batch_size a forward; the input is the window less its last token
    jobs.sort(key=lambda job: -len(job[1]))
    logliks = [0.0] * len(pages)
    device = model_device(model)
    start = time.perf_counter()
    bar = tqdm(total=sum(tokens), desc="lm-eval protocol", unit="tok", disable=not progress, dynamic_ncols=True)
    k = 0
    while k < len(jobs):
        batch = [jobs[k]]
        while (k + len(batch) < len(jobs) and len(batch) < batch_size
               and len(jobs[k + len(batch)][1]) == len(jobs[k][1])):
            batch.append(jobs[k + len(batch)])
        k += len(batch)
        window = torch.tensor([w for _, w, _ in batch], device=device)  # (B, T + 1)
        keep = max(n for _, _, n in batch)
        logits = model(window[:, :-1], logits_to_keep=keep).logits  # (B, keep, V): the last positions' logits
        for row, (page, _, n) in enumerate(batch):
            nll = nll_float64(logits[row, -n:], window[row, -n:])  # (n,) the continuation's tokens
            logliks[page] -= float(nll.sum())
        bar.update(sum(n for _, _, n in batch))
    bar.close()
    return DocumentScores(logliks, tokens, len(jobs), time.perf_counter() - start)


def lm_eval_metrics(pages: list[str], logliks: list[float]) -> dict[str, Any]:
    """word_perplexity, byte_perplexity and bits_per_byte as the harness aggregates them, and the counts."""
    h = harness_functions()
    items = [h["process_results"]({"page": page}, [ll]) for page, ll in zip(pages, logliks, strict=True)]
    words = [it["word_perplexity"] for it in items]  # (loglik, words) per document
    nbytes = [it["bits_per_byte"] for it in items]  # (loglik, bytes)
    nll = -math.fsum(logliks)
    return {
        "nll_sum": nll,
        "documents": len(pages),
        "words": sum(w for _, w in words),
        "bytes": sum(b for _, b in nbytes),
        "word_perplexity": h["weighted_perplexity"](words),
        "byte_perplexity": h["weighted_perplexity"](nbytes),
        "bits_per_byte": h["bits_per_byte"](nbytes),
    }


# --------------------------------------------------------------------------------------------------
# s3cmn-eval --protocol lm-eval


def evaluate_lm_eval_protocol(checkpoint: str | os.PathLike, data: Any, evaluation: Any, *, max_documents: int = 0,
                              device: str | None = None, progress: bool = False) -> dict[str, Any]:
    """s3cmn-eval's report for ``--protocol lm-eval``: the split's documents scored as the harness scores them.

    ``evaluation.context_length`` > 0 is the harness's ``max_length`` (0: the one ``HFLM`` resolves, the trained
    sequence length); ``evaluation.eval_batch_size`` windows a forward; ``max_documents`` > 0 scores the first N
    documents, as the harness's ``--limit N``.
    """
    from s3cmn.data import load_text_splits
    from s3cmn.evaluation.errors import EvaluationError
    from s3cmn.evaluation.report import environment, tokenizer_info
    from s3cmn.evaluation.run import load_eval_tokenizer, report_header, selection_note, text_source
    from s3cmn.modeling.loading import load_model

    if evaluation.stride or evaluation.max_eval_tokens:
        raise EvaluationError("--protocol lm-eval scores whole documents in disjoint windows: stride and "
                              "max_eval_tokens do not apply (use --max-documents N for a subset)")  # fmt: skip
    started = time.time()
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    folder = Path(checkpoint).expanduser()
    model = load_model(folder).to(dev).eval()
    tokenizer, tokenizer_source = load_eval_tokenizer(folder, data)
    if evaluation.context_length:
        max_length, source = evaluation.context_length, "context_length"
    else:
        max_length, source = harness_max_length(model, tokenizer), "HFLM default (lm_eval resolve_max_length)"
    raw = load_text_splits(replace(data, detokenize=False), (evaluation.split,))[evaluation.split]  # the harness
    pages = wikitext_documents(raw, max_documents)  # detokenises each page itself and counts the raw page
    scores = score_documents(model, tokenizer, pages, max_length, evaluation.eval_batch_size, progress)
    metrics = lm_eval_metrics(pages, scores.logliks)
    tokens = sum(scores.tokens)
    metrics["tokens"] = tokens
    metrics["token_perplexity"] = math.exp(metrics["nll_sum"] / tokens)
    notes = [selection_note(folder),
             "protocol lm-eval: lm-evaluation-harness's wikitext task (document-level, detokenised text, disjoint "
             "rolling windows; words and bytes counted on the page before detokenisation): the numbers to set "
             "beside published lm-eval wikitext figures"]  # fmt: skip
    if len(model.memory_bank) > 0:
        notes.append("memory: the saved memory is read as loaded (the model's defaults, as the harness calls it); "
                     "nothing is written")  # fmt: skip
    return {
        **report_header(PROTOCOL, started, folder, model.config.settings_dict()),
        "settings": {"protocol": PROTOCOL, "max_length": max_length, "max_length_source": source,
                     "batch_size": evaluation.eval_batch_size, "max_documents": max_documents, "device": str(dev),
                     "prefix_token_id": harness_prefix_token_id(tokenizer), "evaluation": evaluation.to_dict(),
                     "data": data.to_dict()},  # fmt: skip
        "data": {"split": evaluation.split, "source": text_source(data, evaluation.split),
                 "split_text_sha256": hashlib.sha256(raw.encode("utf-8")).hexdigest(),
                 "documents": len(pages), "words": metrics["words"], "bytes": metrics["bytes"], "tokens": tokens},
        "tokenizer": tokenizer_info(tokenizer, tokenizer_source),
        "runs": [{"precision": "fp32", "memory": "saved, read only" if len(model.memory_bank) else "none",
                  "perplexity": metrics, "windows": scores.windows, "seconds": scores.seconds,
                  "scored_tokens_per_s": tokens / scores.seconds if scores.seconds > 0 else None}],
        "per_document": [{"loglikelihood": ll, "tokens": n} for ll, n in zip(scores.logliks, scores.tokens,
                                                                            strict=True)],
        "notes": notes,
        "environment": environment(dev),
    }


def render_markdown(report: dict[str, Any]) -> str:
    """The summary of an ``lm-eval`` protocol report."""
    s, d, run = report["settings"], report["data"], report["runs"][0]
    p = run["perplexity"]
    source = d["source"].get("path") or f"{d['source'].get('dataset')}/{d['source'].get('config')}"
    out = [
        "# s3cmn evaluation", "",
        f"- checkpoint: `{report['checkpoint']['path']}`",
        f"- protocol: **lm-eval** (lm-evaluation-harness `wikitext`: documents scored alone, detokenised, disjoint "
        f"windows of max_length {s['max_length']} ({s['max_length_source']}))",
        f"- text: {d['split']} split, `{source}`: {d['documents']} documents, {d['tokens']:,} tokens, "
        f"{d['words']:,} words, {d['bytes']:,} bytes (words and bytes of the pages before detokenisation)",
        f"- device: {s['device']}; created {report['created']}", "",
        "## Perplexity", "",
        "| protocol | memory | token ppl | word ppl | byte ppl | bits/byte | scored tokens/s |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
        f"| lm-eval | {run['memory']} | {p['token_perplexity']:.3f} | {p['word_perplexity']:.3f} | "
        f"{p['byte_perplexity']:.4f} | {p['bits_per_byte']:.4f} | {run['scored_tokens_per_s'] or 0:.0f} |",
    ]  # fmt: skip
    out += ["", "## Notes", ""] + [f"- {n}" for n in report["notes"]]
    return "\n".join(out) + "\n"

"""Sliding-window perplexity of a token stream, and the tokenizer-independent numbers.

**Windows** (Hugging Face, "Perplexity of fixed-length models", https://huggingface.co/docs/transformers/perplexity):
windows of ``context_length`` tokens start every ``stride`` tokens; each window scores only the tokens no
earlier window scored, so every token is scored exactly once, with ``context_length - stride`` tokens of left
context at least (all of them, up to the window start, in the first window). ``stride`` must be below
``context_length``: the first token of a window has no prediction inside that window.

**Stream**: ``[eos] + ids(text)`` (the tokenizer's eos, else its bos): the prefix is never scored, it only lets
the first real token be scored, so the number of scored tokens equals the number of text tokens.

**Normalisations**, as lm-evaluation-harness defines them for its ``wikitext`` task
(``lm_eval/tasks/wikitext/wikitext.yaml``: metrics ``word_perplexity``, ``byte_perplexity``, ``bits_per_byte``;
``preprocess_wikitext.process_results`` gives each document the weights (loglikelihood, words) and
(loglikelihood, bytes); ``lm_eval/api/metrics.py`` aggregates ``weighted_perplexity = exp(-Σ loglik / Σ weight)``
and ``bits_per_byte = -Σ loglik / Σ bytes / ln 2``), with NLL = -loglik summed over all scored tokens::

    token_perplexity = exp(NLL / tokens)
    word_perplexity  = exp(NLL / words)      words: whitespace-separated words of the raw text
    byte_perplexity  = exp(NLL / bytes)      bytes: UTF-8 bytes of the raw text
    bits_per_byte    = NLL / (ln 2 · bytes)

How this (``s3cmn-eval``'s default protocol, ``sliding``) differs from the harness, which ``s3cmn-eval --protocol
lm-eval`` reproduces (:mod:`s3cmn.evaluation.lm_eval_protocol`; docs/evaluation.md measures the difference):

- the harness scores document by document (``EleutherAI/wikitext_document_level``, one article a document), each
  from the EOT token with no context from the article before, in disjoint windows of the model's length
  (``loglikelihood_rolling``); here the whole split is one stream scored with overlapping windows, so an
  article's first tokens see the end of the previous one, and every token has ``context - stride`` tokens of
  context at least;
- the harness scores the *detokenised* page (``wikitext_detokenizer``: ``" @-@ "`` -> ``"-"``, ...) but counts
  words and bytes on the original page; here the raw text is scored as it is (the text the models are trained
  on) and words and bytes are counted on that same raw text;
- the harness counts words as ``len(re.split(r"\\s+", page))``, which also counts an empty string for a leading
  and a trailing whitespace (at most 2 words a document); here ``len(text.split())``.

**max_eval_tokens**: the raw text is first cut to its longest prefix of whole lines with at most that many
tokens, and the cut text is tokenised and counted (words, bytes), so the normalisers describe exactly the
text whose tokens are scored.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from s3cmn.data.windows import sliding_windows, window_batches
from s3cmn.ops.nll import model_device, nll_float64

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

_LINES_PER_BATCH = 512


# --------------------------------------------------------------------------------------------------
# counts and the summary numbers


def count_words(text: str) -> int:
    """Whitespace-separated words of ``text`` (``len(text.split())``)."""
    return len(text.split())


def count_bytes(text: str) -> int:
    """UTF-8 bytes of ``text``."""
    return len(text.encode("utf-8"))


def nll_summary(nll_sum: float, num_tokens: int, num_words: int, num_bytes: int) -> dict[str, float]:
    """Token / word / byte perplexity and bits per byte of a total NLL (nats) over the given counts."""
    if num_tokens <= 0 or num_words <= 0 or num_bytes <= 0:
        raise ValueError(f"counts must be positive: tokens={num_tokens}, words={num_words}, bytes={num_bytes}")

    def ppl(per: float) -> float:
        return math.exp(per) if per < 700 else math.inf  # exp overflows float64 near 709

    return {
        "nll_sum": nll_sum,
        "tokens": num_tokens,
        "words": num_words,
        "bytes": num_bytes,
        "nll_per_token": nll_sum / num_tokens,
        "token_perplexity": ppl(nll_sum / num_tokens),
        "word_perplexity": ppl(nll_sum / num_words),
        "byte_perplexity": ppl(nll_sum / num_bytes),
        "bits_per_byte": nll_sum / (math.log(2) * num_bytes),
    }


# --------------------------------------------------------------------------------------------------
# the text and its token stream


@dataclass
class EvalText:
    """The scored text and its stream: ``stream`` (N + 1,) = [prefix] + the N text tokens."""

    text: str
    stream: Tensor
    prefix_token_id: int
    words: int
    bytes: int
    lines: int
    truncated: bool

    @property
    def num_tokens(self) -> int:
        return self.stream.numel() - 1


def prefix_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The token put before the text: the tokenizer's eos, else its bos."""
    for token_id in (tokenizer.eos_token_id, tokenizer.bos_token_id):
        if token_id is not None:
            return int(token_id)
    raise ValueError(f"tokenizer {tokenizer.name_or_path!r} has neither an eos nor a bos token to start the stream")


def truncate_to_lines(text: str, tokenizer: PreTrainedTokenizerBase, max_tokens: int) -> tuple[str, int]:
    """The longest prefix of whole lines of ``text`` with at most ``max_tokens`` tokens, and its token count.

    Lines are tokenised one by one, as :func:`s3cmn.data.encode_text` does, so the count is that of the cut text.
    """
    lines = text.splitlines(keepends=True)
    kept, total = 0, 0
    for start in range(0, len(lines), _LINES_PER_BATCH):
        batch = lines[start : start + _LINES_PER_BATCH]
        counts = [len(ids) for ids in tokenizer(batch, add_special_tokens=False, return_attention_mask=False,
                                                 verbose=False)["input_ids"]]  # fmt: skip
        for n in counts:
            if total + n > max_tokens:
                return "".join(lines[:kept]), total
            kept, total = kept + 1, total + n
    return text, total


def prepare_text(
    text: str,
    tokenizer: PreTrainedTokenizerBase,
    max_tokens: int = 0,
    cache_dir: str | None = None,
    vocab_size: int | None = None,
) -> EvalText:
    """The stream ``[eos] + ids(text)`` and the text's counts; ``max_tokens`` > 0 first cuts the text to whole
    lines (module docstring). Ids at or above ``vocab_size`` (a tokenizer that does not fit the model) raise."""
    from s3cmn.data import encode_text, tokenize_cached
    from s3cmn.data.errors import DataError

    truncated = False
    if max_tokens > 0:
        cut, count = truncate_to_lines(text, tokenizer, max_tokens)
        if count == 0:
            raise DataError(f"max_eval_tokens = {max_tokens} is fewer than the tokens of the text's first "
                            "non-empty line: raise it")  # fmt: skip
        truncated = cut != text
        text = cut
        ids = torch.from_numpy(encode_text(text, tokenizer)) if truncated else tokenize_cached(text, tokenizer,
                                                                                              cache_dir)
    else:
        ids = tokenize_cached(text, tokenizer, cache_dir)
    if ids.numel() == 0:
        raise DataError("the text to score has no tokens")
    if vocab_size is not None and int(ids.max()) >= vocab_size:
        raise DataError(f"the tokenizer produced id {int(ids.max())}, but the model's vocabulary has {vocab_size} "
                        "tokens: the tokenizer does not belong to this model")  # fmt: skip
    prefix = prefix_token_id(tokenizer)
    stream = torch.cat([torch.tensor([prefix], dtype=torch.long), ids.long()])  # (N + 1,)
    return EvalText(text, stream, prefix, count_words(text), count_bytes(text), len(text.splitlines()), truncated)


# --------------------------------------------------------------------------------------------------
# windows


# --------------------------------------------------------------------------------------------------
# scoring


@dataclass
class StreamScore:
    """Per-token NLL of a scored stream and what the forwards reported.

    ``nll`` (N,) float64 nats, the NLL of stream token t+1 at index t; ``tokens_processed``: positions run
    through the model (overlapping context counted each time); ``spike_stats``: one merged ``SpikeStats`` per
    spiking layer; ``memory_reads``: per memory layer, the per-forward ``MemoryReadStats`` with their positions;
    ``hit_rate_trace``: (targets scored so far, mean memory hit rate of that forward).
    """

    nll: Tensor
    windows: int
    forwards: int
    tokens_processed: int
    seconds: float
    spike_stats: list[Any] | None = None
    memory_reads: list[list[tuple[Any, int]]] | None = None
    hit_rate_trace: list[tuple[int, float]] = field(default_factory=list)

    @property
    def nll_sum(self) -> float:
        return float(self.nll.sum())


@torch.no_grad()
def score_stream(
    model: torch.nn.Module,
    stream: Tensor,
    context_length: int,
    stride: int,
    batch_size: int = 8,
    *,
    use_memory: bool = False,
    write_memory: bool = False,
    progress: bool = False,
    desc: str = "scoring",
) -> StreamScore:
    """Score every token of ``stream`` (N + 1,) once with sliding windows (module docstring).

    ``model(ids (B, T), use_cache=False, use_memory=..., write_memory=..., logits_to_keep=k)`` must return an
    object with ``.logits`` (B, T or k, V). With ``write_memory`` the forward that scores a batch of windows
    writes their states after it, so a memory read only ever sees windows scored in earlier forwards: the score
    of token t never depends on a token after t (it does depend on ``batch_size``, which sets how soon writes
    become visible).
    """
    from tqdm.auto import tqdm

    device = model_device(model)
    windows = sliding_windows(stream.numel(), context_length, stride)
    batches = window_batches(windows, batch_size)
    nll = torch.full((stream.numel() - 1,), float("nan"), dtype=torch.float64)
    seen = torch.zeros(stream.numel() - 1, dtype=torch.int32)
    spikes: list[Any] | None = None
    reads: list[list[tuple[Any, int]]] | None = None
    trace: list[tuple[int, float]] = []
    processed = 0
    start = time.perf_counter()
    bar = tqdm(total=stream.numel() - 1, desc=desc, unit="tok", disable=not progress, dynamic_ncols=True)
    for batch in batches:
        ids = torch.stack([stream[w.begin : w.end] for w in batch]).to(device)  # (B, T)
        B, T = ids.shape
        n = batch[0].num_scored
        out = model(ids, use_cache=False, use_memory=use_memory, write_memory=write_memory, logits_to_keep=n + 1)
        logits = out.logits[:, -(n + 1) : -1]  # (B, n, V): the predictions of the last n tokens
        targets = ids[:, T - n :]  # (B, n)
        token_nll = nll_float64(logits.reshape(B * n, -1), targets.reshape(-1)).cpu()  # (B*n,)
        for row, w in enumerate(batch):
            span = slice(w.first_target - 1, w.end - 1)
            nll[span] = token_nll[row * n : (row + 1) * n]
            seen[span] += 1
        processed += B * T
        spike_stats = getattr(out, "spike_stats", None)  # the S3CMN output's statistics (absent on other models)
        if spike_stats:
            spikes = list(spike_stats) if spikes is None else [a.merge(b) for a, b in zip(spikes, spike_stats,
                                                                                           strict=True)]
        memory_stats = getattr(out, "memory_stats", None)
        if use_memory and memory_stats:
            reads = [[] for _ in memory_stats] if reads is None else reads
            for layer_reads, s in zip(reads, memory_stats, strict=True):
                layer_reads.append((s, B * T))
            trace.append((batch[-1].end - 1, sum(s.hit_rate for s in memory_stats) / len(memory_stats)))
        bar.update(B * n)
    bar.close()
    if not bool((seen == 1).all()):  # a contract of sliding_windows; cheap to check on every run
        raise RuntimeError(f"windows scored tokens {int((seen != 1).sum())} times other than once")
    return StreamScore(nll, len(windows), len(batches), processed, time.perf_counter() - start, spikes, reads, trace)

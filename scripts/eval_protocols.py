"""Why s3cmn-eval's two protocols disagree, measured: one checkpoint scored step by step, sliding to lm-eval.

Rows, all on the same split, the same loaded model (its saved memory read, nothing written) and one thread:

1. ``sliding`` (s3cmn-eval's default): the raw split as one stream, overlapping windows (context, stride);
2. documents alone, raw text: each article scored by itself in the harness's disjoint windows of ``max_length``;
3. ``lm-eval``: as 2, on the detokenised article (``wikitext_detokenizer``): the harness's number;
4. ``lm-eval`` with longer ``max_length`` (``--max-lengths``): a recurrent model's windows need not be the trained
   length; whether quality holds is what these rows show.

Word and byte counts are each protocol's own (sliding: ``len(text.split())`` of the split; lm-eval: the
harness's ``len(re.split(r"\\s+", page))`` of each page before detokenisation). Writes ``<out>/<stem>.json`` and
``.md``::

    OMP_NUM_THREADS=1 python scripts/eval_protocols.py /work/runs/tiny-dyn/best \\
        --data-dir ../shared/data/wikitext-2-raw --output-dir results/eval_protocols
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import torch

from s3cmn.evaluation.benchmarking import close_meta, run_meta, write_results
from s3cmn.evaluation.lm_eval_protocol import (
    harness_max_length,
    lm_eval_metrics,
    score_documents,
    wikitext_documents,
)
from s3cmn.evaluation.perplexity import nll_summary, prepare_text, score_stream


def _sliding(model: Any, tokenizer: Any, text: str, context: int, stride: int) -> dict[str, Any]:
    scored = prepare_text(text, tokenizer, vocab_size=model.config.vocab_size)
    start = time.perf_counter()
    score = score_stream(model, scored.stream, context, stride, batch_size=8, use_memory=True)
    summary = nll_summary(score.nll_sum, scored.num_tokens, scored.words, scored.bytes)
    return {**summary, "seconds": time.perf_counter() - start}


def _documents(model: Any, tokenizer: Any, pages: list[str], max_length: int, detokenize: bool) -> dict[str, Any]:
    batch = max(1, 1024 // max_length)  # at most 1024 positions of logits a forward
    scores = score_documents(model, tokenizer, pages, max_length, batch, detokenize=detokenize)
    metrics = lm_eval_metrics(pages, scores.logliks)
    tokens = sum(scores.tokens)
    return {**metrics, "tokens": tokens, "token_perplexity": float(torch.tensor(metrics["nll_sum"] / tokens).exp()),
            "windows": scores.windows, "seconds": scores.seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--data-dir", required=True, help="the folder of wiki.{valid,test}.raw")
    parser.add_argument("--split", choices=["test", "valid"], default="test")
    parser.add_argument("--max-documents", type=int, default=0, help="the first N articles only (0: all)")
    parser.add_argument("--context", type=int, default=128, help="sliding: context length")
    parser.add_argument("--stride", type=int, default=64, help="sliding: stride")
    parser.add_argument("--max-lengths", type=int, nargs="*", default=[512, 1024],
                        help="lm-eval rows beyond the trained length")
    parser.add_argument("--output-dir", default="results/eval_protocols")
    parser.add_argument("--stem", default="eval_protocols")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    start = time.time()
    meta = run_meta(1, False, argv)
    meta["cpu_capability"] = torch.backends.cpu.get_cpu_capability()

    from s3cmn.data import checkpoint_tokenizer
    from s3cmn.modeling.loading import load_model

    model = load_model(args.checkpoint).eval()
    tokenizer = checkpoint_tokenizer(Path(args.checkpoint))
    raw = (Path(args.data_dir) / f"wiki.{args.split}.raw").read_text(encoding="utf-8")
    pages = wikitext_documents(raw, args.max_documents)
    text = raw if not args.max_documents else " \n" + "\n".join(pages) + "\n"
    trained = harness_max_length(model, tokenizer)
    rows = []

    def add(name: str, protocol: str, window: str, result: dict[str, Any]) -> None:
        rows.append({"row": name, "protocol": protocol, "window": window, **result})
        print(f"{name:<44} word ppl {result['word_perplexity']:>10.1f}  bits/byte {result['bits_per_byte']:.4f}  "
              f"({result['seconds']:.0f} s)", flush=True)

    add("1. sliding (s3cmn-eval default)", "sliding", f"context {args.context}, stride {args.stride}",
        _sliding(model, tokenizer, text, args.context, args.stride))
    add("2. documents alone, raw text", "documents, raw", f"max_length {trained}",
        _documents(model, tokenizer, pages, trained, detokenize=False))
    add("3. lm-eval (harness wikitext)", "lm-eval", f"max_length {trained}",
        _documents(model, tokenizer, pages, trained, detokenize=True))
    for length in args.max_lengths:
        add(f"4. lm-eval, max_length {length}", "lm-eval", f"max_length {length}",
            _documents(model, tokenizer, pages, length, detokenize=True))
    close_meta(meta, start)
    result = {"meta": meta, "checkpoint": str(Path(args.checkpoint).resolve()), "split": args.split,
              "documents": len(pages), "trained_length": trained, "rows": rows}  # fmt: skip
    lines = [f"# Evaluation protocols on `{result['checkpoint']}` ({args.split}, {len(pages)} documents)", "",
             "| row | window | tokens | words | bytes | word ppl | bits/byte | s |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r['row']} | {r['window']} | {r['tokens']:,} | {r['words']:,} | {r['bytes']:,} | "
              f"{r['word_perplexity']:,.1f} | {r['bits_per_byte']:.4f} | {r['seconds']:.0f} |" for r in rows]
    lines += ["", f"`{meta['command']}`; commit {meta['commit'][:10]}, {meta['date']}, CPU capability "
              f"{meta['cpu_capability']}, 1 thread."]
    path = write_results(args.output_dir, args.stem, result, "\n".join(lines) + "\n")
    print(json.dumps({"written": str(path)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

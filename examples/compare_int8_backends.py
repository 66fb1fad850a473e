"""Compare the CPU int8 backends (torch.ao dynamic int8 vs torchao) on one checkpoint: size, speed, perplexity.

    python examples/compare_int8_backends.py runs/tiny10h/best \\
        --text ../shared/data/wikitext-2-raw/wiki.test.raw --tokens 16384

For each of fp32, ``backend="torch"`` and ``backend="torchao"`` (the same modules become int8: every Linear but
``dt_proj`` / ``filter_fn``; the embedding and tied head are the same weight-only int8 in both), it prints the
state-dict bytes, the scoring throughput (windows of 128, stride 64, batch 8), the generation ms/token (batch 1,
32 cached greedy steps after a 64-token prompt) and the token perplexity of the first ``--tokens`` tokens.
"""

from __future__ import annotations

import argparse
import copy
import io
import math
import time

import torch


def state_bytes(model: torch.nn.Module) -> int:
    """Bytes of ``torch.save(model.state_dict())`` (packed int8 weights included, tied weights once)."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell()


def generation_ms_per_token(model: torch.nn.Module, vocab: int, steps: int = 32) -> float:
    prompt = torch.randint(0, vocab, (1, 64), generator=torch.Generator().manual_seed(0))
    model.generate(prompt, max_new_tokens=4, do_sample=False)  # warm-up
    start = time.perf_counter()
    model.generate(prompt, max_new_tokens=steps, min_new_tokens=steps, do_sample=False)
    return (time.perf_counter() - start) / steps * 1e3


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--text", required=True, help="a raw text file, e.g. wiki.test.raw")
    parser.add_argument("--tokens", type=int, default=16384, help="tokens of the text to score")
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--backends", default="torch,torchao")
    args = parser.parse_args(argv)

    from s3cmn import S3CMNForCausalLM
    from s3cmn.data import load_tokenizer
    from s3cmn.evaluation.perplexity import prepare_text, score_stream
    from s3cmn.quantization import quantize_model

    base = S3CMNForCausalLM.from_pretrained(args.checkpoint)
    tokenizer = load_tokenizer(args.checkpoint)
    text = prepare_text(open(args.text, encoding="utf-8").read(), tokenizer, max_tokens=args.tokens)
    print(f"checkpoint {args.checkpoint}: {text.num_tokens} tokens scored, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print("| backend | state_dict MB | score tok/s | gen ms/token | token ppl | ppl change |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    fp32_ppl = None
    for backend in ["fp32", *args.backends.split(",")]:
        model = copy.deepcopy(base)
        if backend != "fp32":
            model, _ = quantize_model(model, backend=backend)
        score = score_stream(model, text.stream, args.context, args.context // 2, batch_size=8, use_memory=True)
        ppl = math.exp(score.nll_sum / text.num_tokens)
        fp32_ppl = ppl if fp32_ppl is None else fp32_ppl
        ms = generation_ms_per_token(model, base.config.vocab_size)
        print(f"| {backend} | {state_bytes(model) / 1e6:.1f} | {score.tokens_processed / score.seconds:,.0f} | "
              f"{ms:.2f} | {ppl:.2f} | {100 * (ppl / fp32_ppl - 1):+.2f}% |", flush=True)


if __name__ == "__main__":
    main()

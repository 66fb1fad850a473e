"""s3cmn-generate: sample text from a checkpoint (fp32 or 8-bit), streaming it as it is produced."""

from __future__ import annotations

import argparse
import logging
import sys

from s3cmn.quantization.backends import BACKENDS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="s3cmn-generate", allow_abbrev=False,
        description="Generate text from a checkpoint folder (save_pretrained or save_quantized, with its "
        "tokenizer). Prompts come from --prompt, or from stdin, one a line. The text is streamed to stdout; "
        "tokens/s goes to stderr.",
    )  # fmt: skip
    parser.add_argument("checkpoint", help="model folder (config.json + weights + tokenizer)")
    parser.add_argument("--prompt", action="append", help="a prompt (repeatable); default: read stdin, one a line")
    parser.add_argument("--max-new-tokens", type=int, default=50, help="tokens to generate per prompt (default 50)")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature; 0 = greedy (default 1)")
    parser.add_argument("--top-k", type=int, default=0, help="sample among the k likeliest tokens (0 = off)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1 = off)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the sampling, for reproducible text")
    parser.add_argument(
        "--quantize",
        choices=["none", "int8"],
        default="none",
        help="int8: quantise an fp32 checkpoint at load (an int8 checkpoint is always int8)",
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="8-bit backend: bnb (bitsandbytes LLM.int8), torch (dynamic int8, CPU), auto",
    )
    parser.add_argument("--threshold", type=float, default=6.0, help="LLM.int8 outlier threshold (bnb)")
    parser.add_argument("--memory", choices=["on", "off", "dynamic"], default="on",
                        help="on / off: read the model's FAISS memory; dynamic: dynamic evaluation, the weights "
                        "adapt to the prompt and the generated text (FAISS memory off; needs `s3cmn-memory fit CKPT "
                        "--text HELDOUT --dynamic`; fp32 only)")  # fmt: skip
    parser.add_argument("--compile", action="store_true",
                        help="decode through the torch.compile'd one-token step (~2x faster a token at batch 1 after a "
                        "compile of ~30 s; fp32, with --memory off or a model without memory)")  # fmt: skip
    parser.add_argument("--compile-weights", choices=("fp32", "bf16", "fp16", "int8"), default=None,
                        help="with --compile: store the weight matrices at this width (bf16 / fp16: half the bytes a "
                        "token reads; int8: a quarter, one scale per row; fp32 arithmetic, any CPU; the logits of "
                        "the rounded weights); default fp32")
    parser.add_argument("--verbose", action="store_true", help="log at INFO level to stderr")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")  # fmt: skip
    from s3cmn.quantization.inference import generate_text, load_for_inference

    def fail(err: BaseException) -> int:
        print(f"s3cmn-generate: error: {err}", file=sys.stderr)
        return 2

    try:
        model, tokenizer, report = load_for_inference(args.checkpoint, args.quantize, args.backend, args.threshold)
    except (ValueError, ImportError, RuntimeError) as err:  # missing / corrupt checkpoint, unavailable backend
        return fail(err)
    if report is not None:
        if args.memory == "dynamic":
            return fail(ValueError("--memory dynamic adapts the fp32 weights: it cannot run on an int8 model (give "
                                   "an fp32 checkpoint and --quantize none)"))  # fmt: skip
        print(f"s3cmn-generate: {report.summary()}", file=sys.stderr)
    if args.compile_weights and not args.compile:
        return fail(ValueError("--compile-weights sets the compiled step's weights: add --compile"))
    if args.compile:
        if args.memory == "dynamic" or (args.memory == "on" and model.memory_bank.searchable):
            return fail(ValueError(f"--compile runs the model without its memory read, and --memory {args.memory} "
                                   "reads it: add --memory off"))  # fmt: skip
        try:
            model.compile_decode(weights=args.compile_weights or "fp32")
        except ValueError as err:  # a model the compiled step does not cover (int8, s4d, attention, ...)
            return fail(err)
    prompts = args.prompt if args.prompt else (line.rstrip("\n") for line in sys.stdin)
    total_tokens, total_seconds = 0, 0.0
    for prompt in prompts:
        if not prompt.strip() and not args.prompt:
            continue
        try:
            result = generate_text(
                model, tokenizer, prompt, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                top_k=args.top_k, top_p=args.top_p, seed=args.seed, use_memory=args.memory == "on",
                dynamic=args.memory == "dynamic",
                on_text=lambda text: print(text, end="", flush=True),
            )  # fmt: skip
        except (ValueError, OSError, RuntimeError) as err:  # bad options, dynamic settings, a failed --compile
            return fail(err)
        total_tokens += result.new_tokens
        total_seconds += result.seconds
    rate = total_tokens / total_seconds if total_seconds > 0 else 0.0
    print(f"s3cmn-generate: {total_tokens} tokens in {total_seconds:.2f} s: {rate:.1f} tokens/s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

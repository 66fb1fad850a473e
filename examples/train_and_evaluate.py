"""Train with the library API on a text file, then score held-out text with the memory off and on.

    python examples/train_and_evaluate.py --train-file ../shared/data/wikitext-2-raw/wiki.valid.raw \\
        --eval-file ../shared/data/wikitext-2-raw/wiki.test.raw \\
        --tokenizer ../shared/data/tokenizers/bert-base-uncased --max-steps 200 --output-dir runs/example
"""

from __future__ import annotations

import argparse
import math

from s3cmn import S3CMNConfig, S3CMNForCausalLM
from s3cmn.data import load_tokenizer
from s3cmn.evaluation.perplexity import prepare_text, score_stream
from s3cmn.presets import preset_training
from s3cmn.run_config import DataConfig, TrainingConfig
from s3cmn.training import train


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-file", required=True)
    parser.add_argument("--eval-file", required=True)
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--max-steps", type=int, default=200)
    parser.add_argument("--hidden-dim", type=int, default=128)
    parser.add_argument("--eval-tokens", type=int, default=4096)
    args = parser.parse_args(argv)

    # 1. Settings: the tiny preset (model and training), narrowed by the flags; fp32 on the CPU.
    width = dict(hidden_dim=args.hidden_dim, embedding_dim=args.hidden_dim,
                 memory_compression_dim=min(32, args.hidden_dim))
    model_config = S3CMNConfig.from_preset("tiny", **width)
    training = TrainingConfig(**{**preset_training("tiny"), "max_steps": args.max_steps, "output_dir": args.output_dir,
                                 "mixed_precision": "no", "eval_interval": max(1, args.max_steps), "eval_batches": 2,
                                 "overwrite": True})
    data = DataConfig(train_file=args.train_file, validation_file=args.train_file, tokenizer=args.tokenizer)

    # 2. Train: checkpoints in OUTPUT_DIR/{best,last}, metrics in OUTPUT_DIR/metrics.jsonl.
    result = train(model_config, training, data)
    print(f"trained {result.steps} steps, {result.tokens} tokens, validation loss {result.val_loss:.3f}")

    # 3. Score the first EVAL_TOKENS tokens of the evaluation text, memory off and on (s3cmn-eval's scorer).
    model = S3CMNForCausalLM.from_pretrained(f"{args.output_dir}/best")
    tokenizer = load_tokenizer(f"{args.output_dir}/best")
    text = prepare_text(open(args.eval_file, encoding="utf-8").read(), tokenizer, max_tokens=args.eval_tokens)
    for use_memory in (False, True):
        score = score_stream(model, text.stream, context_length=128, stride=64, use_memory=use_memory)
        print(f"memory {'on ' if use_memory else 'off'}: token perplexity "
              f"{math.exp(score.nll_sum / text.num_tokens):.1f} on {text.num_tokens} tokens")


if __name__ == "__main__":
    main()

"""Ablation of the optional blocks: the same data, model size and token budget for every variant.

Trains (with ``s3cmn.training.fit``) the baseline S³CMN block and each option — population coding, cross-modal
attention, both; each Mamba–liquid–spiking integration mode; each liquid backbone; the LiquidLM reservoir
block — on WikiText-2 text tokenised with the bert-base-uncased WordPiece vocabulary, and writes a table of
*measured* validation loss / perplexity, training and evaluation tokens/s, trainable parameters, spike rate
and population sparsity (``ablation.md`` and ``ablation.json`` in ``--output-dir``).

The WikiText-2 train split is not in ``../shared/data``, so the models train on ``wiki.valid.raw`` and are
validated on the start of ``wiki.test.raw`` (disjoint text). The external memory is off in every variant
(the reservoir block does not read it; memory is ablated elsewhere).

    python scripts/ablation.py --quick                     # < 2 minutes on 2 CPU cores: a smoke run
    python scripts/ablation.py --tokens 2000000 --hidden-dim 128 --num-layers 2 --sequence-length 128
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from s3cmn.config import S3CMNConfig  # noqa: E402
from s3cmn.data import encode_text, load_tokenizer, pack_blocks  # noqa: E402
from s3cmn.modeling.lm import S3CMNForCausalLM  # noqa: E402
from s3cmn.run_config import TrainingConfig  # noqa: E402
from s3cmn.training import fit  # noqa: E402
from s3cmn.training.loop import seed_everything  # noqa: E402

logger = logging.getLogger("ablation")

LIQUID = dict(use_liquid=True, ssm_type="mamba")
# name -> (preset, overrides on top of the shared size settings)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "baseline": ("tiny", {}),
    "population": ("tiny", dict(use_population_coding=True)),
    "liquid-sequential-cfc": ("tiny", dict(LIQUID, integration_mode="sequential", liquid_backbone="cfc")),
    "cross-modal": ("tiny", dict(LIQUID, use_cross_modal_attention=True)),
    "population+cross-modal": ("tiny", dict(LIQUID, use_cross_modal_attention=True, use_population_coding=True)),
    "liquid-parallel": ("tiny", dict(LIQUID, integration_mode="parallel")),
    "liquid-bidirectional": ("tiny", dict(LIQUID, integration_mode="bidirectional")),
    "liquid-ltc": ("tiny", dict(LIQUID, liquid_backbone="ltc")),
    "liquid-ncp": ("tiny", dict(LIQUID, liquid_backbone="ncp")),
    "reservoir": ("liquidlm", {}),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes and budget: a smoke run of every variant")
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    p.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--output-dir", type=Path, default=REPO / "runs" / "ablation")
    p.add_argument("--tokens", type=int, default=500_000, help="training tokens per variant (the budget)")
    p.add_argument("--valid-tokens", type=int, default=32_768, help="validation tokens (start of wiki.test.raw)")
    p.add_argument("--hidden-dim", type=int, default=128)
    p.add_argument("--num-layers", type=int, default=2)
    p.add_argument("--sequence-length", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (the machine may be shared)")
    args = p.parse_args(argv)
    if args.quick:
        args.tokens, args.valid_tokens = 1_024, 256
        args.hidden_dim, args.num_layers, args.sequence_length, args.batch_size = 32, 1, 16, 4
    return args


def load_data(args: argparse.Namespace) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """Tokenizer, training blocks (from wiki.valid.raw) and validation blocks (start of wiki.test.raw)."""
    tokenizer = load_tokenizer(str(args.data_dir / "tokenizers" / "bert-base-uncased" / "vocab.txt"))
    raw = args.data_dir / "wikitext-2-raw"
    T = args.sequence_length
    # tokenise only what the budget needs (about 4-5 characters a token; 8 leaves a margin)
    train_text = (raw / "wiki.valid.raw").read_text(encoding="utf-8")[: max(args.tokens * 8, 50_000)]
    valid_text = (raw / "wiki.test.raw").read_text(encoding="utf-8")[: args.valid_tokens * 8]
    train_ids = torch.from_numpy(encode_text(train_text, tokenizer))
    valid_ids = torch.from_numpy(encode_text(valid_text, tokenizer))[: args.valid_tokens]
    return tokenizer, pack_blocks(train_ids, T), pack_blocks(valid_ids, T)


def model_config(name: str, args: argparse.Namespace, vocab_size: int) -> S3CMNConfig:
    preset, overrides = VARIANTS[name]
    D = args.hidden_dim
    shared = dict(vocab_size=vocab_size, embedding_dim=D, hidden_dim=D, num_layers=args.num_layers,
                  num_attention_heads=4, memory_compression_dim=min(32, D), use_memory=False,
                  max_position_embeddings=max(512, args.sequence_length))
    if args.quick:
        shared.update(liquid_units=16, spiking_units=16, reservoir_size=64, hyena_filter_length=64)
    return S3CMNConfig.from_preset(preset, **{**shared, **overrides})


@torch.no_grad()
def measure(model: S3CMNForCausalLM, blocks: torch.Tensor, batch_size: int) -> dict[str, float | None]:
    """Validation loss, eval tokens/s, mean spike rate and population sparsity over the validation blocks."""
    model.eval()
    total, count, rates, sparsity = 0.0, 0, [], []
    start = time.perf_counter()
    for i in range(0, blocks.shape[0], batch_size):
        batch = blocks[i : i + batch_size]
        out = model(batch, labels=batch, use_cache=False)
        n = batch.numel() - batch.shape[0]
        total, count = total + out.loss.item() * n, count + n
        if out.spike_rate is not None:
            rates.append(out.spike_rate.item())
        sparsity += [float(s.population_sparsity) for s in out.spike_stats or [] if hasattr(s, "population_sparsity")]
    elapsed = time.perf_counter() - start
    loss = total / max(count, 1)
    return {"val_loss": loss, "val_ppl": math.exp(min(loss, 50.0)), "eval_tokens_per_s": blocks.numel() / elapsed,
            "spike_rate": sum(rates) / len(rates) if rates else None,
            "population_sparsity": sum(sparsity) / len(sparsity) if sparsity else None}


def run_variant(name: str, args: argparse.Namespace, tokenizer: Any, train: torch.Tensor,
                valid: torch.Tensor, workdir: Path) -> dict[str, Any]:
    config = model_config(name, args, len(tokenizer))
    seed_everything(args.seed)
    model = S3CMNForCausalLM(config)
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    training = TrainingConfig(
        learning_rate=args.learning_rate, batch_size=args.batch_size, sequence_length=args.sequence_length,
        num_epochs=max(1, math.ceil(args.tokens / train.numel())), max_tokens=args.tokens,
        warmup_steps=max(1, args.tokens // (20 * args.batch_size * args.sequence_length)),
        eval_interval=10**9, save_interval=10**9, log_interval=10**9, num_samples=0, device="cpu",
        mixed_precision="no", seed=args.seed, output_dir=str(workdir / name),
    )
    result = fit(model, train, None, training)
    row = {"variant": name, "preset": VARIANTS[name][0], "overrides": VARIANTS[name][1], "params": params,
           "train_tokens": result.tokens, "steps": result.steps, "train_loss": result.train_loss,
           "train_tokens_per_s": result.tokens_per_s}
    row.update(measure(model, valid, args.batch_size))
    logger.info("%s: val ppl %.1f, %.0f train tok/s", name, row["val_ppl"], row["train_tokens_per_s"])
    return row


def markdown(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    def fmt(v: Any, spec: str) -> str:
        return "–" if v is None else format(v, spec)

    lines = [
        f"# Ablation ({'quick' if args.quick else 'full'}): {args.tokens} training tokens per variant",
        "",
        f"D = {args.hidden_dim}, {args.num_layers} layer(s), T = {args.sequence_length}, batch {args.batch_size}, "
        f"lr {args.learning_rate}; train wiki.valid.raw, validate {args.valid_tokens} tokens of wiki.test.raw "
        "(bert-base-uncased WordPiece); memory off; CPU (tokens/s are wall-clock: on a shared machine, noisy).",
        "",
        "| variant | params | val loss | val ppl | train tok/s | eval tok/s | spike rate | pop. sparsity |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['params']:,} | {r['val_loss']:.3f} | {r['val_ppl']:.1f} | "
            f"{r['train_tokens_per_s']:.0f} | {r['eval_tokens_per_s']:.0f} | {fmt(r['spike_rate'], '.3f')} | "
            f"{fmt(r['population_sparsity'], '.3f')} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    tokenizer, train, valid = load_data(args)
    print(f"data: {train.shape[0]} training blocks, {valid.shape[0]} validation blocks of {args.sequence_length}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:  # fit's checkpoints are not kept
        for name in args.variants:
            rows.append(run_variant(name, args, tokenizer, train, valid, Path(tmp)))
    args.output_dir.mkdir(parents=True, exist_ok=True)
    table = markdown(rows, args)
    (args.output_dir / "ablation.md").write_text(table, encoding="utf-8")
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    (args.output_dir / "ablation.json").write_text(json.dumps({"settings": settings, "rows": rows}, indent=2),
                                                   encoding="utf-8")
    print(table)
    print(f"wrote {args.output_dir / 'ablation.md'} and ablation.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())

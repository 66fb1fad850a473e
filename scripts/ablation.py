"""What costs quality: the S³CMN block with each sub-layer switched off, swapped or resized, per preset and seed.

Every variant is one preset plus config overrides (and, for the learning-rate rows, a training override). Each
is trained by ``s3cmn.training.fit`` on the same token budget, data order and seeds, and validated
``--evals`` times on text **held out from the training text** (``s3cmn.evaluation.corpora.load_corpus``: offline
WikiText-2 trains on ``wiki.valid.raw`` minus its last 6 articles and validates on those 6; ``--corpus
python`` validates on the standard library's validation files). The reported figure is the best validation
loss (and its perplexity) of each run, mean ± std over seeds. The test text is never read: choices made
from this table are made on validation text, and the test split stays for ``compare.py``'s final score.

Groups (``--group``):

- ``sublayers`` (default): the full block; without Hyena; without the LIF layer; S4D instead of Mamba; the
  Mamba mixer alone; narrower Mamba (expand 1); the preset's learning rate x3; Mamba before Hyena
  (placement); LayerScale 0.01 on every sub-layer (each block starts near the identity);
- ``optional``: the optional blocks (population coding, cross-modal attention, the Mamba–liquid–spiking
  modes, liquid backbones, the LiquidLM reservoir), each against the full block.

    python scripts/ablation.py --quick                                  # a smoke run, < 2 minutes
    python scripts/ablation.py --presets tiny small --seeds 0 1 --tokens 524288 --output-dir results/ablation
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from s3cmn.data import pack_blocks
from s3cmn.evaluation.benchmarking import close_meta, fmt_load, run_meta
from s3cmn.evaluation.corpora import CORPORA, load_corpus
from s3cmn.model_config import S3CMNConfig
from s3cmn.modeling.lm import S3CMNForCausalLM
from s3cmn.presets import preset_training
from s3cmn.run_config import TrainingConfig
from s3cmn.training import fit
from s3cmn.training.loop import seed_everything

REPO = Path(__file__).resolve().parents[1]

logger = logging.getLogger("ablation")

LIQUID = dict(use_liquid=True, ssm_type="mamba")
# group -> variant -> (model overrides, training overrides); every variant is on top of the preset, memory off
GROUPS: dict[str, dict[str, tuple[dict[str, Any], dict[str, Any]]]] = {
    "sublayers": {
        "full": ({}, {}),
        "no-hyena": (dict(use_hyena=False), {}),
        "no-lif": (dict(use_spiking=False), {}),
        "s4d-for-mamba": (dict(ssm_type="s4d"), {}),
        "mamba-only": (dict(use_hyena=False, use_spiking=False), {}),
        "mamba-expand-1": (dict(mamba_expand=1), {}),
        "lr-x3": ({}, {"learning_rate_scale": 3.0}),
        "mamba-first": (dict(block_mixers=["mamba", "hyena", "lif", "mlp"]), {}),
        "layer-scale": (dict(layer_scale_init=0.01), {}),
        "mamba-only-lr-x3": (dict(use_hyena=False, use_spiking=False), {"learning_rate_scale": 3.0}),
        "layer-scale+mamba-first+lr-x3": (dict(layer_scale_init=0.01, block_mixers=["mamba", "hyena", "lif", "mlp"]),
                                          {"learning_rate_scale": 3.0}),
    },
    "optional": {
        "full": ({}, {}),
        "population": (dict(use_population_coding=True), {}),
        "cross-modal": (dict(LIQUID, use_cross_modal_attention=True), {}),
        "liquid-sequential-cfc": (dict(LIQUID, integration_mode="sequential", liquid_backbone="cfc"), {}),
        "liquid-parallel": (dict(LIQUID, integration_mode="parallel"), {}),
        "liquid-bidirectional": (dict(LIQUID, integration_mode="bidirectional"), {}),
        "liquid-ltc": (dict(LIQUID, liquid_backbone="ltc"), {}),
        "liquid-ncp": (dict(LIQUID, liquid_backbone="ncp"), {}),
        "reservoir": (dict(block_type="reservoir", reservoir_size=256, position_embedding="learned"), {}),
    },
}
QUICK_MODEL = dict(hidden_dim=32, embedding_dim=32, num_layers=1, num_attention_heads=2, liquid_units=16,
                   spiking_units=16, reservoir_size=64, hyena_filter_length=64, hyena_filter_dim=8, s4d_d_state=8,
                   memory_compression_dim=8)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="toy sizes and budget: a smoke run")
    p.add_argument("--group", choices=list(GROUPS), default="sublayers")
    p.add_argument("--variants", nargs="+", default=None, help="a subset of the group's variants")
    p.add_argument("--presets", nargs="+", default=["tiny"], help="presets to ablate (e.g. tiny small)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--corpus", choices=CORPORA, default="wikitext2")
    p.add_argument("--tokenizer", default="gpt2", help="gpt2 (lossless, default), bert, bpe:N or a path")
    p.add_argument("--shared-data", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--output-dir", type=Path, default=REPO / "runs" / "ablation")
    p.add_argument("--tokens", type=int, default=524_288, help="training tokens per run (the budget)")
    p.add_argument("--valid-tokens", type=int, default=65_536, help="use the first N held-out tokens (0 = all)")
    p.add_argument("--evals", type=int, default=4, help="validations per run (the best one is reported)")
    p.add_argument("--batch-size", type=int, default=None, help="default: the preset's")
    p.add_argument("--sequence-length", type=int, default=None, help="default: the preset's")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = p.parse_args(argv)
    variants = GROUPS[args.group]
    args.variants = args.variants or list(variants)
    unknown = sorted(set(args.variants) - set(variants))
    if unknown:
        p.error(f"unknown variant(s) {', '.join(unknown)} in group {args.group}: choose from {', '.join(variants)}")
    if args.quick:
        args.tokens, args.valid_tokens, args.evals, args.seeds = 512, 256, 1, args.seeds[:1]
        args.batch_size, args.sequence_length = 2, 32
    return args


def run_config(preset: str, variant: str, args: argparse.Namespace, tokenizer: Any) -> S3CMNConfig:
    overrides, _ = GROUPS[args.group][variant]
    shared = {"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id,
              "eos_token_id": tokenizer.eos_token_id, "use_memory": False, **(QUICK_MODEL if args.quick else {})}
    return S3CMNConfig.from_preset(preset, **{**shared, **overrides})


def training_config(preset: str, variant: str, args: argparse.Namespace, seed: int, folder: Path) -> TrainingConfig:
    _, train_overrides = GROUPS[args.group][variant]
    fields = preset_training(preset)
    batch, T = args.batch_size or fields.get("batch_size", 8), args.sequence_length or fields.get("sequence_length")
    lr = fields.get("learning_rate", 1e-3) * train_overrides.get("learning_rate_scale", 1.0)
    steps = max(1, math.ceil(args.tokens / (batch * T)))
    return TrainingConfig(
        learning_rate=lr, batch_size=batch, sequence_length=T, num_epochs=10**6, max_steps=steps,
        max_tokens=args.tokens, warmup_steps=max(1, round(0.1 * steps)), eval_interval=max(1, steps // args.evals),
        eval_batches=0, save_interval=10**9, log_interval=10**9, num_samples=0, device="cpu", mixed_precision="no",
        seed=seed, output_dir=str(folder))


def run_one(preset: str, variant: str, seed: int, args: argparse.Namespace, corpus: Any, workdir: Path) -> dict:
    config = run_config(preset, variant, args, corpus.tokenizer)
    folder = workdir / f"{preset}-{variant}-seed{seed}"
    training = training_config(preset, variant, args, seed, folder)
    T = training.sequence_length
    train = pack_blocks(corpus.train_ids, T)
    valid = pack_blocks(corpus.valid_ids[: args.valid_tokens or None], T)
    seed_everything(seed)
    model = S3CMNForCausalLM(config)
    start = time.perf_counter()
    result = fit(model, train, valid, training)
    seconds = time.perf_counter() - start
    log = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if r["kind"] == "validation"]
    out = model(valid[: training.batch_size], labels=valid[: training.batch_size])  # spike rate of the final model
    row = {"preset": preset, "variant": variant, "seed": seed, "params": sum(p.numel() for p in model.parameters()),
           "learning_rate": training.learning_rate, "train_tokens": result.tokens, "steps": result.steps,
           "train_loss": result.train_loss, "best_val_loss": min(losses), "validations": losses,
           "train_seconds": seconds, "spike_rate": None if out.spike_rate is None else float(out.spike_rate)}
    logger.info("%s %s seed %d: best validation loss %.4f (%d params, %.0f s)", preset, variant, seed,
                row["best_val_loss"], row["params"], seconds)
    return row


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (preset, variant): best validation loss mean ± std over seeds, and the change against ``full``."""
    out = []
    for key in dict.fromkeys((r["preset"], r["variant"]) for r in rows):
        mine = [r for r in rows if (r["preset"], r["variant"]) == key]
        losses = [r["best_val_loss"] for r in mine]
        out.append({"preset": key[0], "variant": key[1], "params": mine[0]["params"],
                    "seeds": [r["seed"] for r in mine],
                    "learning_rate": mine[0]["learning_rate"], "val_loss_mean": statistics.fmean(losses),
                    "val_loss_std": statistics.stdev(losses) if len(losses) > 1 else 0.0, "val_losses": losses,
                    "spike_rate": mine[0]["spike_rate"], "train_tokens": mine[0]["train_tokens"]})
    full = {r["preset"]: r["val_loss_mean"] for r in out if r["variant"] == "full"}
    for r in out:
        r["delta_vs_full"] = r["val_loss_mean"] - full[r["preset"]] if r["preset"] in full else None
    return out


def markdown(summary: list[dict[str, Any]], args: argparse.Namespace, corpus: Any, meta: dict[str, Any]) -> str:
    lines = [
        f"# Ablation ({args.group}{', quick' if args.quick else ''}): {args.tokens:,} training tokens per run",
        "",
        f"Trained on {corpus.source['train']}; best of {args.evals} validations on {corpus.source['validation']} "
        f"(the test text is not read); tokenizer {corpus.tokenizer_spec}; memory off; seeds {args.seeds}; "
        "mean ± std over seeds. Δ = validation loss minus the full block's (negative: better).",
        "",
        "| preset | variant | params | lr | val loss | val ppl | Δ vs full | spike rate |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in summary:
        delta = "–" if r["delta_vs_full"] is None else f"{r['delta_vs_full']:+.3f}"
        spikes = "–" if r["spike_rate"] is None else f"{r['spike_rate']:.3f}"
        lines.append(f"| {r['preset']} | {r['variant']} | {r['params']:,} | {r['learning_rate']:.1e} | "
                     f"{r['val_loss_mean']:.3f} ± {r['val_loss_std']:.3f} | {math.exp(r['val_loss_mean']):.1f} | "
                     f"{delta} | {spikes} |")
    return "\n".join(lines + ["", fmt_load(meta) + f"; wall time {meta['wall_s']:.0f} s.", ""])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    start, meta = time.perf_counter(), run_meta(args.threads, args.quick, argv)
    corpus = load_corpus(args.corpus, args.tokenizer, args.shared_data)
    with tempfile.TemporaryDirectory() as tmp:  # fit's checkpoints are not kept
        rows = [run_one(preset, variant, seed, args, corpus, Path(tmp))
                for preset in args.presets for seed in args.seeds for variant in args.variants]
    close_meta(meta, start)
    summary = summarise(rows)
    table = markdown(summary, args, corpus, meta)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "ablation.md").write_text(table, encoding="utf-8")
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    record = {"meta": meta, "settings": settings, "selection": corpus.selection, "summary": summary, "runs": rows}
    (args.output_dir / "ablation.json").write_text(json.dumps(record, indent=1, allow_nan=False), encoding="utf-8")
    print(table)
    print(f"wrote {args.output_dir / 'ablation.md'} and ablation.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())

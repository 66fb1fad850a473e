"""s3cmn-memory: inspect a model's FAISS memories; build and fit the next-token read-outs.

    s3cmn-memory inspect CHECKPOINT [--tokenizer NAME_OR_DIR] [--top 5] [--query "some text"] [--plot DIR] [--json]
    s3cmn-memory build CHECKPOINT --text TRAIN.raw [--index auto|flat|ivfflat|sq8|ivfpq] [--pca-dim 0] [--nprobe 32]
                       [--resume] [--out DIR]
    torchrun --nproc_per_node 2 -m s3cmn.cli.memory build CHECKPOINT --text TRAIN.raw --out DIR   # one shard a rank
    s3cmn-memory fit CHECKPOINT --text HELDOUT.raw [--dynamic] [--dynamic-grid-tokens 8192]

``build`` writes the kNN datastore (final hidden state at t -> token t + 1 of TRAIN) to CHECKPOINT/nexttoken/
datastore, in chunks a killed build keeps (``--resume`` continues it); under torchrun each rank encodes its slice
of TRAIN and writes its own shard, and the datastore searches them all. ``fit`` fits the cache (and, with a
datastore, kNN and cache+knn) settings on HELDOUT and writes CHECKPOINT/nexttoken/readout.json, which names the
text they were fitted on. Never fit on the text you score: both refuse a test split (by name or content), and both
record a fingerprint of their text's content that ``s3cmn-eval`` checks the scored text against.

Finds every saved memory (a ``memory.json`` manifest) under CHECKPOINT and prints its statistics, IVF occupancy,
PCA explained variance and the most / least used entries decoded back to the text they came from. ``--query``
runs the model on the text and shows what each memory layer returns for its last token (the same projected
query the model reads with). ``--plot DIR`` writes PNG charts; ``--json`` prints the whole report as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

import torch

from s3cmn.cli.arguments import configure_logging


def find_memories(path: Path) -> list[Path]:
    """Folders at or under ``path`` holding a saved memory, sorted."""
    if (path / "memory.json").is_file():
        return [path]
    return sorted(p.parent for p in path.rglob("memory.json"))


def find_tokenizer(name: str | None, path: Path):
    """``--tokenizer`` (any spec :func:`s3cmn.data.tokenizer.load_tokenizer` accepts), else the checkpoint's
    own tokenizer files, else None."""
    from s3cmn.data.tokenizer import checkpoint_tokenizer, load_tokenizer

    if name is not None:
        return load_tokenizer(name)
    return checkpoint_tokenizer(path)


def print_report(report: dict) -> None:
    from s3cmn.memory.inspect import describe_spread

    s = report["stats"]
    print(f"## memory layer {report['layer']}")
    print(f"entries {s['entries']:,} / capacity {s['capacity']:,} (max {s['max_size']:,}), index {s['index_type']}, "
          f"keys {s['value_dim']} -> {s['key_dim']} (x{s['compression_ratio']:.1f}), "
          f"{s['bytes_total'] / 2**20:.2f} MiB")  # fmt: skip
    print(f"prunes {s['prunes']} ({s['pruned_entries']} entries), growths {s['growths']}, refits {s['refits']}")
    print(f"usage (counted in training): {describe_spread(report['usage_spread'])}")
    occ = report["occupancy"]
    if occ["lists"]:
        print(f"IVF lists {occ['lists']}: min {occ['min']}, mean {occ['mean']:.1f}, max {occ['max']}, "
              f"empty {occ['empty_lists']}")  # fmt: skip
    if report["pca"]:
        print(f"PCA explained variance {report['pca']['explained_variance']:.4f} "
              f"(held-out error {report['pca']['held_out_error']:.4f})")  # fmt: skip
    for title in ("most_used", "least_used"):
        print(f"\n{title.replace('_', ' ')}:")
        for e in report[title]:
            text = e.get("text", " ".join(map(str, e["token_ids"])))
            print(f"  id {e['id']:>6}  used {e['usage']:>5}  mass {e['attention_mass']:8.3f}  step {e['write_step']}"
                  f"  | {text}")  # fmt: skip
    print()



@torch.no_grad()
def query_memories(checkpoint: Path, text: str, tokenizer: Any, k: int | None) -> dict[str, list[dict]]:
    """Per memory layer: the hits for the last token of ``text``, with the model's own projected query."""
    from s3cmn.memory import query_report
    from s3cmn.modeling.loading import load_model

    if tokenizer is None:
        raise ValueError("--query needs a tokenizer: the checkpoint has none; give --tokenizer")
    model = load_model(checkpoint)
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
    if ids.shape[1] == 0:
        raise ValueError("--query text is empty after tokenisation")
    bank = model.memory_bank
    with bank.forward_pass(read=True, write=True):  # staged, never committed: the states the layers read with
        model.model(ids, memory_bank=bank)
        states = {layer: bank.staged(layer) for layer in bank.pending}
        bank.discard()
    hits = {}
    for i, h in states.items():
        reader = model.model.layers[i].memory_reader
        query = reader.centred(reader.q_proj(h[0, -1:]).float(), bank[i])  # (1, D), as the read searches
        hits[str(i)] = query_report(bank[i], query, tokenizer, k)[0]
    return hits


def _model_and_text(checkpoint: Path, text_file: Path, context_length: int, stride: int, batch_size: int,
                    role: str):
    """The checkpoint's model, the text's stream (as s3cmn-eval tokenises it) and the resolved windows; a test
    split is refused before the model is loaded (``role``: "build" or "fit")."""
    from s3cmn.evaluation.perplexity import prepare_text
    from s3cmn.evaluation.run import load_eval_tokenizer, resolve_window
    from s3cmn.modeling.loading import load_model
    from s3cmn.nexttoken.provenance import refuse_test_split
    from s3cmn.run_config import DataConfig, EvalConfig

    if not text_file.is_file():
        raise ValueError(f"--text {text_file} is not a file")
    raw = text_file.read_text(encoding="utf-8")
    refuse_test_split(str(text_file), raw, role)
    model = load_model(checkpoint)
    tokenizer, _ = load_eval_tokenizer(checkpoint, DataConfig())
    window = resolve_window(EvalConfig(context_length=context_length, stride=stride), model.config, checkpoint)
    text = prepare_text(raw, tokenizer, 0, None, model.config.vocab_size)
    return model, text, window


def run_build(args: argparse.Namespace) -> None:
    """Build the datastore in resumable chunks; under ``torchrun --nproc_per_node N`` every rank encodes its
    slice of the text and writes its own shard (s3cmn.nexttoken.build)."""
    import torch.distributed as dist

    from s3cmn.nexttoken.build import build_datastore_chunked, init_build_group
    from s3cmn.nexttoken.datastore import NextTokenDatastore, file_source
    from s3cmn.nexttoken.fitted import datastore_path
    from s3cmn.nexttoken.provenance import TextFingerprint

    created = init_build_group(args.timeout)
    try:
        model, text, window = _model_and_text(args.checkpoint, args.text, args.context_length, args.stride,
                                              args.batch_size, "build")  # fmt: skip
        source = {**file_source(args.text), "checkpoint": str(args.checkpoint.resolve())}
        out = build_datastore_chunked(model, text.stream, args.out or datastore_path(args.checkpoint),
                                      window["context_length"], window["stride"], args.batch_size, kind=args.index,
                                      pca_dim=args.pca_dim, nprobe=args.nprobe, chunk_batches=args.chunk_batches,
                                      source=source, fingerprint=TextFingerprint.from_text(text.text),
                                      resume=args.resume, timeout_s=args.timeout,
                                      progress=not args.no_progress)  # fmt: skip
        if not dist.is_initialized() or dist.get_rank() == 0:
            store = NextTokenDatastore.load(out, verify=False)
            shards = f" in {len(store.shards)} shards" if store.shards else ""
            print(f"datastore: {len(store):,} entries from {args.text} ({source['sha256'][:12]}), index "
                  f"{store.description}{shards}, {store.bytes_per_entry():.1f} bytes/entry -> {out}")  # fmt: skip
    finally:
        if created:
            dist.destroy_process_group()


def run_fit(args: argparse.Namespace) -> None:
    from s3cmn.nexttoken.datastore import NextTokenDatastore, file_source
    from s3cmn.nexttoken.fit import fit_readouts
    from s3cmn.nexttoken.fitted import datastore_path, settings_path

    model, text, window = _model_and_text(args.checkpoint, args.text, args.context_length, args.stride,
                                          args.batch_size, "fit")  # fmt: skip
    store_dir = args.datastore or datastore_path(args.checkpoint)
    store = NextTokenDatastore.load(store_dir) if (Path(store_dir) / "datastore.json").is_file() else None
    if store is not None and Path(store.source.get("path", "")).resolve() == args.text.resolve():
        raise ValueError(f"--text {args.text} is the datastore's own text: fit on held-out text")
    fitted_on = {**file_source(args.text), "tokens": text.num_tokens}
    settings = fit_readouts(model, text.stream, window["context_length"], window["stride"], args.batch_size,
                            datastore=store, nprobe=args.nprobe, fitted_on=fitted_on, text=text.text)  # fmt: skip
    out = settings.save(args.out or settings_path(args.checkpoint))
    print(f"fitted on {args.text} ({fitted_on['sha256'][:12]}, {text.num_tokens:,} tokens) -> {out}")
    for mode, nll in settings.fit["nll_per_token"].items():
        print(f"  {mode:>9}: held-out NLL/token {nll:.4f}, token ppl {math.exp(nll):.2f}")
    print(f"  cache {settings.cache}\n  knn {settings.knn}\n  cache+knn lambdas {settings.combined}")
    if args.dynamic:
        fit_dynamic_settings(args, model, text, window, settings, store, fitted_on)


def fit_dynamic_settings(args: argparse.Namespace, model: Any, text: Any, window: dict[str, Any], readouts: Any,
                         store: Any, fitted_on: dict[str, Any]) -> None:
    """``fit --dynamic``: dynamic evaluation's lr, decay, subset and reset (and the read-outs' lambdas with it
    on) on the same held-out text, written to CHECKPOINT/nexttoken/dynamic.json (+ dynamic_ms.safetensors)."""
    from s3cmn.evaluation.run import load_eval_tokenizer
    from s3cmn.nexttoken.dynamic import document_starts, dynamic_path
    from s3cmn.nexttoken.dynamic_fit import LRS, fit_dynamic
    from s3cmn.run_config import DataConfig

    tokenizer, _ = load_eval_tokenizer(args.checkpoint, DataConfig())
    starts = document_starts(text.text, tokenizer, text.num_tokens)
    dynamic = fit_dynamic(model, text.stream, window["context_length"], window["stride"], readouts=readouts,
                          datastore=store, document_starts=starts, fitted_on=fitted_on,
                          grid_tokens=args.dynamic_grid_tokens, windows_per_step=args.dynamic_windows_per_step,
                          lrs=args.dynamic_lrs or LRS, meta=_meta_options(args), min_speed=args.dynamic_min_speed,
                          batch_size=args.batch_size)  # fmt: skip
    out = dynamic.save(args.out.parent if args.out else dynamic_path(args.checkpoint))
    grid = dynamic.fit["grid_nll_per_token"]
    print(f"dynamic evaluation fitted on {args.text} (grid on its first {dynamic.fit['grid_tokens']:,} tokens) -> "
          f"{out}\n  lr {dynamic.lr:g}, decay {dynamic.decay:g}, subset {dynamic.subset}, reset at documents "
          f"{dynamic.reset_at_documents}, {dynamic.windows_per_step} window(s) per step: grid NLL/token "
          f"{grid['off']:.4f} -> {grid['dynamic']:.4f}")  # fmt: skip
    floor = dynamic.fit.get("speed_floor")
    if floor:
        print(f"  speed floor {floor['min_speed']:g}x the fixed-weights pass ({max(floor['off_tokens_per_s']):,.0f} "
              f"tokens/s): {'met' if floor['met'] else 'NOT met by any grid point'}; the chosen point scored "
              f"{dynamic.fit['chosen_tokens_per_s']:,.0f} tokens/s on the grid text")  # fmt: skip
    if dynamic.fit["lr_at_grid_edge"]:
        print(f"  warning: lr {dynamic.lr:g} is at the edge of the grid "
              f"{dynamic.fit['grid']['lr']}: widen it with --dynamic-lrs")  # fmt: skip
    if "meta" in dynamic.fit:
        meta = dynamic.fit["meta"]
        scores = meta["compare_nll_per_token"]
        print(f"  meta-learned step sizes (per tensor) vs the grid's, fitted on the first {meta['fit_tokens']:,} "
              f"tokens, compared on the last {meta['compare_tokens']:,}: NLL/token off {scores['off']:.4f}, grid "
              f"{scores['grid']:.4f}, meta {scores['meta']:.4f} -> kept {meta['kept']}")  # fmt: skip
    for mode, nll in dynamic.fit.get("nll_per_token", {}).items():
        print(f"  {mode:>17}: held-out NLL/token {nll:.4f}, token ppl {math.exp(nll):.2f}")
    print(f"  lambdas with dynamic on: cache {dynamic.cache_lam}, knn {dynamic.knn_lam}, cache+knn {dynamic.combined}")


def _meta_options(args: argparse.Namespace) -> Any:
    """``--dynamic-meta``'s MetaOptions (the flags left unset keep its defaults), None without it."""
    from s3cmn.nexttoken.dynamic_meta import MetaOptions

    chosen = {"epochs": args.meta_epochs, "unroll": args.meta_unroll}
    return MetaOptions(**{k: v for k, v in chosen.items() if v is not None}) if args.dynamic_meta else None


def _rates(text: str) -> list[float]:
    """``--dynamic-lrs 1e-4,1e-3``: the grid as :func:`s3cmn.evaluation.tuning.parse_grid` reads one."""
    from s3cmn.evaluation.tuning import parse_grid

    try:
        return parse_grid(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _counts(text: str) -> list[int]:
    """``--dynamic-windows-per-step 1,4,8``: whole numbers >= 1."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give comma-separated whole numbers >= 1, e.g. 1,4,8")
    return values


def _fraction(text: str) -> float:
    """``--dynamic-min-speed 0.3``: a number in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a fraction of the fixed-weights pass's speed in [0, 1), "
                                         "e.g. 0.3")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="s3cmn-memory", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    inspect = sub.add_parser("inspect", help="statistics, occupancy, most/least used entries, queries, plots")
    inspect.add_argument("path", type=Path, help="a checkpoint / save_pretrained folder, or a saved memory folder")
    inspect.add_argument("--tokenizer", default=None, help="tokenizer (name, folder, vocab.txt) to decode entries")
    inspect.add_argument("--top", type=int, default=5, help="most / least used entries to show")
    inspect.add_argument("--query", default=None, help="show what the memory returns for this text")
    inspect.add_argument("--k", type=int, default=None, help="hits per query (default: the memory's top_k)")
    inspect.add_argument("--plot", type=Path, default=None, help="write PNG charts into this folder")
    inspect.add_argument("--json", action="store_true", help="print the reports as JSON")
    for name, text_help in (("build", "training text (UTF-8) whose (hidden state, next token) pairs are stored"),
                            ("fit", "held-out text (UTF-8) to fit lambda, temperature, k and window on")):
        cmd = sub.add_parser(name, help=f"next-token read-outs: {name} ({text_help})")
        cmd.add_argument("checkpoint", type=Path, help="model folder (config.json, model.safetensors, tokenizer)")
        cmd.add_argument("--text", type=Path, required=True, help=text_help)
        cmd.add_argument("--context-length", type=int, default=0, help="window (0 = training sequence length)")
        cmd.add_argument("--stride", type=int, default=0, help="stride (0 = context // 2)")
        cmd.add_argument("--batch-size", type=int, default=8, help="windows per forward")
        cmd.add_argument("--nprobe", type=int, default=32, help="IVF lists searched per query")
        cmd.add_argument("--out", type=Path, default=None, help="where to write (default: beside the checkpoint)")
        cmd.add_argument("--no-progress", action="store_true", help="no progress bar")
        if name == "build":
            cmd.add_argument("--index", default="auto", choices=["auto", "flat", "ivfflat", "sq8", "ivfpq"],
                             help="FAISS index (auto: by size)")  # fmt: skip
            cmd.add_argument("--pca-dim", type=int, default=0, help="PCA-compress keys to this width (0 = off)")
            cmd.add_argument("--resume", action="store_true",
                             help="continue an interrupted build in --out (its chunks, trained index and shards)")
            cmd.add_argument("--chunk-batches", type=int, default=64,
                             help="forward batches per chunk, the unit of progress a resumed build keeps")
            cmd.add_argument("--timeout", type=float, default=1800.0,
                             help="seconds a rank waits for the others at a step (torchrun) before it stops")
        else:
            cmd.add_argument("--datastore", type=Path, default=None, help="datastore folder (default: beside it)")
            cmd.add_argument("--dynamic", action="store_true",
                             help="also fit dynamic evaluation (lr, decay, subset, reset; lambdas with it on)")
            cmd.add_argument("--dynamic-grid-tokens", type=int, default=8192,
                             help="held-out tokens each dynamic grid point is scored on (0 = all)")
            cmd.add_argument("--dynamic-windows-per-step", type=_counts, default=[1],
                             help="windows scored per dynamic-evaluation update; comma-separated values are a grid "
                                  "(e.g. 1,4,8: fewer updates, each on more text, faster)")
            cmd.add_argument("--dynamic-min-speed", type=_fraction, default=0.0,
                             help="only choose settings whose scored tokens/s is at least this fraction of the "
                                  "fixed-weights pass's (e.g. 0.3; timed in the fit, on this machine; 0 = any)")
            cmd.add_argument("--dynamic-lrs", type=_rates, default=None,
                             help="comma-separated step sizes of the dynamic grid (default 1e-5 to 1e-2)")
            cmd.add_argument("--dynamic-meta", action="store_true",
                             help="also meta-learn a step size per tensor and the decay (Meta-SGD) from the grid's "
                                  "point; both are fitted on the first 75%% of --text and the better on its last 25%% "
                                  "is kept")
            cmd.add_argument("--meta-epochs", type=int, default=None,
                             help="passes over the held-out text while meta-learning (default 2)")
            cmd.add_argument("--meta-unroll", type=int, default=None,
                             help="adaptation steps differentiated through per meta-update (default 8)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(logging.WARNING if args.command == "inspect" else logging.INFO)
    from s3cmn.data.errors import DataError
    from s3cmn.memory import FaissMemory, MemoryLoadError, memory_report, plot_memory

    if args.command in ("build", "fit"):
        from s3cmn.evaluation.errors import EvaluationError
        from s3cmn.nexttoken.build import DatastoreBuildError

        try:
            (run_build if args.command == "build" else run_fit)(args)
        except (MemoryLoadError, DataError, EvaluationError, DatastoreBuildError, ValueError, OSError) as err:
            parser.exit(2, f"s3cmn-memory {args.command}: error: {err}\n")
        return 0

    try:
        folders = find_memories(args.path)
        if not folders:
            raise ValueError(f"no saved memory (memory.json) under {args.path}")
        tokenizer = find_tokenizer(args.tokenizer, args.path)
        reports = []
        for folder in folders:
            memory = FaissMemory.load(folder)
            report = memory_report(memory, tokenizer, top=args.top)
            report["folder"] = str(folder)
            if args.plot is not None:
                sub = args.plot / folder.relative_to(args.path) if folder != args.path else args.plot
                report["plots"] = [str(p) for p in plot_memory(memory, sub)]
            reports.append(report)
        queries = query_memories(args.path, args.query, tokenizer, args.k) if args.query else None
    except (MemoryLoadError, DataError, ValueError, OSError) as err:
        parser.exit(2, f"s3cmn-memory: error: {err}\n")
    if args.json:
        print(json.dumps({"memories": reports, "query": queries}, indent=2))
        return 0
    for report in reports:
        print_report(report)
        if report.get("plots"):
            print(f"plots of memory layer {report['layer']}: {', '.join(report['plots'])}\n")
    if queries is not None:
        print(f"## query: {args.query!r}")
        for layer, hits in queries.items():
            print(f"memory layer {layer}: {len(hits)} hits")
            for h in hits:
                text = h.get("text", " ".join(map(str, h["token_ids"])))
                print(f"  distance {h['distance']:.3f}  id {h['id']:>6}  | {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Inspect the FAISS memories saved in a checkpoint (or one saved memory folder).

Finds every folder under PATH holding a saved FaissMemory (a ``memory.json`` manifest), and prints for each its
statistics, IVF occupancy, PCA explained variance and the most / least used entries decoded to the text they
came from. ``--plot DIR`` writes PNG charts; ``--json`` prints the whole report as JSON.

    python scripts/inspect_memory.py CHECKPOINT [--tokenizer NAME_OR_DIR] [--top 5] [--plot DIR] [--json]

The tokenizer is ``--tokenizer`` if given, else the checkpoint's own (tokenizer files in PATH), else none (token
ids are shown). ``--query`` (what the memory returns for a prompt) needs the model: see ``s3cmn-memory``.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from s3cmn.memory import FaissMemory, memory_report, plot_memory


def find_memories(path: Path) -> list[Path]:
    """Folders at or under ``path`` holding a saved memory, sorted."""
    if (path / "memory.json").is_file():
        return [path]
    return sorted(p.parent for p in path.rglob("memory.json"))


def find_tokenizer(name: str | None, path: Path):
    """``--tokenizer`` (any spec :func:`s3cmn.data.tokenizer.load_tokenizer` accepts), else the checkpoint's
    own tokenizer files, else None."""
    from s3cmn.data.tokenizer import load_tokenizer

    if name is not None:
        return load_tokenizer(name)
    if any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt")):
        return load_tokenizer(str(path))
    return None


def print_report(report: dict) -> None:
    s = report["stats"]
    print(f"## memory layer {report['layer']}")
    print(f"entries {s['entries']:,} / capacity {s['capacity']:,} (max {s['max_size']:,}), index {s['index_type']}, "
          f"keys {s['value_dim']} -> {s['key_dim']} (x{s['compression_ratio']:.1f}), "
          f"{s['bytes_total'] / 2**20:.2f} MiB")  # fmt: skip
    print(f"prunes {s['prunes']} ({s['pruned_entries']} entries), growths {s['growths']}, refits {s['refits']}")
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", type=Path, help="a checkpoint / save_pretrained folder, or a saved memory folder")
    parser.add_argument("--tokenizer", default=None, help="tokenizer (name, folder, vocab.txt) to decode entries")
    parser.add_argument("--top", type=int, default=5, help="most / least used entries to show")
    parser.add_argument("--plot", type=Path, default=None, help="write PNG charts into this folder")
    parser.add_argument("--json", action="store_true", help="print the reports as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    folders = find_memories(args.path)
    if not folders:
        parser.error(f"no saved memory (memory.json) under {args.path}")
    tokenizer = find_tokenizer(args.tokenizer, args.path)
    reports = []
    for folder in folders:
        memory = FaissMemory.load(folder)
        report = memory_report(memory, tokenizer, top=args.top)
        report["folder"] = str(folder)
        reports.append(report)
        if args.plot is not None:
            sub = args.plot / folder.relative_to(args.path) if folder != args.path else args.plot
            report["plots"] = [str(p) for p in plot_memory(memory, sub)]
        if not args.json:
            print_report(report)
    if args.json:
        print(json.dumps(reports, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

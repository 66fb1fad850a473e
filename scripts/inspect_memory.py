"""Inspect the FAISS memories saved in a checkpoint: the same as ``s3cmn-memory inspect``.

    python scripts/inspect_memory.py CHECKPOINT [--tokenizer NAME_OR_DIR] [--top 5] [--query TEXT] [--plot DIR]
"""

import sys

from s3cmn.cli.memory import main

if __name__ == "__main__":
    sys.exit(main(["inspect", *sys.argv[1:]]))

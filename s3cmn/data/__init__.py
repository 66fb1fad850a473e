"""Data: raw text splits, tokenizers, cached token ids, blocks and a resumable sampler.

Importing this package is light: ``datasets``, ``transformers`` and ``tokenizers`` are imported
inside the functions that need them.
"""

from s3cmn.data.dataset import (
    LMBlockDataset,
    default_cache_dir,
    encode_text,
    pack_blocks,
    round_trips,
    tokenize_cached,
)
from s3cmn.data.errors import DataError
from s3cmn.data.python_corpus import load_python_corpus
from s3cmn.data.sampler import BlockSampler
from s3cmn.data.text import load_text_splits, read_text_file
from s3cmn.data.tokenizer import checkpoint_tokenizer, ensure_special_tokens, load_tokenizer
from s3cmn.data.trained_tokenizer import train_tokenizer
from s3cmn.data.validation import (
    TrainingTexts,
    describe_selection,
    hold_out,
    load_training_texts,
    validation_selection,
)

__all__ = [
    "BlockSampler",
    "checkpoint_tokenizer",
    "TrainingTexts",
    "DataError",
    "LMBlockDataset",
    "default_cache_dir",
    "describe_selection",
    "encode_text",
    "ensure_special_tokens",
    "hold_out",
    "load_text_splits",
    "load_python_corpus",
    "load_tokenizer",
    "load_training_texts",
    "pack_blocks",
    "read_text_file",
    "round_trips",
    "tokenize_cached",
    "train_tokenizer",
    "validation_selection",
]

"""Data: raw text splits, tokenizers, cached token ids, blocks and a resumable sampler.

Importing this package is light: ``datasets``, ``transformers`` and ``tokenizers`` are imported
inside the functions that need them.
"""

from s3cmn.data.dataset import LMBlockDataset, default_cache_dir, encode_text, pack_blocks, tokenize_cached
from s3cmn.data.errors import DataError
from s3cmn.data.sampler import BlockSampler
from s3cmn.data.text import load_text_splits, read_text_file
from s3cmn.data.tokenizer import ensure_special_tokens, load_tokenizer
from s3cmn.data.trained_tokenizer import train_tokenizer

__all__ = [
    "BlockSampler",
    "DataError",
    "LMBlockDataset",
    "default_cache_dir",
    "encode_text",
    "ensure_special_tokens",
    "load_text_splits",
    "load_tokenizer",
    "pack_blocks",
    "read_text_file",
    "tokenize_cached",
    "train_tokenizer",
]

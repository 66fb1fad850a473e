"""Tokenizers: a ``transformers`` tokenizer by hub name, folder or vocabulary file, or one trained here.

``load_tokenizer(spec)`` accepts

- ``"bpe:N"`` — byte-level BPE (GPT-2 style, no unknown tokens) with ``N`` tokens, trained on the
  training text; ``<|endoftext|>`` is its eos / bos / pad / unk token;
- ``"wordpiece:N"`` — BERT-style WordPiece (cased, ``##`` continuations) with ``N`` tokens, trained on
  the training text; ``[PAD]`` / ``[UNK]`` / ``[CLS]`` (bos) / ``[SEP]`` (eos) / ``[MASK]``;
- a folder: with ``tokenizer.json`` or ``tokenizer_config.json`` (a ``save_pretrained`` folder), else
  GPT-2 ``vocab.json`` + ``merges.txt``, else a BERT ``vocab.txt`` (:func:`saved_tokenizer_files` decides);
- a file: a BERT ``vocab.txt`` (lower-cased when the vocabulary has no upper-case ASCII letters) or a
  ``tokenizer.json``;
- anything else: a hub name for ``AutoTokenizer`` (only the local cache when offline or unreachable).

``checkpoint_tokenizer(folder)`` is the tokenizer saved in a checkpoint folder, or None (an error with
``required=True``): every command that looks for a checkpoint's own tokenizer asks it, and
:func:`saved_tokenizer_files` is the one list of the files it looks for.

Trained tokenizers are deterministic (same text and size, same vocabulary) and are
``PreTrainedTokenizerFast`` objects: ``save_pretrained(dir)`` beside the model, and
``load_tokenizer(dir)`` gives identical ids. Every returned tokenizer has an eos and a pad token (see
:func:`ensure_special_tokens`), so packed documents can be separated and batches padded.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from s3cmn.data.errors import DataError
from s3cmn.data.hub import hub_offline, hub_reachable
from s3cmn.data.trained_tokenizer import BPE_EOS, train_tokenizer

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

_TRAINED_SPEC = re.compile(r"^(bpe|wordpiece):(\d+)$")

# What saved_tokenizer_files looks for, in its order, for messages.
SAVED_TOKENIZER_FILES = "tokenizer.json or tokenizer_config.json, GPT-2 vocab.json + merges.txt, or BERT vocab.txt"
HOW_TO_POINT_LOCAL = (
    "Point --tokenizer to a local folder (a save_pretrained folder with tokenizer.json, a folder with "
    "BERT vocab.txt or GPT-2 vocab.json + merges.txt, e.g. ../shared/data/tokenizers/bert-base-uncased), "
    "to a vocab.txt file, or train one on the training text with --tokenizer bpe:8192 or wordpiece:8192."
)


def load_tokenizer(spec: str, train_text: str | None = None) -> PreTrainedTokenizerBase:
    """The tokenizer named by ``spec`` (see the module docstring), with eos and pad tokens set.

    ``train_text`` is needed (and only used) for ``bpe:N`` / ``wordpiece:N``.
    """
    trained = _TRAINED_SPEC.match(spec.strip().lower())
    if trained is not None:
        kind, size = trained.group(1), int(trained.group(2))
        if train_text is None:
            raise DataError(f"tokenizer '{spec}' is trained on the training text, but none was given")
        tokenizer = train_tokenizer(kind, size, train_text)
    elif spec.lower().startswith(("bpe:", "wordpiece:")):
        raise DataError(
            f"tokenizer '{spec}': expected bpe:N or wordpiece:N with N a whole number, e.g. bpe:8192"
        )
    else:
        path = Path(spec).expanduser()
        if path.is_file():
            tokenizer = _from_file(path)
        elif path.is_dir():
            tokenizer = _from_folder(path)
        elif _looks_like_path(spec):
            raise DataError(f"tokenizer path {path} does not exist. {HOW_TO_POINT_LOCAL}")
        else:
            tokenizer = _from_hub(spec)
    return without_template_tokens(ensure_special_tokens(tokenizer))


TokenizerFiles = Literal["save_pretrained", "gpt2", "bert"]


def saved_tokenizer_files(folder: str | os.PathLike) -> TokenizerFiles | None:
    """Which tokenizer ``folder`` holds, in the order :func:`load_tokenizer` reads them: ``save_pretrained``
    (``tokenizer.json`` or ``tokenizer_config.json``), ``gpt2`` (``vocab.json`` + ``merges.txt``), ``bert``
    (``vocab.txt``); None when it holds none of them."""
    folder = Path(folder)
    if (folder / "tokenizer.json").is_file() or (folder / "tokenizer_config.json").is_file():
        return "save_pretrained"
    if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        return "gpt2"
    if (folder / "vocab.txt").is_file():
        return "bert"
    return None


def checkpoint_tokenizer(folder: str | os.PathLike, required: bool = False) -> PreTrainedTokenizerBase | None:
    """The tokenizer saved in a checkpoint (or tokenizer) folder, or None when the folder holds none; with
    ``required``, a DataError naming the folder and the files looked for instead of None."""
    if saved_tokenizer_files(folder) is None:
        if required:
            raise DataError(f"{folder} holds no tokenizer (looked for {SAVED_TOKENIZER_FILES}); save the "
                            "tokenizer beside the model (s3cmn-train does) or copy its files there")
        return None
    return load_tokenizer(str(folder))


def without_template_tokens(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """The tokenizer with a post-processor that adds nothing: ``tokenizer(text)`` == the text's own ids.

    S3CMN models are trained on text encoded with ``add_special_tokens=False`` (documents separated by
    eos, no bos), but BERT's tokenizer wraps every call in ``[CLS] ... [SEP]`` by default, and tools that
    keep the defaults (lm-eval, pipelines) would then score each continuation as ``[SEP]``. A tokenizer
    whose template adds tokens is rebuilt as a plain ``PreTrainedTokenizerFast`` (same vocabulary,
    normaliser, pre-tokeniser and special tokens), which saves and reloads with the empty template;
    ``bos_token`` is not set, so no tool prepends one. Slow tokenizers and empty templates are returned as is.
    """
    if not tokenizer.is_fast or tokenizer("a", add_special_tokens=True)["input_ids"] == tokenizer(
        "a", add_special_tokens=False
    )["input_ids"]:
        return tokenizer
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    backend = tokenizer.backend_tokenizer.__class__.from_str(tokenizer.backend_tokenizer.to_str())
    backend.post_processor = processors.TemplateProcessing(single="$A:0", pair="$A:0 $B:1", special_tokens=[])
    special = {name: getattr(tokenizer, name) for name in ("unk_token", "pad_token", "cls_token", "sep_token",
                                                             "mask_token", "eos_token") if getattr(tokenizer, name)}
    plain = PreTrainedTokenizerFast(tokenizer_object=backend, add_bos_token=False, add_eos_token=False, **special)
    plain.name_or_path = tokenizer.name_or_path
    plain.padding_side = tokenizer.padding_side
    logger.info("%s: special tokens are no longer added to every encoded text (the model never saw them there)",
                type(tokenizer).__name__)
    return plain


def _looks_like_path(spec: str) -> bool:
    """Hub names are ``name`` or ``org/name``; anything else with a separator is meant as a local path."""
    return spec.startswith(("/", ".", "~")) or spec.count("/") > 1 or "\\" in spec


def _bert_from_vocab(vocab_file: Path) -> PreTrainedTokenizerBase:
    from transformers import BertTokenizerFast

    tokens = vocab_file.read_text(encoding="utf-8").splitlines()
    # An uncased vocabulary has no upper-case ASCII letters outside its [SPECIAL] tokens.
    cased = any(re.search(r"[A-Z]", t) for t in tokens if not (t.startswith("[") and t.endswith("]")))
    # transformers v5: the argument is `vocab` (a path or a dict); `vocab_file=` is silently ignored.
    tokenizer = BertTokenizerFast(vocab=str(vocab_file), do_lower_case=not cased)
    if len(tokenizer) < len(tokens) // 2:
        raise DataError(f"{vocab_file}: read only {len(tokenizer)} tokens from {len(tokens)} lines")
    tokenizer.name_or_path = str(vocab_file)
    logger.info(
        "BERT WordPiece tokenizer from %s (%d tokens, lower-case=%s)", vocab_file, len(tokens), not cased
    )
    return tokenizer


def _from_file(path: Path) -> PreTrainedTokenizerBase:
    if path.name == "tokenizer.json":
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast(tokenizer_file=str(path))
    if path.suffix == ".txt":
        return _bert_from_vocab(path)
    raise DataError(
        f"tokenizer file {path}: expected a BERT vocab.txt or a tokenizer.json. {HOW_TO_POINT_LOCAL}"
    )


def _from_folder(folder: Path) -> PreTrainedTokenizerBase:
    files = saved_tokenizer_files(folder)
    if files == "save_pretrained":
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError) as err:
            raise DataError(f"could not load the tokenizer saved in {folder}: {err}") from err
    if files == "gpt2":
        from transformers import GPT2TokenizerFast

        tokenizer = GPT2TokenizerFast(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"))
        tokenizer.name_or_path = str(folder)
        logger.info("GPT-2 byte-level BPE tokenizer from %s (%d tokens)", folder, len(tokenizer))
        return tokenizer
    if files == "bert":
        return _bert_from_vocab(folder / "vocab.txt")
    raise DataError(f"tokenizer folder {folder} holds no tokenizer (looked for {SAVED_TOKENIZER_FILES}). "
                    f"{HOW_TO_POINT_LOCAL}")


def _from_hub(name: str) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    # Without the network only the local cache is tried: the hub client would retry for ~50 s.
    local_only = hub_offline() or not hub_reachable()
    try:
        return AutoTokenizer.from_pretrained(name, local_files_only=local_only)
    except (OSError, ValueError) as err:
        why = (
            "offline or the hub is unreachable, and it is not in the local cache" if local_only else str(err)
        )
        raise DataError(f"could not load tokenizer '{name}' ({why}). {HOW_TO_POINT_LOCAL}") from err


def ensure_special_tokens(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Give ``tokenizer`` an eos and a pad token if it lacks them, in place, and return it.

    eos: the sep token if there is one (BERT's ``[SEP]``), else a new ``<|endoftext|>`` token (the
    vocabulary grows by one: size the model with ``len(tokenizer)``). pad: the eos token.
    """
    if tokenizer.eos_token is None:
        if tokenizer.sep_token is not None:
            tokenizer.eos_token = tokenizer.sep_token
        else:
            tokenizer.add_special_tokens({"eos_token": BPE_EOS})
            logger.warning("tokenizer had no eos token: added %s as id %d", BPE_EOS, tokenizer.eos_token_id)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer

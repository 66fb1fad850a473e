"""Raw text of the train / validation / test splits, from named files, a local folder or the hub.

Sources, in order of precedence:

1. **Local** — used as soon as any of ``train_file``, ``validation_file``, ``test_file`` or
   ``data_dir`` is set. For each requested split, the named file if given, else the split's file in
   ``data_dir`` (``wiki.train.raw`` / ``wiki.valid.raw`` / ``wiki.test.raw``, or the same name with
   ``.gz``). A requested split with neither is an error; the hub is never mixed with local files.
2. **Hub** — ``datasets.load_dataset(dataset_name, dataset_config)``. A WikiText row is one line of
   the original file and already ends with ``"\\n"`` (blank lines are ``""`` in the hub export), so the
   rows are joined with ``""``.

With ``corpus = "python-stdlib"`` the splits are this Python's standard-library sources instead (see
:mod:`s3cmn.data.python_corpus`). Which text *validation* scores is decided in :mod:`s3cmn.data.validation`.

Offline, or with the hub unreachable, and no local data: a :class:`DataError` at once (no retries)
saying how to provide the data.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from s3cmn.data.errors import DataError
from s3cmn.data.hub import hub_offline, hub_reachable

if TYPE_CHECKING:
    from s3cmn.run_config import DataConfig

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
# "valid" is accepted as a name for "validation" (EvalConfig.split uses it); results keep the asked name.
_SPLIT_ALIASES = {"valid": "validation"}
_WIKI_FILES = {"train": "wiki.train.raw", "validation": "wiki.valid.raw", "test": "wiki.test.raw"}
_FILE_FLAGS = {"train": "--train-file", "validation": "--validation-file", "test": "--test-file"}

HOW_TO_PROVIDE = (
    "Provide the text locally: --data-dir DIR with wiki.train.raw, wiki.valid.raw and wiki.test.raw "
    "(plain or .gz), or name files with --train-file / --validation-file / --test-file "
    "(e.g. --train-file ../shared/data/wikitext-2-raw/wiki.valid.raw "
    "--validation-file ../shared/data/wikitext-2-raw/wiki.test.raw)."
)


def canonical_split(split: str) -> str:
    """``"train"`` / ``"validation"`` / ``"test"`` for a split name (``"valid"`` is accepted)."""
    name = _SPLIT_ALIASES.get(split, split)
    if name not in SPLITS:
        raise DataError(f"unknown split '{split}': expected one of {', '.join(SPLITS)} (or 'valid')")
    return name


def read_text_file(path: str | Path) -> str:
    """The whole file as UTF-8 text (``.gz`` decompressed); a clear error if missing, empty or not UTF-8."""
    path = Path(path).expanduser()
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise DataError(f"text file {path} {what}")
    raw = path.read_bytes()
    where = ""
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise DataError(f"text file {path} is not a valid gzip file: {err}") from err
        where = " of the decompressed text"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        bad = raw[err.start : err.start + 1].hex()
        raise DataError(
            f"text file {path} is not UTF-8: byte 0x{bad} at byte offset {err.start}{where} cannot be "
            f"decoded ({err.reason}); the file must be UTF-8 text (convert it, e.g. with iconv)"
        ) from err
    text = text.removeprefix("\ufeff")  # a UTF-8 byte-order mark is not part of the text
    if not text.strip():
        raise DataError(f"text file {path} is empty" + (" (only whitespace)" if text else ""))
    return text


def _find_in_data_dir(data_dir: Path, split: str) -> Path | None:
    for name in (_WIKI_FILES[split], _WIKI_FILES[split] + ".gz"):
        if (data_dir / name).is_file():
            return data_dir / name
    return None


def _local_paths(data: DataConfig, splits: Sequence[str]) -> dict[str, Path]:
    """The file for each requested (canonical) split, from the named files, then ``data_dir``."""
    named = {"train": data.train_file, "validation": data.validation_file, "test": data.test_file}
    data_dir = Path(data.data_dir).expanduser() if data.data_dir is not None else None
    if data_dir is not None and not data_dir.is_dir():
        raise DataError(f"--data-dir {data_dir} is not a folder. {HOW_TO_PROVIDE}")
    paths: dict[str, Path] = {}
    for split in splits:
        if named[split] is not None:
            paths[split] = Path(named[split]).expanduser()
            continue
        found = _find_in_data_dir(data_dir, split) if data_dir is not None else None
        if found is None:
            in_dir = f"; {data_dir} has no {_WIKI_FILES[split]}[.gz]" if data_dir is not None else ""
            raise DataError(
                f"the {split} split is needed but no file was given for it{in_dir}: "
                f"pass {_FILE_FLAGS[split]} FILE or a --data-dir holding {_WIKI_FILES[split]}"
            )
        paths[split] = found
    return paths


def _load_from_hub(data: DataConfig, splits: Sequence[str], optional: Sequence[str] = ()) -> dict[str, str]:
    """Each split's rows joined with ``""`` (WikiText rows already end with a newline); ``optional`` splits
    the dataset lacks are left out instead of being an error."""
    name = f"{data.dataset_name}/{data.dataset_config}"
    offline = hub_offline()
    if not offline and not hub_reachable():
        raise DataError(
            f"the Hugging Face hub is not reachable, so dataset {name} cannot be downloaded. "
            f"{HOW_TO_PROVIDE} (If it is in your Hugging Face cache, set HF_HUB_OFFLINE=1 to use that.)"
        )
    import datasets

    if offline and not datasets.config.HF_HUB_OFFLINE:
        # Offline was asked for after `datasets` read its settings: it would still retry for ~25 s.
        raise DataError(
            f"offline mode is set and no local data was given for dataset {name}. {HOW_TO_PROVIDE}"
        )
    try:
        dataset = datasets.load_dataset(data.dataset_name, data.dataset_config)
    except (ConnectionError, FileNotFoundError, ValueError) as err:
        why = "offline mode is set and it is not in the Hugging Face cache" if offline else str(err)
        raise DataError(f"dataset {name} is not available ({why}). {HOW_TO_PROVIDE}") from err
    texts: dict[str, str] = {}
    for split in splits:
        if split not in dataset and split in optional:
            continue
        if split not in dataset:
            raise DataError(f"dataset {name} has no '{split}' split (it has: {', '.join(dataset)})")
        text = "".join(dataset[split]["text"])
        if not text.strip():
            raise DataError(f"the {split} split of dataset {name} is empty")
        texts[split] = text
    return texts


def load_text_splits(data: DataConfig, splits: Sequence[str] = SPLITS) -> dict[str, str]:
    """The whole raw text of each requested split, keyed by the split names as given.

    Only the requested splits are needed: e.g. ``splits=("train", "validation")`` with just
    ``train_file`` and ``validation_file`` set. See the module docstring for where text comes from.
    """
    if not splits:
        raise DataError("no split requested")
    canonical = [canonical_split(s) for s in splits]
    if data.corpus == "python-stdlib":
        corpus = _python_corpus(data)
        return {asked: corpus.text(split) for asked, split in zip(splits, canonical, strict=True)}
    local = any(p is not None for p in (data.train_file, data.validation_file, data.test_file, data.data_dir))
    if local:
        paths = _local_paths(data, canonical)
        texts = {split: read_text_file(path) for split, path in paths.items()}
        for split, path in paths.items():
            logger.info("%s split: %s (%d characters)", split, path, len(texts[split]))
    else:
        texts = _load_from_hub(data, canonical)
    if data.detokenize:
        from s3cmn.data.wikitext import detokenize_text

        texts = {split: detokenize_text(text) for split, text in texts.items()}
    return {asked: texts[split] for asked, split in zip(splits, canonical, strict=True)}


def _python_corpus(data: DataConfig) -> Any:
    from s3cmn.data.python_corpus import load_python_corpus

    given = [flag for flag, value in (("--train-file", data.train_file), ("--validation-file", data.validation_file),
                                      ("--test-file", data.test_file), ("--data-dir", data.data_dir)) if value]
    if given:
        raise DataError(f"--corpus python-stdlib reads this Python's standard library, so {', '.join(given)} "
                        "cannot be used with it: drop them, or use --corpus text")
    return load_python_corpus()


def load_train_and_validation(
    data: DataConfig,
) -> tuple[tuple[str, dict[str, Any]], tuple[str, dict[str, Any]] | None]:
    """``((train text, its source), (validation text, its source) or None)`` for a text corpus.

    The validation text is the named ``validation_file``, else the data folder's ``wiki.valid.raw``, else the
    hub's validation split; None when there is none (the caller then holds out training text). A source is
    ``{"kind": "file", "path", "sha256"}`` or ``{"kind": "hub", "dataset", "config", "split"}``.
    """
    local = any(p is not None for p in (data.train_file, data.validation_file, data.test_file, data.data_dir))
    if not local:
        texts = _load_from_hub(data, ("train", "validation"), optional=("validation",))
        hub = {"kind": "hub", "dataset": data.dataset_name, "config": data.dataset_config}
        train = (texts["train"], {**hub, "split": "train"})
        if "validation" not in texts:
            return train, None
        return train, (texts["validation"], {**hub, "split": "validation"})
    train_path = _local_paths(data, ["train"])["train"]
    validation_path = Path(data.validation_file).expanduser() if data.validation_file is not None else None
    if validation_path is None and data.data_dir is not None:
        validation_path = _find_in_data_dir(Path(data.data_dir).expanduser(), "validation")
    pairs = []
    for split, path in (("train", train_path), ("validation", validation_path)):
        if path is None:
            continue
        text = read_text_file(path)
        logger.info("%s text: %s (%d characters)", split, path, len(text))
        pairs.append((text, {"kind": "file", "path": str(path.resolve()),
                             "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()}))
    return pairs[0], (pairs[1] if len(pairs) > 1 else None)

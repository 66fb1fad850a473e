"""Which text validation scores: the given validation text, or a held-out slice of the training text.

Model selection (the ``best`` checkpoint, early stopping, sweeps, every fitted setting) must never look at
the text the model is finally scored on. So, with ``validation_source = "auto"`` (the default), a
deterministic slice of the *training* text is held out for validation when

- no validation text is given (no ``--validation-file``, none in ``--data-dir``, no hub split), or
- the validation text is a test split (``wiki.test.raw`` and other files named ``test``, or the known
  WikiText-2 test text by SHA-256): the offline WikiText-2 recipe trains on ``wiki.valid.raw``, and its only
  other text, ``wiki.test.raw``, is kept for the final score (``s3cmn-eval``), or
- the validation text is the training text itself.

The slice is whole documents: WikiText articles (a line `` = Title = ``, one ``=`` each side, starts one; text
before the first heading stays with the first article), else paragraphs (runs of lines separated by blank
lines), else lines; for the python-stdlib corpus, whole files. The **last** ``round(fraction * count)`` of them
are held out (at least one, and at least one is left to train on); for ``wiki.valid.raw`` and the default 0.1,
the last 6 of its 60 articles. ``validation_source = "holdout"`` always holds out; ``"file"`` validates on the
given text as is (with a warning when it is a test split).

What was chosen is a JSON-ready *selection record* that training stores in every checkpoint's trainer state
(``settings.validation_text``); :func:`validation_selection` reads it back from a checkpoint folder and
:func:`describe_selection` turns it into one sentence for reports.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from s3cmn.data.errors import DataError
from s3cmn.utils.checkpoints import STATE_FILE, read_trainer_state, resolve_checkpoint

if TYPE_CHECKING:
    from s3cmn.run_config import DataConfig

logger = logging.getLogger(__name__)

WIKITEXT_HEADING = re.compile(r"^ = [^=].* = $")  # an article title line; " = = Section = = " is not one
_BLANK_LINE = re.compile(r"^\s*$")
_TEST_NAME = re.compile(r"(^|[._-])test([._-]|$)", re.IGNORECASE)
# Texts known to be test splits, by the SHA-256 of their UTF-8 bytes (WikiText-103's raw test split is the same
# text as WikiText-2's).
KNOWN_TEST_SHA256 = {
    "173c87a53759e0201f33e0ccf978e510c2042d7f2cb78229d9a50d79b9e7dd08": "the WikiText-2 raw test split",
    # the same text as joined Hugging Face rows (blank " \n" lines are empty rows there); derived from the file
    "bbf94c53a05abe9ee670d3b6343608095822c85e26de37c70b24fc571964574a": "the WikiText-2 raw test split (hub rows)",
}
SELECTION_KEY = "validation_text"  # where the record sits in the trainer state's "settings"


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------------------------------
# documents and the held-out slice


def split_documents(text: str) -> tuple[list[str], str]:
    """The text cut into documents whose concatenation is ``text``, and their unit's name.

    WikiText articles when the text has at least two heading lines, else paragraphs, else lines.
    """
    lines = text.splitlines(keepends=True)
    headings = [i for i, line in enumerate(lines) if WIKITEXT_HEADING.match(line.rstrip("\r\n"))]
    if len(headings) >= 2:
        starts, unit = [0, *headings[1:]], "articles"  # the lines before the first heading go with it
    else:
        starts = [i for i, line in enumerate(lines) if not _BLANK_LINE.match(line)
                  and (i == 0 or _BLANK_LINE.match(lines[i - 1]))]
        unit = "paragraphs"
        if len(starts) < 2:
            starts, unit = list(range(len(lines))), "lines"
        starts[0] = 0  # leading blank lines go with the first paragraph
    ends = [*starts[1:], len(lines)]
    return ["".join(lines[a:b]) for a, b in zip(starts, ends, strict=True)], unit


def held_out_count(total: int, fraction: float, unit: str = "documents") -> int:
    """``round(fraction * total)`` (Python's rounding), at least 1 and at most ``total - 1``."""
    if not 0 < fraction < 1:
        raise DataError(f"validation_holdout = {fraction}: the held-out fraction must be in (0, 1), e.g. 0.1")
    if total < 2:
        raise DataError(f"the training text has {total} {unit}: at least 2 are needed to hold one out for "
                        "validation; give a validation text (--validation-file with --validation-source file)")
    return min(total - 1, max(1, round(fraction * total)))


@dataclass(frozen=True)
class HeldOut:
    """A text split into the part to train on and the held-out documents at its end."""

    train: str
    validation: str
    unit: str
    total: int
    held: int


def hold_out(text: str, fraction: float) -> HeldOut:
    """The last ``round(fraction * count)`` documents of ``text`` (see :func:`split_documents`) held out."""
    documents, unit = split_documents(text)
    held = held_out_count(len(documents), fraction, unit)
    return HeldOut("".join(documents[:-held]), "".join(documents[-held:]), unit, len(documents), held)


def why_test_split(name: str | None, text: str) -> str | None:
    """Why this text is a test split (its file or split name, or a known test text), or None if it is not."""
    known = KNOWN_TEST_SHA256.get(sha256_text(text))
    if known is not None:
        return f"its text is {known} (by SHA-256)"
    if name is not None and _TEST_NAME.search(Path(name).name):
        return f"its name {Path(name).name!r} marks a test split"
    return None


# --------------------------------------------------------------------------------------------------
# the training and validation texts of a run


@dataclass
class TrainingTexts:
    """The text to train on, the text to validate on (None: no validation) and the selection record."""

    train: str
    validation: str | None
    selection: dict[str, Any]


def load_training_texts(data: DataConfig) -> TrainingTexts:
    """Training and validation text for ``data`` under its validation rule (module docstring); logged."""
    if data.corpus == "python-stdlib":
        texts = _python_texts(data)
    else:
        texts = _text_corpus_texts(data)
    if data.detokenize:  # after the validation rule, which recognises a test split by its raw text
        from s3cmn.data.wikitext import detokenize_text

        texts.train = detokenize_text(texts.train)
        texts.validation = detokenize_text(texts.validation) if texts.validation is not None else None
        texts.selection["detokenized"] = True
    if texts.validation is not None:
        texts.selection.update(validation_sha256=sha256_text(texts.validation),
                               validation_bytes=len(texts.validation.encode("utf-8")))
    texts.selection.update(train_sha256=sha256_text(texts.train), train_bytes=len(texts.train.encode("utf-8")))
    logger.info("validation text: %s", describe_selection(texts.selection))
    return texts


def _python_texts(data: DataConfig) -> TrainingTexts:
    from s3cmn.data.python_corpus import load_python_corpus

    corpus = load_python_corpus()
    source = corpus.record()
    if data.validation_source == "holdout":
        files = corpus.files("train")
        held = held_out_count(len(files), data.validation_holdout, "files")
        record = _holdout_record(source, "python-stdlib train files", "files", len(files), held, data,
                                 "validation_source = holdout")
        record["held_out_files"] = [f.path for f in files[-held:]]
        return TrainingTexts("".join(f.text for f in files[:-held]), "".join(f.text for f in files[-held:]),
                             record)
    record = {"rule": "split", "source": source, "validation_is_test_split": False,
              "description": f"the python-stdlib validation files ({len(corpus.files('validation'))} files, "
                             f"Python {corpus.python_version})"}
    return TrainingTexts(corpus.text("train"), corpus.text("validation"), record)


def _text_corpus_texts(data: DataConfig) -> TrainingTexts:
    from s3cmn.data.text import load_train_and_validation

    (train, train_source), given = load_train_and_validation(data)
    validation, validation_source = given if given is not None else (None, None)
    name = None
    if validation_source is not None:
        name = Path(validation_source["path"]).name if "path" in validation_source else validation_source["split"]
    test_reason = why_test_split(name, validation) if validation is not None else None
    rule, reason = data.validation_source, None
    if rule == "file":
        if validation is None:
            raise DataError("validation_source = file, but no validation text was given: pass --validation-file "
                            "FILE (or use --validation-source auto to hold out part of the training text)")
        if test_reason is not None:
            logger.warning("validating on %s although %s: best, early stopping and sweeps will select on the "
                           "text the model is scored on (--validation-source auto holds out training text "
                           "instead)", name, test_reason)
    elif rule == "auto":
        if validation is None:
            rule, reason = "holdout", "no validation text was given"
        elif test_reason is not None:
            rule, reason = "holdout", f"the validation text {name} is a test split ({test_reason}); it is left " \
                                      "for the final score"
        elif sha256_text(validation) == sha256_text(train):
            rule, reason = "holdout", f"the validation text {name} is the training text"
        else:
            rule = "file"
    else:
        reason = "validation_source = holdout"
    if rule == "file":
        record = {"rule": "file", "source": validation_source, "validation_is_test_split": test_reason is not None,
                  "description": f"the given validation text {_short(validation_source)}"
                                 + (" (a test split)" if test_reason else "")}
        return TrainingTexts(train, validation, record)
    split = hold_out(train, data.validation_holdout)
    record = _holdout_record(train_source, _short(train_source), split.unit, split.total, split.held, data, reason)
    if validation is not None:
        record["unused_validation_source"] = validation_source
        if test_reason is not None:
            logger.warning("%s: validation uses a held-out slice of the training text instead", reason)
    return TrainingTexts(split.train, split.validation, record)


def _holdout_record(source: dict[str, Any], of: str, unit: str, total: int, held: int, data: DataConfig,
                    reason: str | None) -> dict[str, Any]:
    return {"rule": "holdout", "source": source, "unit": unit, "total": total, "held_out": held,
            "holdout_fraction": data.validation_holdout, "reason": reason, "validation_is_test_split": False,
            "description": f"held out from the training text: the last {held} of {total} {unit} of {of} "
                           f"(validation_holdout = {data.validation_holdout:g})"}


def _short(source: dict[str, Any]) -> str:
    if source.get("kind") == "file":
        return Path(source["path"]).name
    if source.get("kind") == "hub":
        return f"{source['dataset']}/{source['config']} [{source['split']}]"
    return str(source)


# --------------------------------------------------------------------------------------------------
# reading the record back


def validation_selection(checkpoint: str | Path) -> dict[str, Any] | None:
    """The selection record stored in a checkpoint (a checkpoint folder, or a run folder: its ``best``).

    None for checkpoints written before the record was kept, or trained without validation text; a
    :class:`~s3cmn.utils.checkpoints.CheckpointError` where there is no readable training checkpoint.
    """
    folder = Path(checkpoint).expanduser()
    if not (folder / STATE_FILE).is_file() and (folder / "best").is_dir():
        folder = folder / "best"  # a run folder: the checkpoint chosen on the validation text
    state = read_trainer_state(resolve_checkpoint(folder))
    return (state.get("settings") or {}).get(SELECTION_KEY)


def describe_selection(record: dict[str, Any] | None) -> str:
    """One sentence: which text validation (and so the ``best`` checkpoint) was chosen on."""
    if record is None:
        return "not recorded (a checkpoint written before the validation text was recorded)"
    if record.get("rule") == "none":
        return "none (the run had no validation text)"
    text = record["description"]
    if record.get("reason"):
        text += f", because {record['reason']}"
    return text

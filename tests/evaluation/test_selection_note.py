"""s3cmn-eval's report says which text the checkpoint was selected on."""

from __future__ import annotations

import json
from pathlib import Path

from s3cmn.data.validation import SELECTION_KEY
from s3cmn.evaluation.run import selection_note
from s3cmn.training.checkpoint import STATE_FILE


def test_a_bare_model_folder_says_not_recorded(tmp_path: Path) -> None:
    assert "not recorded" in selection_note(tmp_path)


def test_the_recorded_held_out_slice_is_named(tmp_path: Path) -> None:
    record = {"rule": "holdout", "description": "held out from the training text: the last 6 of 60 articles",
              "reason": "the validation text wiki.test.raw is a test split"}
    (tmp_path / STATE_FILE).write_text(json.dumps({"settings": {SELECTION_KEY: record}}), encoding="utf-8")
    note = selection_note(tmp_path)
    assert "the last 6 of 60 articles" in note and "wiki.test.raw is a test split" in note

"""--help shows the values the chosen (or default) preset will use, not the global dataclass defaults."""

from __future__ import annotations

import json
import re

import pytest

from s3cmn.presets import preset_training
from s3cmn.run_config import TrainingConfig


def help_text(main, argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    return re.sub(r"\s+", " ", capsys.readouterr().out)


def test_train_help_shows_the_default_presets_values(capsys) -> None:
    from s3cmn.cli.train import main

    text = help_text(main, ["--help"], capsys)
    tiny = preset_training("tiny")
    assert tiny["batch_size"] != TrainingConfig().batch_size  # the case the help used to get wrong
    assert f"micro-batch (int; default {tiny['batch_size']} from preset tiny)" in text
    assert f"training block (int; default {tiny['sequence_length']} from preset tiny)" in text
    assert "dropout in the blocks (float; default 0.1)" in text  # a field the preset leaves alone


def test_help_follows_preset_and_config_file(capsys, tmp_path) -> None:
    from s3cmn.cli.train import main

    small_batch = preset_training("small")["batch_size"]
    assert f"(int; default {small_batch} from preset small)" in help_text(main, ["--preset", "small", "--help"], capsys)
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"training": {"batch_size": 3}}))
    text = help_text(main, ["--config-path", str(config), "--help"], capsys)
    squeezed = text.replace(" ", "")  # argparse wraps the long path at its hyphens
    assert f"micro-batch(int;default3from{config})" in squeezed


def test_config_help_without_preset_shows_the_global_defaults(capsys) -> None:
    from s3cmn.cli.config import main

    text = help_text(main, ["--help"], capsys)
    assert f"micro-batch (int; default {TrainingConfig().batch_size})" in text

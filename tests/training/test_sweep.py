"""s3cmn-sweep: a 3-trial study on real WikiText-2 text finishes, resumes, and rejects bad search spaces."""

from __future__ import annotations

import json

import optuna
import pytest

from s3cmn.cli import sweep as sweep_cli
from s3cmn.settings_file import Settings
from s3cmn.training.sweep import apply_params, parse_param, validate_space
from s3cmn.utils.fields import ConfigError


def _argv(shared_data, out, n_trials: int) -> list[str]:
    raw = shared_data / "wikitext-2-raw"
    return [
        "--preset", "tiny", "--n-trials", str(n_trials), "--sampler", "random", "--pruner", "none",
        "--param", "learning_rate=log:1e-3:3e-3", "--param", "width_scale=choice:0.5,1.0",
        "--train-file", str(raw / "wiki.valid.raw"), "--validation-file", str(raw / "wiki.test.raw"),
        "--tokenizer", str(shared_data / "tokenizers" / "bert-base-uncased"),
        "--modify", json.dumps({"num_layers": 1, "hidden_dim": 32, "embedding_dim": 32, "spiking_units": 16,
                                "liquid_units": 16, "use_memory": False, "hyena_filter_length": 16}),
        "--max-steps", "3", "--batch-size", "2", "--sequence-length", "32", "--eval-interval", "3",
        "--eval-batches", "2", "--num-samples", "0", "--mixed-precision", "no", "--output-dir", str(out),
    ]


@pytest.mark.slow
def test_three_trial_sweep_finishes_and_resumes(shared_data, tmp_path, capsys) -> None:
    out = tmp_path / "sweep"
    assert sweep_cli.main(_argv(shared_data, out, 2)) == 0
    study = optuna.load_study(study_name="s3cmn", storage=f"sqlite:///{out / 'study.db'}")
    first = [(t.number, t.params, t.value) for t in study.trials]
    assert len(first) == 2 and all(t.state.name == "COMPLETE" for t in study.trials)
    assert sweep_cli.main(_argv(shared_data, out, 3)) == 0  # resume: one more trial, the first two kept
    study = optuna.load_study(study_name="s3cmn", storage=f"sqlite:///{out / 'study.db'}")
    assert len(study.trials) == 3
    assert [(t.number, t.params, t.value) for t in study.trials[:2]] == first
    table = (out / "trials.md").read_text()
    # selected on held-out training articles, never on the wiki.test.raw given as --validation-file
    assert "Validation text" in table and "the last 6 of 60 articles of wiki.valid.raw" in table
    assert table.count("COMPLETE") == 3 and "width_scale" in table and "tokens/s" in table
    best = (out / "best_config.yaml").read_text()
    assert "learning_rate" in best and (out / "optimization_history.png").is_file()
    assert "val ppl" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"hiden_dim": {"choices": [1]}}, "did you mean 'hidden_dim'"),
        ({"learning_rate": {"low": 1e-3, "high": 1e-3}}, "empty range"),
        ({"scheduler": {"choices": []}}, "choices list is empty"),
        ({"learning_rate": {"low": 0.0, "high": 1.0, "log": True}}, "log range needs low > 0"),
        ({}, "search space is empty"),
    ],
)
def test_bad_search_space(space: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_space(space)


def test_bad_space_through_the_cli(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        sweep_cli.main(["--param", "learning_rate=log:3e-3:1e-3", "--output-dir", str(tmp_path)])
    assert exit_.value.code == 2 and "empty range" in capsys.readouterr().err


def test_param_parsing_and_width_scale() -> None:
    assert parse_param("learning_rate=log:1e-4:3e-3") == ("learning_rate", {"low": 1e-4, "high": 3e-3, "log": True})
    assert parse_param("num_layers=int:1:4") == ("num_layers", {"low": 1, "high": 4})
    assert parse_param("scheduler=choice:cosine,constant") == ("scheduler", {"choices": ["cosine", "constant"]})
    base = Settings()
    base.update({"hidden_dim": 128, "embedding_dim": 128, "num_attention_heads": 4, "spiking_units": 64}, "t")
    half = apply_params(base, {"width_scale": 0.5, "learning_rate": 1e-3}).build()
    assert (half.model.hidden_dim, half.model.embedding_dim, half.model.spiking_units) == (64, 64, 32)
    assert half.training.learning_rate == 1e-3
    wide = apply_params(base, {"width_scale": 1.5}).build().model
    assert wide.hidden_dim == 192 and wide.hidden_dim % wide.num_attention_heads == 0

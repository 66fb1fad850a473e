"""s3cmn-train --task / s3cmn-eval --task end to end, and the language-model path left as it was."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from s3cmn.cli.eval import main as eval_main
from s3cmn.cli.train import main as train_main
from tests.conftest import run_main

TINY_FLAGS = ["--hidden-dim", "16", "--num-layers", "1", "--num-attention-heads", "2", "--spiking-units", "16",
              "--hyena-filter-dim", "8", "--mamba-d-state", "4", "--num-epochs", "1", "--log-level", "WARNING"]


_run = run_main


@pytest.mark.parametrize(("flags", "baseline"), [(["--task", "vision"], "vision-cnn"),
                                                  (["--preset", "robotics-pendulum", "--train-trajectories", "8",
                                                    "--validation-trajectories", "2", "--test-trajectories", "4",
                                                    "--trajectory-length", "30", "--horizon", "10"], "dynamics-gru"),
                                                  (["--preset", "robotics-pendulum-unseen", "--train-trajectories", "8",
                                                    "--validation-trajectories", "2", "--test-trajectories", "3",
                                                    "--trajectory-length", "30", "--horizon", "10"], "dynamics-gru")])
def test_train_then_eval_a_task(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch, flags: list[str],
                                baseline: str) -> None:
    import s3cmn.tasks.adapt as adapt

    monkeypatch.setattr(adapt, "LRS", (1e-3,))  # the unseen pendulum's adaptation grid, cut to its shape
    monkeypatch.setattr(adapt, "STEPS", (5,))  # (the choice rule is tests/tasks/test_adapt.py's)
    out_dir = tmp_path / "run"
    code, out, err = _run(train_main, [*flags, *TINY_FLAGS, "--output-dir", str(out_dir),
                                       "--save-config", str(tmp_path / "settings.json")], capsys)
    assert code == 0, err
    assert f"baseline ({baseline})" in out and "checkpoints in" in out
    saved = json.loads((out_dir / "task_run.json").read_text())
    assert saved["model"]["hidden_dim"] == 16 and not saved["model"]["use_memory"]  # flags over the task preset
    assert json.loads((tmp_path / "settings.json").read_text())["task"]["task"] == saved["task"]["task"]
    code, evaluated, err = _run(eval_main, ["--task", saved["task"]["task"], "--checkpoint", str(out_dir)], capsys)
    assert code == 0, err
    assert evaluated.strip() in out  # the same test table, from the checkpoints alone
    assert ("Unseen pendulum (length 1.5 m, damping 0.3)" in out) == ("robotics-pendulum-unseen" in flags)


def test_task_errors_are_one_line(tmp_path: Path, capsys) -> None:
    code, _, err = _run(train_main, ["--task", "vision", "--conv-channels", "8,16,4", "--output-dir",
                                     str(tmp_path)], capsys)
    assert code == 2 and err.count("\n") == 1 and "one entry per conv layer" in err
    code, _, err = _run(eval_main, ["--task", "robotics", "--checkpoint", str(tmp_path / "none")], capsys)
    assert code == 2 and "holds no task run" in err and "Traceback" not in err


@pytest.fixture(scope="module")
def lm_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny untrained language model saved the usual way (save_pretrained + its tokenizer)."""
    from s3cmn import S3CMNConfig, S3CMNForCausalLM
    from s3cmn.data import load_tokenizer

    shared = Path(__file__).resolve().parents[2].parent / "shared" / "data"
    tokenizer = load_tokenizer(str(shared / "tokenizers" / "bert-base-uncased"))
    torch.manual_seed(0)
    config = S3CMNConfig.from_preset("tiny", vocab_size=len(tokenizer), hidden_dim=32, embedding_dim=32,
                                     num_layers=1, spiking_units=16, hyena_filter_dim=8, hyena_filter_length=32,
                                     mamba_d_state=4, use_memory=False)
    folder = tmp_path_factory.mktemp("lm") / "ckpt"
    S3CMNForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_an_lm_checkpoint_still_evaluates_without_task(lm_checkpoint: Path, shared_data: Path, tmp_path: Path,
                                                       capsys) -> None:
    flags = ["--data-dir", str(shared_data / "wikitext-2-raw"), "--max-eval-tokens", "500", "--context-length",
             "32", "--memory", "off", "--cache-dir", str(tmp_path / "cache"), "--no-progress", "--log-level",
             "WARNING"]
    for how in ([str(lm_checkpoint)], ["--checkpoint", str(lm_checkpoint)]):
        code, out, err = _run(eval_main, [*how, *flags], capsys)
        assert code == 0, err
        assert "## Perplexity" in out
    code, _, err = _run(eval_main, ["--task", "vision", str(lm_checkpoint)], capsys)
    assert code == 2 and "holds no task run" in err

"""The examples in examples/ run at toy sizes, and the documentation site builds with warnings as errors."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


def run(args: list[str], timeout: int = 300) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{args[0]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def trained(tmp_path_factory, shared_data: Path) -> tuple[Path, str]:
    """examples/train_and_evaluate.py at toy size: its output folder and what it printed."""
    out = tmp_path_factory.mktemp("example") / "run"
    text = run([str(EXAMPLES / "train_and_evaluate.py"),
                "--train-file", str(shared_data / "wikitext-2-raw" / "wiki.valid.raw"),
                "--eval-file", str(shared_data / "wikitext-2-raw" / "wiki.test.raw"),
                "--tokenizer", str(shared_data / "tokenizers" / "bert-base-uncased"),
                "--max-steps", "3", "--hidden-dim", "32", "--eval-tokens", "512", "--output-dir", str(out)])
    return out, text


def test_quickstart_api() -> None:
    text = run([str(EXAMPLES / "quickstart_api.py"), "--width", "32"])
    assert "save -> load gives identical logits: True" in text
    assert "generated 16 tokens" in text


def test_train_and_evaluate(trained) -> None:
    folder, text = trained
    assert "trained 3 steps" in text
    assert "memory off: token perplexity" in text and "memory on : token perplexity" in text
    assert (folder / "best" / "model.safetensors").is_file() and (folder / "best" / "trainer_state.json").is_file()


@pytest.mark.skipif(importlib.util.find_spec("lm_eval") is None, reason="lm-eval (the lmeval extra) is not installed")
def test_lm_eval_harness(trained) -> None:
    folder, _ = trained
    text = run([str(EXAMPLES / "lm_eval_harness.py"), str(folder / "best")])
    assert "max_length 128 (the trained sequence length)" in text
    assert text.count("log p(") == 3 and "rolling log-likelihood" in text


@pytest.mark.skipif(importlib.util.find_spec("torchao") is None, reason="torchao is not installed")
def test_compare_int8_backends(trained, shared_data: Path) -> None:
    folder, _ = trained
    text = run([str(EXAMPLES / "compare_int8_backends.py"), str(folder / "best"),
                "--text", str(shared_data / "wikitext-2-raw" / "wiki.test.raw"), "--tokens", "512"])
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert [r.split("|")[1].strip() for r in rows[1:]] == ["fp32", "torch", "torchao"]


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None, reason="mkdocs (the docs extra) is not installed")
def test_docs_build_strict(tmp_path) -> None:
    """mkdocs build --strict: every page, link and generated reference resolves (CI also runs it)."""
    run(["-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")])
    config_page = (tmp_path / "site" / "reference" / "configuration" / "index.html").read_text(encoding="utf-8")
    cli_page = (tmp_path / "site" / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    from s3cmn.run_config import TrainingConfig
    from s3cmn.utils.fields import settings_fields

    assert all(f"<code>{f.name}</code>" in config_page for f in settings_fields(TrainingConfig))
    assert "--max-time" in cli_page and "s3cmn-memory inspect" in cli_page

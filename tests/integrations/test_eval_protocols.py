"""s3cmn-eval --protocol lm-eval gives the numbers lm-evaluation-harness's evaluator gives (wikitext_local task).

Tolerance 1e-4 relative: the harness takes the log-softmax in float32, s3cmn in float64 (measured: 1e-8).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("lm_eval", reason="the lmeval extra (pip install -e '.[lmeval]') is not installed")

from s3cmn.cli.eval import main  # noqa: E402
from tests.conftest import run_main  # noqa: E402

DOCUMENTS = 3  # the first three test articles: the harness's --limit 3
TRAINED_LENGTH = 32  # conftest.TRAINED_LENGTH


@pytest.mark.parametrize("max_length", [0, 64], ids=["trained-length", "twice-trained-length"])
def test_lm_eval_protocol_equals_the_harness(checkpoint: Path, shared_data: Path, tmp_path: Path, capsys,
                                             max_length: int) -> None:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from s3cmn.integrations import TASKS_DIR
    from s3cmn.integrations.lm_eval import S3CMNLM

    data_dir = shared_data / "wikitext-2-raw"
    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False, metadata={"data_dir": str(data_dir)})
    lengths = {"max_length": max_length} if max_length else {}  # the wrapper's max_length model argument
    harness = simple_evaluate(model=S3CMNLM(pretrained=str(checkpoint), batch_size=4, device="cpu", **lengths),
                              tasks=["wikitext_local"], task_manager=manager, limit=DOCUMENTS, bootstrap_iters=0,
                              log_samples=False)["results"]["wikitext_local"]  # fmt: skip
    args = [str(checkpoint), "--protocol", "lm-eval", "--max-documents", str(DOCUMENTS), "--data-dir", str(data_dir),
            "--eval-batch-size", "4", "--context-length", str(max_length), "--report-dir", str(tmp_path),
            "--no-progress", "--log-level", "WARNING"]
    code, out, err = run_main(main, args, capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "report.json").read_text())
    ours = report["runs"][0]["perplexity"]
    assert report["protocol"] == report["settings"]["protocol"] == "lm-eval"
    assert report["data"]["documents"] == DOCUMENTS
    assert report["settings"]["max_length"] == (max_length or TRAINED_LENGTH)  # 0: the trained length
    assert ours["word_perplexity"] == pytest.approx(harness["word_perplexity,none"], rel=1e-4)
    assert ours["bits_per_byte"] == pytest.approx(harness["bits_per_byte,none"], rel=1e-4)
    assert ours["byte_perplexity"] == pytest.approx(harness["byte_perplexity,none"], rel=1e-4)
    assert "protocol: **lm-eval**" in out and (tmp_path / "report.md").read_text() in out

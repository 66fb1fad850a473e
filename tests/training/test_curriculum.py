"""Curriculum schedules: the lengths and order they promise, determinism, exact resume mid-curriculum."""

from __future__ import annotations

import json

import pytest
import torch

from s3cmn.run_config import TrainingConfig
from s3cmn.training import TrainingError, fit
from s3cmn.training.curriculum import DifficultyCurriculum, pacing, unigram_surprisal, warmup_length
from tests.training.conftest import tiny_lm


def test_warmup_length_grows_to_full_length() -> None:
    t = TrainingConfig(sequence_length=128, curriculum="seq-length", curriculum_tokens=1000,
                       curriculum_min_length=16, curriculum_pacing="linear")
    lengths = [warmup_length(tokens, t) for tokens in (0, 250, 500, 1000, 5000)]
    assert lengths == [16, 48, 72, 128, 128]  # 16 + 112·f, rounded to a multiple of 8
    assert all(length % 8 == 0 for length in lengths)
    assert lengths == sorted(lengths)


def test_pacing_functions() -> None:
    assert pacing(0, 0.1, "sqrt") == pytest.approx(0.1)
    assert pacing(1, 0.1, "sqrt") == 1.0 and pacing(2, 0.1, "linear") == 1.0
    assert pacing(0.5, 0.0, "sqrt") == pytest.approx(0.5**0.5)
    assert pacing(0.5, 0.2, "linear") == pytest.approx(0.6)


def test_difficulty_orders_easiest_first_and_widens() -> None:
    # block 0: the most frequent token only (easy); block 2: rare tokens (hard)
    blocks = torch.tensor([[1] * 8, [1, 1, 1, 1, 2, 2, 3, 3], [4, 5, 6, 7, 8, 9, 10, 11]] + [[1, 2] * 4] * 5)
    surprisal = unigram_surprisal(blocks, 12)
    assert surprisal[0] < surprisal[1] < surprisal[2]
    t = TrainingConfig(curriculum="difficulty", curriculum_tokens=100, curriculum_min_fraction=0.125, seed=3)
    curriculum = DifficultyCurriculum(blocks, 12, t)
    assert curriculum.order[0] == 0 and curriculum.order[-1] == 2
    early = {i for s in range(20) for i in curriculum.indices(s, 0, 0, 4)}
    assert early == {0}  # competence 1/8 of 8 blocks: only the easiest
    late = {i for s in range(50) for i in curriculum.indices(s, 0, 100, 4)}
    assert 2 in late and len(late) == 8
    assert curriculum.indices(5, 1, 40, 4) == curriculum.indices(5, 1, 40, 4)  # deterministic


def test_curriculum_needs_a_ramp(tmp_path) -> None:
    model = tiny_lm()
    with pytest.raises(TrainingError, match="curriculum-tokens"):
        fit(model, torch.randint(0, 50, (16, 32)), None, _settings(tmp_path, curriculum="seq-length"))


def _settings(tmp_path, **overrides) -> TrainingConfig:
    fields = dict(learning_rate=3e-3, batch_size=2, sequence_length=32, warmup_steps=1, max_steps=6, save_interval=3,
                  log_interval=1, output_dir=str(tmp_path / "run"), mixed_precision="no", seed=0)
    return TrainingConfig(**{**fields, **overrides})


@pytest.mark.parametrize("kind", ["seq-length", "difficulty"])
def test_resume_mid_curriculum_equals_uninterrupted(tmp_path, kind: str) -> None:
    blocks = torch.randint(0, 50, (24, 32), generator=torch.Generator().manual_seed(0))
    extra = dict(curriculum=kind, curriculum_tokens=300, curriculum_min_length=8)
    straight = tiny_lm()
    fit(straight, blocks, None, _settings(tmp_path / "a", **extra))
    stopped = tiny_lm()
    fit(stopped, blocks, None, _settings(tmp_path / "b", **extra), should_stop=lambda step, rec: step == 3)
    resumed = tiny_lm()
    fit(resumed, blocks, None, _settings(tmp_path / "b", resume=True, **extra))
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    records = [json.loads(line) for line in (tmp_path / "a" / "run" / "metrics.jsonl").read_text().splitlines()]
    if kind == "seq-length":
        lengths = [r["sequence_length"] for r in records]
        assert lengths[0] == 8 and lengths == sorted(lengths)
    else:
        assert records[0]["competence"] < records[-1]["competence"]

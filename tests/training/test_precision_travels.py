"""The run's PrecisionChoice travels whole: training steps and validation enter its one autocast context."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import torch

from s3cmn.training.validate import evaluate_loss
from s3cmn.utils.precision import CpuBf16Support, resolve_precision

TRAINING = Path(__file__).resolve().parents[2] / "s3cmn" / "training"
AMX = CpuBf16Support("AVX512", ("avx512_bf16", "amx_bf16"), fp32_gflops=150.0, bf16_gflops=2000.0)


class AutocastProbe(torch.nn.Module):
    """A stand-in LM whose forward records the autocast state it runs under."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.seen: list[tuple[bool, torch.dtype]] = []

    def forward(self, batch, labels=None, use_cache=False, write_memory=False):
        self.seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return SimpleNamespace(loss=self.weight + 1.0)


def test_validation_runs_under_the_choices_autocast() -> None:
    blocks = torch.zeros(4, 8, dtype=torch.long)
    model = AutocastProbe()
    bf16 = resolve_precision("bf16", "cpu", cpu_support=AMX)
    assert evaluate_loss(model, blocks, batch_size=2, precision=bf16) == 1.0
    assert model.seen == [(True, torch.bfloat16)] * 2
    model.seen.clear()
    evaluate_loss(model, blocks, batch_size=2, precision=resolve_precision("no", "cpu"))
    evaluate_loss(model, blocks, batch_size=2)  # no choice: plain fp32
    assert [enabled for enabled, _ in model.seen] == [False] * 4


def test_the_training_code_builds_no_autocast_of_its_own() -> None:
    # PrecisionChoice.autocast() is the one place the context is made from the choice
    for path in sorted(TRAINING.glob("*.py")):
        assert not re.search(r"torch\.autocast\(", path.read_text(encoding="utf-8")), path.name

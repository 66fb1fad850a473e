"""A task run with num_epochs = 0 (what --max-time alone gives) has no epoch limit: its budget ends it."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from s3cmn.run_config import TrainingConfig
from s3cmn.tasks.train import fit_task


def test_no_epoch_limit_runs_until_the_step_budget() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))

    def batches(generator):
        for i in range(0, 16, 8):  # two steps an epoch
            yield x[i : i + 8], y[i : i + 8]

    training = TrainingConfig(num_epochs=0, max_steps=7, warmup_steps=0, learning_rate=0.1)
    result = fit_task(model, lambda m, b: F.cross_entropy(m(b[0]), b[1]), batches, 2, lambda m: 0.0, training)
    assert (result.stopped, result.steps, result.epochs) == ("max_steps", 7, 4)

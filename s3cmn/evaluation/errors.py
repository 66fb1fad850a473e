"""The error of evaluation settings that cannot be scored (a checkpoint that cannot be read raises
:class:`~s3cmn.utils.checkpoints.CheckpointError`)."""

from __future__ import annotations


class EvaluationError(ValueError):
    """A setting (window, memory mode, read-out) cannot be evaluated; the message says why and what to do."""

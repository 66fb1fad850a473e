"""Training: the loop, checkpoints, schedules and metrics."""

from s3cmn.training.checkpoint import CheckpointError
from s3cmn.training.loop import TrainingError, TrainResult, fit, prepare_data, train

__all__ = ["CheckpointError", "TrainingError", "TrainResult", "fit", "prepare_data", "train"]

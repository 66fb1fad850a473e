"""Vision and robotics tasks on the S³CMN blocks: settings, data, models, baselines, training and metrics."""

from s3cmn.tasks.config import TASK_PRESETS, TaskConfig, task_preset

__all__ = ["TASK_PRESETS", "TaskConfig", "task_preset"]

"""Glue for the ecosystem's own tools: lm-evaluation-harness (``s3cmn.integrations.lm_eval``) and its tasks.

Importing this package imports neither lm-eval nor transformers' pipelines; each module does so itself.
"""

from pathlib import Path

TASKS_DIR = Path(__file__).parent / "tasks"
"""lm-eval task definitions shipped with s3cmn (pass it as ``--include_path``)."""

__all__ = ["TASKS_DIR"]

"""Training metrics: JSON lines, CSV and (when installed) TensorBoard, in the output folder."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


class MetricsLogger:
    """Append one record per call to ``metrics.jsonl`` and ``metrics.csv``; mirror scalars to TensorBoard."""

    def __init__(self, folder: str | Path, enabled: bool = True) -> None:
        self.folder = Path(folder)
        self.enabled = enabled
        self.writer = None
        self._csv_fields: list[str] | None = None
        if not enabled:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            logger.info("tensorboard is not installed: metrics go to metrics.jsonl and metrics.csv only")
        else:
            self.writer = SummaryWriter(str(self.folder / "tensorboard"))

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.folder / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        csv_path = self.folder / "metrics.csv"
        if self._csv_fields is None:
            self._csv_fields = ["kind", "step", "tokens", "loss", "ppl", "lr", "tokens_per_s", "spike_rate",
                                "memory_hit_rate", "elapsed_s"]
            if not csv_path.exists():
                with open(csv_path, "w", newline="", encoding="utf-8") as f:
                    csv.writer(f).writerow(self._csv_fields)
        with open(csv_path, "a", newline="", encoding="utf-8") as f:
            csv.writer(f).writerow([record.get(k, "") for k in self._csv_fields])
        if self.writer is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "step":
                    self.writer.add_scalar(f"{record.get('kind', 'train')}/{key}", value, record.get("step", 0))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

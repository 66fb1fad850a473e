"""Stop signals: SIGINT / SIGTERM end a training run cleanly (the step finished or abandoned, ``last`` written)."""

from __future__ import annotations

import contextlib
import logging
import signal
from typing import Any

logger = logging.getLogger(__name__)


class StopSignal:
    """SIGINT / SIGTERM: the first stops the run after the current step; the second also abandons that step.

    First signal: the optimiser step under way finishes, a validation under way is cut short (not recorded),
    no final validation runs, and the ``last`` checkpoint is written. Second signal: the step under way is
    abandoned too (its gradients dropped, the data position rewound to its start; single process only). A
    third SIGINT raises KeyboardInterrupt. The checkpoint write itself is atomic either way.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self.count = 0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignal:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread: no handler
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    @property
    def hurry(self) -> bool:
        """A second signal came: skip everything but the checkpoint write."""
        return self.count >= 2

    def _handle(self, signum: int, frame: Any) -> None:
        self.count += 1
        self.received = self.received or signum
        name = signal.Signals(signum).name
        if self.count == 1:
            logger.warning("received %s: stopping after this step and writing the checkpoint (no validation); "
                           "send it again to abandon the step under way", name)
        elif self.count == 2:
            logger.warning("received %s again: abandoning the step under way; writing the checkpoint", name)
        elif signum == signal.SIGINT:
            raise KeyboardInterrupt

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

"""Sliding windows over a token stream: every target scored exactly once, with ``context - stride`` tokens of
left context at least (the rule of :mod:`s3cmn.evaluation.perplexity`, shared with the next-token memory)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Window:
    """Stream positions ``[begin, end)`` are the model input; targets ``first_target .. end-1`` are scored."""

    begin: int
    end: int
    first_target: int

    @property
    def length(self) -> int:
        return self.end - self.begin

    @property
    def num_scored(self) -> int:
        return self.end - self.first_target


def sliding_windows(stream_length: int, context_length: int, stride: int) -> list[Window]:
    """The windows over a stream of ``stream_length`` tokens (prefix included): targets 1 .. length-1, each once.

    Window k starts at ``k * stride`` and ends at ``min(start + context_length, length)``; it scores the targets
    after the previous window's end (all of its targets for the first one).
    """
    if stream_length < 2:
        raise ValueError(f"a stream needs at least 2 tokens (prefix + one to score), got {stream_length}")
    if context_length < 2:
        raise ValueError(f"context_length must be at least 2, got {context_length}")
    if not 1 <= stride < context_length:
        raise ValueError(f"stride must be in [1, context_length - 1] = [1, {context_length - 1}] so that every "
                         f"token is scored once, got {stride}")  # fmt: skip
    windows, begin, scored_to = [], 0, 1
    while True:
        end = min(begin + context_length, stream_length)
        windows.append(Window(begin, end, scored_to))
        if end == stream_length:
            return windows
        scored_to, begin = end, begin + stride


def window_batches(windows: list[Window], batch_size: int) -> list[list[Window]]:
    """Consecutive windows grouped up to ``batch_size``, a batch holding windows of one length and score count."""
    batches: list[list[Window]] = []
    for w in windows:
        last = batches[-1] if batches else None
        if last and len(last) < batch_size and (last[0].length, last[0].num_scored) == (w.length, w.num_scored):
            last.append(w)
        else:
            batches.append([w])
    return batches

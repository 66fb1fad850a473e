"""The one error type of the data pipeline, so a CLI can catch it and print the message alone."""

from __future__ import annotations


class DataError(ValueError):
    """Text, tokenizer or token data is missing, unreadable or too small; the message says how to fix it."""

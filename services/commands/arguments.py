"""Value types the ``emd`` commands share for their arguments (argparse ``type=``).

Each raises ``argparse.ArgumentTypeError``, so bad input is argparse's usage error: the message and exit 2.
"""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Callable

__all__ = ["iso_datetime", "whole_number"]


def iso_datetime(text: str) -> dt.datetime:
    """An ISO 8601 date or date-time (``2026-03-01``, ``2026-03-01T10:00+03:00``, ``…Z``), in UTC when it
    names no offset."""
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date/time: {text!r}") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def whole_number(minimum: int) -> Callable[[str], int]:
    """The type of a whole-number argument of at least ``minimum`` (``type=whole_number(1)``)."""

    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if n < minimum:
            raise argparse.ArgumentTypeError(f"must be {minimum} or more, got {n}")
        return n

    return parse

"""The argument types every `emd` command shares (services.commands.arguments)."""

from __future__ import annotations

import argparse
import datetime as dt

import pytest

from services.commands.arguments import iso_datetime


def test_iso_datetime_keeps_an_offset_and_reads_a_bare_time_as_utc():
    """An ISO date-time keeps its offset (Z included); a date or date-time without one is taken as UTC."""
    assert iso_datetime("2026-03-01T10:00+03:00") == dt.datetime(2026, 3, 1, 7, 0, tzinfo=dt.UTC)
    assert iso_datetime("2026-03-01T10:00:00Z") == dt.datetime(2026, 3, 1, 10, 0, tzinfo=dt.UTC)
    assert iso_datetime("2026-03-01") == dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    assert iso_datetime("2026-03-01T10:00").tzinfo is dt.UTC


def test_iso_datetime_refuses_anything_else_as_a_usage_error():
    """Text that is not ISO 8601 is argparse's usage error, naming the text."""
    with pytest.raises(argparse.ArgumentTypeError, match="'yesterday'"):
        iso_datetime("yesterday")

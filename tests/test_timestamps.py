"""The timestamp family: each named format, and that each refuses a time without a zone."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from producer import events
from services import timestamps

MOSCOW = ZoneInfo("Europe/Moscow")
#: 13:00:00.123456 in Moscow = 10:00:00.123456 UTC
WHEN = dt.datetime(2026, 11, 22, 13, 0, 0, 123456, tzinfo=MOSCOW)


def test_soap_time_is_utc_with_milliseconds_and_z():
    """A SOAP xs:dateTime is written in UTC with milliseconds and Z, the same text as an event's time."""
    assert timestamps.soap_time(WHEN) == "2026-11-22T10:00:00.123Z"
    assert timestamps.soap_time(WHEN) == events.timestamp(WHEN)


def test_signature_time_has_the_whole_seconds_a_cms_holds():
    """A signature's time is UTC to the whole second, with Z."""
    assert timestamps.signature_time(WHEN) == "2026-11-22T10:00:00Z"


def test_for_people_is_seconds_in_utc_or_in_the_zone_asked_for():
    """People read seconds: Z in UTC, the zone's offset otherwise; None stays None."""
    assert timestamps.for_people(WHEN) == "2026-11-22T10:00:00Z"
    assert timestamps.for_people(WHEN, MOSCOW) == "2026-11-22T13:00:00+03:00"
    assert timestamps.for_people(None) is None


def test_stored_times_sort_as_text_in_time_order():
    """A stored time has one width (microseconds even when zero), so text order is time order."""
    early = dt.datetime(2026, 11, 22, 10, 0, 0, tzinfo=dt.UTC)
    late = dt.datetime(2026, 11, 22, 13, 0, 0, 5, tzinfo=MOSCOW)
    assert timestamps.stored(early) == "2026-11-22T10:00:00.000000+00:00"
    assert timestamps.stored(WHEN) == "2026-11-22T10:00:00.123456+00:00"
    assert sorted([timestamps.stored(late), timestamps.stored(early)]) == [
        timestamps.stored(early),
        timestamps.stored(late),
    ]
    assert dt.datetime.fromisoformat(timestamps.stored(WHEN)) == WHEN


def test_file_stamps_have_no_separators_and_sort_in_time_order():
    """A file-name stamp is UTC digits with one T, so names sort in time order."""
    assert timestamps.file_stamp(WHEN) == "20261122T100000123456"


def test_cda_minute_keeps_the_zone_and_drops_the_seconds():
    """An HL7 TS for effectiveTime is to the minute in the time's own zone."""
    assert timestamps.cda_minute(WHEN) == "202611221300+0300"


@pytest.mark.parametrize(
    "write",
    [
        timestamps.soap_time,
        timestamps.signature_time,
        timestamps.for_people,
        timestamps.stored,
        timestamps.file_stamp,
        timestamps.cda_minute,
    ],
)
def test_a_time_without_a_zone_is_refused(write):
    """A naive datetime is a ValueError: no format guesses which zone it meant."""
    with pytest.raises(ValueError):
        write(dt.datetime(2026, 11, 22, 10, 0))

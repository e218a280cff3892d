"""The timestamp family: one named function for each text format of a time the pipeline writes.

=========================  ==================================  =================================================
function                   looks like                          for
=========================  ==================================  =================================================
``producer.events.         ``2026-11-22T10:00:00.123Z``        every time on a Kafka record: events, dead-letter
timestamp``                                                    headers (the contract's, so the МИС library has it)
:func:`soap_time`          ``2026-11-22T10:00:00.123Z``        SOAP ``xs:dateTime`` values we write: the
                                                               WS-Security ``wsu:Created`` and ``wsu:Expires``
:func:`signature_time`     ``2026-11-22T10:00:00Z``            a signature's time in the signed event: whole
                                                               seconds, as its CMS ``signingTime`` holds it
:func:`for_people`         ``2026-11-22T10:00:00Z``,           what support reads: tickets, exports, ``emd dlq``,
                           ``2026-11-22T13:00:00+03:00``       ``emd status``, the console; seconds, any zone
:func:`stored`             ``2026-11-22T10:00:00.123456+00:00``  text columns of the lifecycle database and the
                                                               emulator's state: fixed width, so they sort as text
:func:`file_stamp`         ``20261122T100000123456``           file names that sort by time
:func:`cda_minute`         ``202611221300+0300``               a CDA ``effectiveTime`` (HL7 TS) to the minute
=========================  ==================================  =================================================

Each takes an aware datetime. Two formats stay with the protocol they belong to: the ASN.1 UTCTime and
GeneralizedTime of a CMS signature (``services.crypto.cades``) and the SigV4 ``x-amz-date`` of an S3 request
(``services.documents.store``).
"""

from __future__ import annotations

import datetime as dt

__all__ = ["cda_minute", "file_stamp", "for_people", "signature_time", "soap_time", "stored"]


def _utc(when: dt.datetime) -> dt.datetime:
    if when.tzinfo is None:
        raise ValueError("a timestamp needs an aware datetime")
    return when.astimezone(dt.UTC)


def soap_time(when: dt.datetime) -> str:
    """An ``xs:dateTime`` in UTC with milliseconds and ``Z``, as the ИПС reference signer writes its Timestamp."""
    t = _utc(when)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def signature_time(when: dt.datetime) -> str:
    """A signature's time in UTC to the whole second, with ``Z``: the precision of the CMS ``signingTime``."""
    return _utc(when).strftime("%Y-%m-%dT%H:%M:%SZ")


def for_people(when: dt.datetime | None, tz: dt.tzinfo = dt.UTC) -> str | None:
    """A time for people, to the second: ``Z`` in UTC, else the zone's offset (``tz``); None stays None."""
    if when is None:
        return None
    if when.tzinfo is None:
        raise ValueError("a timestamp needs an aware datetime")
    out = when.astimezone(tz).isoformat(timespec="seconds")
    return out.replace("+00:00", "Z") if tz is dt.UTC else out


def stored(when: dt.datetime) -> str:
    """A time to store as text: UTC, microseconds, ``+00:00``; one width, so text order is time order."""
    return _utc(when).isoformat(timespec="microseconds")


def file_stamp(when: dt.datetime) -> str:
    """A time for a file name: UTC, digits and one ``T``, microseconds; names sort in time order."""
    return _utc(when).strftime("%Y%m%dT%H%M%S%f")


def cda_minute(when: dt.datetime) -> str:
    """An HL7 TS to the minute in ``when``'s own zone (``202611221300+0300``): the Ministry Schematron (rule
    У1-15) allows a day or a minute in a СЭМД's ``effectiveTime``, not seconds."""
    if when.tzinfo is None:
        raise ValueError("a timestamp needs an aware datetime")
    return when.strftime("%Y%m%d%H%M%z")

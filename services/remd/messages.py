"""The typed values of the РЭМД messages: what :mod:`services.remd.soap` builds from and parses into.

Dates and times arrive as XML Schema text, in the forms a third research pass saw in РЭМД's answers
(``docs/transports.md``, "Dates and times"): ``registrationDateTime`` an ``xs:dateTime`` with microseconds and
an offset (``2023-09-22T09:27:02.104000+03:00``), ``storeTillDate`` an ``xs:date`` with an offset
(``2048-09-22+03:00``, a form Python's ``date.fromisoformat`` refuses). The registry item keeps the text as
received and reads it with :func:`parse_date_time` and :func:`parse_date`.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone

from services.remd import names as n
from services.remd.codes import CodeInfo, classify

# --- checksums ------------------------------------------------------------------


def checksum(data: bytes) -> int:
    """The ``checksum`` that accompanies base64 ``data``: believed a CRC32 of the bytes [G]
    (docs/protocol.md#checksum).

    The one place this guess lives: change it here when the official XSD says otherwise.
    """
    return zlib.crc32(data) & 0xFFFFFFFF


# --- dates and times ----------------------------------------------------------------------------

#: xs:dateTime: date, time, any number of fractional digits, then Z, an offset or nothing
_DATE_TIME = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:\d{2})?$", re.IGNORECASE
)
#: xs:date: a calendar date, then Z, an offset or nothing
_DATE = re.compile(r"^(\d{4}-\d{2}-\d{2})(Z|[+-]\d{2}:\d{2})?$", re.IGNORECASE)


def _offset(text: str | None) -> timezone | None:
    if not text:
        return None
    if text.upper() == "Z":
        return UTC
    sign = -1 if text[0] == "-" else 1
    hours, minutes = int(text[1:3]), int(text[4:6])
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def parse_date_time(text: str | None) -> datetime | None:
    """An ``xs:dateTime`` (or a bare ``xs:date``, as the older ``registrationDate`` carries) as an aware datetime;
    ``None`` for nothing or text that is not one. Fractional seconds keep their microseconds (digits past the
    sixth are dropped); a value without an offset is taken as UTC."""
    value = (text or "").strip()
    m = _DATE_TIME.match(value)
    if m is not None:
        day, clock, fraction, zone = m.groups()
        micro = int((fraction or "0")[:6].ljust(6, "0"))
        try:
            t = datetime.fromisoformat(f"{day}T{clock}").replace(microsecond=micro)
        except ValueError:
            return None
        return t.replace(tzinfo=_offset(zone) or UTC)
    d = parse_date(value)
    if d is None:
        return None
    return datetime(d.day.year, d.day.month, d.day.day, tzinfo=d.offset or UTC)


@dataclass(frozen=True, slots=True)
class OffsetDate:
    """An ``xs:date`` with the offset it was written with (``2048-09-22+03:00``): a calendar day in that zone."""

    day: date
    offset: timezone | None = None

    def isoformat(self) -> str:
        """The date as XML Schema writes it: ``2048-09-22``, ``2048-09-22+03:00`` or ``2048-09-22Z``."""
        if self.offset is None:
            return self.day.isoformat()
        delta = self.offset.utcoffset(None)
        if delta == timedelta(0):
            return f"{self.day.isoformat()}Z"
        sign, delta = ("-", -delta) if delta < timedelta(0) else ("+", delta)
        hours, rest = divmod(int(delta.total_seconds()), 3600)
        return f"{self.day.isoformat()}{sign}{hours:02d}:{rest // 60:02d}"


def parse_date(text: str | None) -> OffsetDate | None:
    """An ``xs:date`` with or without an offset; ``None`` for nothing or text that is not one."""
    m = _DATE.match((text or "").strip())
    if m is None:
        return None
    try:
        return OffsetDate(date.fromisoformat(m.group(1)), _offset(m.group(2)))
    except ValueError:
        return None


# --- typed data ---------------------------------------------------------------------------------

#: the ``status`` values that mean success, lower-cased ("success" [C], "OK" [P])
SUCCESS_STATUSES = (n.STATUS_SUCCESS, n.STATUS_OK.lower())


@dataclass(frozen=True, slots=True)
class RemdError:
    """One ``errors/item`` of a РЭМД answer."""

    code: str
    message: str = ""

    @property
    def info(self) -> CodeInfo:
        return classify(self.code)


@dataclass(frozen=True, slots=True)
class Headers:
    """WS-Addressing and transport header values of a received message."""

    message_id: str | None = None
    relates_to: str | None = None
    action: str | None = None
    to: str | None = None
    reply_to: str | None = None
    client_entity_id: str | None = None
    soap_version: str = "1.2"


@dataclass(frozen=True, slots=True)
class Coded:
    """A coded value with the version of its code system (``role``, ``position``, ``speciality``)."""

    code: str
    code_system_version: str | None = None


@dataclass(frozen=True, slots=True)
class Patient:
    snils: str | None = None
    local_id: str | None = None
    family: str | None = None  #: written as ``surname``
    given: str | None = None  #: written as ``name``
    patronymic: str | None = None  #: written as ``patrName``
    gender: str | None = None
    birth_date: str | None = None


@dataclass(frozen=True, slots=True)
class Signer:
    """``personalSignatures/item/signer``: the medical worker a personal signature belongs to."""

    role: Coded
    snils: str | None = None
    local_id: str | None = None
    family: str | None = None
    given: str | None = None
    patronymic: str | None = None
    birth_date: str | None = None
    position: Coded | None = None
    speciality: Coded | None = None
    department: str | None = None  #: the signer's structural unit (ФРМО OID), ``department/localId/code``


@dataclass(frozen=True, slots=True)
class PowerOfAttorney:
    """МЧД reference on a signature, all names [G] (docs/protocol.md#power-of-attorney): НомДовер, optionally
    the МЧД and its signature."""

    number: str
    principal_inn: str | None = None
    principal_ogrn: str | None = None
    document: bytes | None = None
    signature: bytes | None = None


@dataclass(frozen=True, slots=True)
class PersonalSignature:
    signer: Signer
    signature: bytes  # detached CMS, DER
    power_of_attorney: PowerOfAttorney | None = None


@dataclass(frozen=True, slots=True)
class OrgSignature:
    signature: bytes  # detached CMS, DER
    power_of_attorney: PowerOfAttorney | None = None


@dataclass(frozen=True, slots=True)
class Recipient:
    """Who the document is for: a medical organisation (its OID) or a patient's representative (СНИЛС)."""

    kind: str  # names.RECIPIENT_MEDICAL_ORGANIZATION | RECIPIENT_PATIENT_REPRESENTATIVE
    organization: str | None = None
    snils: str | None = None


@dataclass(frozen=True, slots=True)
class Association:
    """A link to a related ЭМД: its РЭМД id and the link type."""

    target: str
    type: str


@dataclass(frozen=True, slots=True)
class Registration:
    """What a ``registerDocument`` request says about one document (docs/protocol.md#request-body)."""

    kind: str
    system: str
    organization: str
    local_uid: str
    creation_date_time: str
    patient: Patient
    personal_signatures: Sequence[PersonalSignature]
    org_signature: OrgSignature | None = None
    department: str | None = None
    document_number: str | None = None
    recipient: Recipient | None = None
    associations: Sequence[Association] = ()


@dataclass(frozen=True, slots=True)
class RegisterRequest:
    """A parsed ``registerDocument`` request (the emulator's view)."""

    headers: Headers
    registration: Registration


@dataclass(frozen=True, slots=True)
class SyncAnswer:
    """The synchronous ``registerDocumentResponse``: ``success`` means *accepted*, not registered."""

    status: str
    errors: tuple[RemdError, ...] = ()
    headers: Headers = field(default_factory=Headers)

    @property
    def accepted(self) -> bool:
        return self.status.lower() in SUCCESS_STATUSES and not self.errors


@dataclass(frozen=True, slots=True)
class SoapFault:
    """A SOAP 1.1 or 1.2 Fault, with the РЭМД code and ИПС fault type when the detail has them."""

    code: str  # faultcode / Code/Value, e.g. "soap:Server"
    reason: str  # faultstring / Reason/Text
    detail_code: str | None = None  # detail code (or errorCode): an НСИ .305 mnemonic when from РЭМД
    detail_message: str | None = None
    ips_fault: str | None = None  # ValidationFault | AuthorizationFault | SystemFault
    headers: Headers = field(default_factory=Headers)

    @property
    def info(self) -> CodeInfo | None:
        return classify(self.detail_code) if self.detail_code else None

    @property
    def server_side(self) -> bool:
        """The fault blames the server (SOAP 1.1 Server / 1.2 Receiver): a retry may help."""
        local = self.code.rsplit(":", 1)[-1]
        return local in ("Server", "Receiver")


@dataclass(frozen=True, slots=True)
class RegistryItem:
    """A registry record as РЭМД describes it; dates as the text received (``registered_at``, ``store_till``
    read them)."""

    emdr_id: str | None = None
    local_uid: str | None = None
    kind: str | None = None
    organization: str | None = None
    registration_date_time: str | None = None  #: ``registrationDateTime`` (or the older ``registrationDate``)
    store_till_date: str | None = None  #: ``storeTillDate``, a date with an offset
    document_version: str | None = None
    #: ``registrationWarnings/item``: remarks that did not stop the registration (passed on to the МИС)
    warnings: tuple[RemdError, ...] = ()
    creation_date_time: str | None = None  #: one peer puts the document's creation time here

    @property
    def registered_at(self) -> datetime | None:
        """When РЭМД registered the document, to the microsecond it gives; None when absent or unreadable."""
        return parse_date_time(self.registration_date_time)

    @property
    def store_till(self) -> OffsetDate | None:
        """Until when РЭМД keeps the record; None when absent or unreadable."""
        return parse_date(self.store_till_date)


@dataclass(frozen=True, slots=True)
class RegisterResult:
    """The asynchronous ``registerDocumentResult`` callback."""

    relates_to_message: str
    status: str
    local_uid: str | None = None
    kind: str | None = None
    organization: str | None = None
    registry_item: RegistryItem | None = None
    errors: tuple[RemdError, ...] = ()
    headers: Headers = field(default_factory=Headers)
    document_status: str | None = None  #: ``documentStatus``, e.g. "Зарегистрировано"

    @property
    def registered(self) -> bool:
        """success (or OK) with a registry number and no errors: the document is in РЭМД."""
        return (
            self.status.lower() in SUCCESS_STATUSES
            and not self.errors
            and self.registry_item is not None
            and bool(self.registry_item.emdr_id)
        )


@dataclass(frozen=True, slots=True)
class CallbackAck:
    status: str
    headers: Headers = field(default_factory=Headers)


@dataclass(frozen=True, slots=True)
class FileRequest:
    """``getDocumentFile``: by our ``localUid`` (RЭМД checking a registration) or by ``emdrId`` (another ИС
    asking for a registered document later); exactly one of them is set."""

    local_uid: str | None = None
    emdr_id: str | None = None
    headers: Headers = field(default_factory=Headers)


@dataclass(frozen=True, slots=True)
class FileResponse:
    data: bytes
    checksum: int | None
    headers: Headers = field(default_factory=Headers)

    @property
    def checksum_ok(self) -> bool:
        return self.checksum is not None and self.checksum == checksum(self.data)


@dataclass(frozen=True, slots=True)
class SearchQuery:
    organization: str | None = None
    kind: str | None = None
    register_date_begin: str | None = None
    register_date_end: str | None = None
    patient_snils: str | None = None


@dataclass(frozen=True, slots=True)
class SearchRequest:
    query: SearchQuery
    headers: Headers = field(default_factory=Headers)


@dataclass(frozen=True, slots=True)
class SearchResult:
    status: str
    items: tuple[RegistryItem, ...] = ()
    errors: tuple[RemdError, ...] = ()
    headers: Headers = field(default_factory=Headers)


@dataclass(frozen=True, slots=True)
class RegistryItemAnswer:
    """The synchronous ``getRegistryItemResponse``: only an acknowledgement that РЭМД took the request; the record
    comes later, on the callback, as a :class:`RegistryItemResult`."""

    status: str
    errors: tuple[RemdError, ...] = ()
    headers: Headers = field(default_factory=Headers)

    @property
    def accepted(self) -> bool:
        return self.status.lower() in SUCCESS_STATUSES and not self.errors


@dataclass(frozen=True, slots=True)
class RegistryItemResult:
    """The asynchronous ``getRegistryItemResult`` callback: the registry record a ``getRegistryItem`` asked for
    (``relatesToMessage`` = that request's MessageID), or the errors (``REGISTRY_ITEM_NOT_FOUND``…)."""

    relates_to_message: str
    status: str
    registry_item: RegistryItem | None = None
    errors: tuple[RemdError, ...] = ()
    headers: Headers = field(default_factory=Headers)

    @property
    def found(self) -> bool:
        """success (or OK) with a registry number and no errors: РЭМД holds the record."""
        return (
            self.status.lower() in SUCCESS_STATUSES
            and not self.errors
            and self.registry_item is not None
            and bool(self.registry_item.emdr_id)
        )

    @property
    def local_uid(self) -> str | None:
        return self.registry_item.local_uid if self.registry_item is not None else None

    @property
    def organization(self) -> str | None:
        return self.registry_item.organization if self.registry_item is not None else None

"""The library a Python МИС embeds to hand СЭМД documents to the pipeline.

    with DocumentPublisher("kafka:9092", mis_id="dental-mis", store=FilesystemStore("/srv/emd/documents"),
                           client_id="dental-mis-01") as pub:
        published = pub.publish(xml_bytes, kind="119", organization_oid="1.2.643.5.1.13.13.12.2.77.7831")

Everything the event says is read from the document itself (``producer.cda``); what the caller also
passes (kind, organisation, ``meta``) is *checked against* the document, never trusted over it:
РЭМД cross-checks the registration request with the СЭМД and rejects mismatches, so the МИС should
hear about a contradiction now, synchronously, not hours later from a dead letter.

One value registerDocument needs is not in a СЭМД: each signer's РЭМД role. The МИС gives it in
``meta["signerRoles"]`` (``{СНИЛС: "CODE"}`` or ``{СНИЛС: {"code", "codeSystemVersion"}}``); a signer it
does not name signs as ``DOCTOR`` (dictionary version 2.4, as the regional КРЭМД shows). Everything else —
each signer's position and speciality with their code-system versions and department, the recipient, the
related documents — comes from the CDA, and a signer whose position has no ``codeSystemVersion`` is refused
(``signers[n] (role).positionCodeSystemVersion``). ``docs/schemas/document.created.schema.json`` says which
field comes from where. A document whose kind is not in force on its creation date (НСИ 1520 START_DATE …
END_DATE) is refused (``KIND_NOT_VALID_ON_DATE``), as the signer and РЭМД would refuse it: a МИС dates its
document when it is made (``effectiveTime``, to the minute, with its UTC offset), never with a template's date.

Errors::

    PermanentError
    └── InvalidDocument     the document (or the caller's metadata) cannot be published; ``field``
                            names what is wrong (``patient.snils``, ``kind``, ``creationTime``...)
    TransientError
    └── PublishError        the broker did not confirm the record in time: it may or may not be
                            stored; publishing again is safe (same key, consumers dedupe by localUid)

Where: each МИС publishes to its own topic, ``emd.document.created.<misId>`` (its Kafka user may write no other),
and reads its documents' outcomes from ``emd.document.status.<misId>`` (docs/security.md). The pipeline signs a
document only for an organisation and a systemId the organisations file grants that МИС.

Delivery: ``acks="all"``, idempotent producer, and every ``publish`` waits for the broker's
acknowledgement (``future.get(timeout)``) — a record is either confirmed or an exception is raised.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from producer import cda, contract, events, nsi, tracing
from producer.claimcheck import INLINE_DOCUMENT_LIMIT, MAX_DOCUMENT_BYTES, DocumentStore, document_field
from producer.errors import ConfigurationError, PermanentError, TransientError
from producer.kafka import KafkaSecurity, sync_producer_config
from producer.text import digits
from producer.topology import created_topic, status_topic
from producer.xmlsafe import XmlRejected, parse_xml

__all__ = [
    "META_FIELDS",
    "DocumentPublisher",
    "InvalidDocument",
    "PublishError",
    "PublishedEvent",
    "build_created_data",
    "build_created_event",
]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

#: keys a caller may pass in ``meta``; each is cross-checked against the document
META_FIELDS = (
    "localUid",
    "documentNumber",
    "departmentOid",
    "creationTime",
    "patientSnils",
    "signerSnils",
    "signatures",
    "signerRoles",
)


class InvalidDocument(PermanentError):
    """The document or the caller's metadata cannot be published; ``details['field']`` says what."""

    reason = "INVALID_DOCUMENT"

    @property
    def field(self) -> str:
        return str(self.details.get("field", "document"))


class PublishError(TransientError):
    """The broker did not acknowledge the record; it may not be stored. Safe to publish again."""

    reason = "PUBLISH_FAILED"


@dataclass(frozen=True, slots=True)
class PublishedEvent:
    local_uid: str
    event_id: str
    topic: str
    partition: int
    offset: int


def _invalid(field: str, message: str, reason: str = "INVALID_DOCUMENT") -> InvalidDocument:
    return InvalidDocument(f"{field}: {message}", reason=reason, field=field)


def _check_kind(meta: cda.CdaMetadata, kind: str | None) -> str:
    """The 1520 kind to publish: the document's, or the caller's when the document's is unknowable."""
    if meta.kind is not None:
        if kind is not None and str(kind) != meta.kind.code:
            raise _invalid(
                "kind",
                f"caller says {kind}, the document is {meta.kind.code} (found by {meta.kind.method})",
                "KIND_MISMATCH",
            )
        return meta.kind.code
    if kind is None:
        raise _invalid("kind", meta.missing.get("kind", "document kind not found"), "KIND_UNKNOWN")
    row = nsi.kind_by_code(str(kind))
    if row is None:
        raise _invalid("kind", f"{kind} is not in {nsi.SHIPPED}", "KIND_UNKNOWN")
    # A legacy template still names its 1522 type: the caller's kind must be of that type.
    for tid in meta.template_ids:
        m = re.match(r"^(?:1\.2\.643\.5\.1\.13\.13\.14|1\.2\.643\.5\.1\.13\.2\.7\.5\.1)\.(\d+)\.3$", tid)
        if m and m.group(1) != row.type_code:
            raise _invalid(
                "kind",
                f"{kind} is 1522 type {row.type_code}, the document's template {tid} is type {m.group(1)}",
                "KIND_MISMATCH",
            )
    return row.code


def build_created_data(
    meta: cda.CdaMetadata,
    *,
    system_id: str,
    document: events.DocumentData | None,
    kind: str | None = None,
    organization_oid: str | None = None,
    extra: dict[str, Any] | None = None,
) -> events.CreatedData:
    """Cross-check the caller's claims against the CDA header and build the ``created`` payload.

    ``document``: the event's ``document`` object (None while only checking). Raises InvalidDocument.
    """
    extra = dict(extra or {})
    unknown = sorted(set(extra) - set(META_FIELDS))
    if unknown:
        raise _invalid(
            f"meta.{unknown[0]}",
            f"unknown metadata field (known: {', '.join(META_FIELDS)})",
            "META_UNKNOWN_FIELD",
        )
    local_uid = _required(meta, "localUid", meta.local_uid)
    creation_time = _required(meta, "creationTime", meta.creation_time)
    custodian = _required(meta, "organizationOid", meta.organization_oid)
    kind_code = _check_kind(meta, kind)
    on_date = contract.kind_date_problem(kind_code, creation_time.isoformat())
    if on_date is not None:
        raise _invalid("kind", on_date, "KIND_NOT_VALID_ON_DATE")
    department = _check_header_claims(meta, extra, organization_oid)
    patient = _check_patient(meta, extra, kind_code)
    doc_snils, signatures = _check_signer_claims(meta, extra)
    roles = _signer_roles(extra.get("signerRoles", {}), doc_snils)
    _check_signer_codes(meta)

    data: events.CreatedData = {
        "localUid": local_uid,
        "kind": kind_code,
        "organizationOid": custodian,
        "departmentOid": department,
        "systemId": system_id,
        "creationTime": creation_time.isoformat(),
        "documentNumber": meta.document_number,
        "patient": _patient_data(patient),
        "signers": [_signer_data(s, roles, signatures, department) for s in meta.signers],
        "recipient": _recipient(meta.recipient),
        "associations": [
            {"target": r.id_extension, "type": r.type_code} for r in meta.related if r.id_extension
        ],
    }
    if document is not None:
        data["document"] = document
    return data


def _required(meta: cda.CdaMetadata, field_: str, value: _T | None) -> _T:
    """A header value the event cannot do without, or InvalidDocument saying why the document has none."""
    if value is None or field_ in meta.missing:
        raise _invalid(field_, meta.missing.get(field_, "absent from the document"), "MISSING_FIELD")
    return value


def _check_header_claims(
    meta: cda.CdaMetadata, extra: dict[str, Any], organization_oid: str | None
) -> str | None:
    """The caller's organisation, localUid, number and creation time agree with the header; the department
    to publish (the document's, or the caller's when the document names none)."""
    if organization_oid is not None and organization_oid != meta.organization_oid:
        raise _invalid(
            "organizationOid",
            f"caller says {organization_oid}, the custodian is {meta.organization_oid}",
            "META_MISMATCH",
        )
    if "localUid" in extra and str(extra["localUid"]) != meta.local_uid:
        raise _invalid("localUid", "differs from ClinicalDocument/id/@extension", "META_MISMATCH")
    if "documentNumber" in extra and str(extra["documentNumber"]) != meta.document_number:
        raise _invalid("documentNumber", "differs from ClinicalDocument/setId/@extension", "META_MISMATCH")
    if "creationTime" in extra:
        try:
            claimed = datetime.fromisoformat(str(extra["creationTime"]))
        except ValueError:
            raise _invalid("creationTime", "meta creationTime is not ISO 8601", "META_MISMATCH") from None
        if claimed.tzinfo is None or claimed != meta.creation_time:
            raise _invalid("creationTime", "differs from ClinicalDocument/effectiveTime", "META_MISMATCH")
    department = meta.department_oid
    if "departmentOid" in extra:
        claimed_dep = str(extra["departmentOid"])
        if department is not None and claimed_dep != department:
            raise _invalid(
                "departmentOid", "differs from the author's representedOrganization", "META_MISMATCH"
            )
        department = claimed_dep  # the document names none: the МИС knows its structural unit
    return department


def _check_patient(meta: cda.CdaMetadata, extra: dict[str, Any], kind_code: str) -> cda.Patient:
    """The document's patient, with the СНИЛС its kind requires and the caller claims."""
    patient = meta.patient
    if patient is None:
        raise _invalid("patient", meta.missing.get("patient", "no patient"), "MISSING_FIELD")
    if meta.requires_patient_snils and patient.snils is None:
        raise _invalid(
            "patient.snils",
            f"kind {kind_code} requires the patient's СНИЛС; {meta.missing.get('patient.snils', 'absent')}",
            "MISSING_FIELD",
        )
    if "patientSnils" in extra and digits(extra["patientSnils"]) != patient.snils:
        raise _invalid("patient.snils", "caller's patient СНИЛС differs from recordTarget", "META_MISMATCH")
    return patient


def _check_signer_claims(
    meta: cda.CdaMetadata, extra: dict[str, Any]
) -> tuple[set[str | None], dict[str, Any]]:
    """The document has signers, and the caller's signer СНИЛС and signatures are of them: the signers'
    СНИЛС and the caller's ``{СНИЛС: base64 CMS}``."""
    if not meta.signers:
        raise _invalid("signers", "the document has no author or legalAuthenticator", "MISSING_FIELD")
    for key, problem in meta.missing.items():
        if key.startswith("signers"):
            raise _invalid(key, problem, "MISSING_FIELD")
    doc_snils = {s.snils for s in meta.signers}
    claimed_signers = extra.get("signerSnils", [])
    for n, value in enumerate([claimed_signers] if isinstance(claimed_signers, str) else claimed_signers):
        if digits(value) not in doc_snils:
            raise _invalid(
                f"signerSnils[{n}]",
                "no author or legalAuthenticator of the document has this СНИЛС",
                "META_MISMATCH",
            )
    signatures = extra.get("signatures", {})
    if not isinstance(signatures, dict):
        raise _invalid("meta.signatures", "expected an object {СНИЛС: base64 CMS}", "META_MISMATCH")
    for snils, cms in signatures.items():
        if digits(snils) not in doc_snils:
            raise _invalid(
                "signatures", "a signature for a СНИЛС that is not a signer of the document", "META_MISMATCH"
            )
        try:
            base64.b64decode(cms, validate=True)
        except (binascii.Error, ValueError, TypeError):
            raise _invalid("signatures", "signature is not base64", "META_MISMATCH") from None
    return doc_snils, signatures


def _check_signer_codes(meta: cda.CdaMetadata) -> None:
    """РЭМД checks every signer's position against ФРМР: the code and its dictionary version are required."""
    for n, s in enumerate(meta.signers):
        where = f"signers[{n}] ({s.role})"
        if not s.position_code:
            raise _invalid(
                f"{where}.positionCode",
                "the signer's position code (НСИ 1.2.643.5.1.13.13.11.1002) is missing",
                "MISSING_FIELD",
            )
        if not s.position_version:
            raise _invalid(
                f"{where}.positionCodeSystemVersion",
                "the signer's position code has no codeSystemVersion",
                "MISSING_FIELD",
            )
        if s.speciality_code and not s.speciality_version:
            raise _invalid(
                f"{where}.specialityCodeSystemVersion",
                "the signer's speciality code has no codeSystemVersion",
                "MISSING_FIELD",
            )


def _patient_data(patient: cda.Patient) -> events.PatientData:
    return {
        "snils": patient.snils,
        "localId": patient.local_id,
        "family": patient.family,
        "given": patient.given,
        "patronymic": patient.patronymic,
        "gender": patient.gender,
        "birthDate": patient.birth_date.isoformat() if patient.birth_date else None,
    }


def _signer_data(
    s: cda.Signer,
    roles: dict[str, tuple[str, str]],
    signatures: dict[str, Any],
    department: str | None,
) -> events.SignerData:
    """One signer of the event: the document's person, the caller's role and, when given, signature."""
    role_code, role_version = roles.get(
        s.snils or "", (events.DEFAULT_SIGNER_ROLE, events.DEFAULT_SIGNER_ROLE_VERSION)
    )
    out: events.SignerData = {
        "role": s.role,
        "snils": s.snils,
        "family": s.family,
        "given": s.given,
        "patronymic": s.patronymic,
        "localId": s.local_id,
        "positionCode": s.position_code,
        "specialityCode": s.speciality_code,
        "positionCodeSystemVersion": s.position_version,
        "specialityCodeSystemVersion": s.speciality_version,
        "departmentOid": s.department_oid or department,
        "roleCode": role_code,
        "roleCodeSystemVersion": role_version,
    }
    sig = next((v for k, v in signatures.items() if digits(k) == s.snils), None)
    if sig is not None:
        out["signature"] = sig
    return out


def _signer_roles(raw: object, doc_snils: set[str | None]) -> dict[str, tuple[str, str]]:
    """``meta.signerRoles``: {СНИЛС: "CODE" | {"code", "codeSystemVersion"}} → {digits: (code, version)}."""
    if not isinstance(raw, dict):
        raise _invalid("meta.signerRoles", "expected an object {СНИЛС: role code}", "META_MISMATCH")
    out: dict[str, tuple[str, str]] = {}
    for snils, value in raw.items():
        if digits(snils) not in doc_snils:
            raise _invalid(
                "signerRoles", "a role for a СНИЛС that is not a signer of the document", "META_MISMATCH"
            )
        if isinstance(value, str) and value:
            out[digits(snils)] = (value, events.DEFAULT_SIGNER_ROLE_VERSION)
        elif (
            isinstance(value, dict)
            and isinstance(value.get("code"), str)
            and value["code"]
            and isinstance(value.get("codeSystemVersion"), str)
            and value["codeSystemVersion"]
        ):
            out[digits(snils)] = (value["code"], value["codeSystemVersion"])
        else:
            raise _invalid(
                "signerRoles", 'a role is "CODE" or {"code": …, "codeSystemVersion": …}', "META_MISMATCH"
            )
    return out


def _recipient(recipient: cda.Recipient | None) -> events.RecipientData | None:
    if recipient is None:
        return None
    if recipient.organization_oid:
        return {
            "kind": events.RECIPIENT_MEDICAL_ORGANIZATION,
            "organizationOid": recipient.organization_oid,
            "snils": None,
        }
    return {
        "kind": events.RECIPIENT_PATIENT_REPRESENTATIVE,
        "organizationOid": None,
        "snils": recipient.snils,
    }


def read_document(document_bytes: bytes, *, max_bytes: int = MAX_DOCUMENT_BYTES) -> cda.CdaMetadata:
    """Parse (hardened) and extract; every failure is InvalidDocument naming the field."""
    try:
        root = parse_xml(document_bytes, max_bytes=max_bytes)
    except XmlRejected as exc:
        raise InvalidDocument(f"document: {exc.message}", reason=exc.reason, field="document") from None
    try:
        return cda.extract(root)
    except cda.NotCda as exc:
        raise InvalidDocument(
            f"ClinicalDocument: {exc.message}", reason="NOT_CDA", field="ClinicalDocument"
        ) from None


def build_created_event(
    document_bytes: bytes,
    *,
    system_id: str,
    store: DocumentStore | None,
    inline_limit: int = INLINE_DOCUMENT_LIMIT,
    max_bytes: int = MAX_DOCUMENT_BYTES,
    kind: str | None = None,
    organization_oid: str | None = None,
    meta: dict[str, Any] | None = None,
    trace_id: str | None = None,
) -> events.Envelope:
    """Everything ``publish`` does short of sending: parse, extract, cross-check, store, validate.

    The document is stored (when over ``inline_limit``) only after every check has passed.
    """
    cda_meta = read_document(document_bytes, max_bytes=max_bytes)
    data = build_created_data(
        cda_meta, system_id=system_id, document=None, kind=kind, organization_oid=organization_oid, extra=meta
    )  # checks before anything is stored
    data["document"] = document_field(document_bytes, store, inline_limit=inline_limit, media_type="text/xml")
    try:
        return events.new_event(events.CREATED, data, source=system_id, trace_id=trace_id)
    except PermanentError as exc:
        field = str(exc.details.get("field", "event")).removeprefix("data.")
        raise InvalidDocument(f"{field}: {exc.message}", reason="EVENT_INVALID", field=field) from None


class DocumentPublisher:
    """Publish СЭМД documents to the МИС's own ``emd.document.created.<misId>``, each send confirmed by the broker.

    ``bootstrap_servers``: Kafka bootstrap list. ``mis_id``: the МИС's id, as the organisations file grants it
    (its topics; its outcomes are on ``status_topic``). ``store``: claim-check store for documents over
    ``inline_limit`` bytes (default 256 KiB). ``client_id``: Kafka client id, also the event ``source``
    and ``systemId`` unless ``system_id`` is given. ``timeout``: seconds to wait for each acknowledgement
    (default 30). ``max_bytes``: largest document accepted (default 50 MiB). ``security``: TLS/SASL to
    the brokers, a ``producer.kafka.KafkaSecurity`` (default plaintext;
    ``services.messaging.clients.security_from(Settings.from_env())`` reads the ``KAFKA_SSL_*``/``KAFKA_SASL_*`` variables).
    """

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        mis_id: str,
        store: DocumentStore | None = None,
        client_id: str = "emd-mis",
        system_id: str | None = None,
        timeout: float = 30.0,
        inline_limit: int = INLINE_DOCUMENT_LIMIT,
        max_bytes: int = MAX_DOCUMENT_BYTES,
        security: KafkaSecurity | None = None,
    ) -> None:
        from kafka import KafkaProducer

        try:
            self.topic = created_topic(mis_id).name
        except ConfigurationError as exc:
            raise ConfigurationError(
                f"DocumentPublisher(mis_id=...): {exc.message}", reason=exc.reason
            ) from None
        #: where the pipeline tells this МИС its documents' outcomes
        self.status_topic = status_topic(mis_id).name
        self.mis_id = mis_id
        self.store, self.timeout = store, timeout
        self.system_id = system_id or client_id
        self.inline_limit, self.max_bytes = inline_limit, max_bytes
        config = sync_producer_config(bootstrap_servers, client_id=client_id, security=security)
        # idempotence needs acks=all and at most 5 in flight; insist even if the shared config changes
        config.update(
            acks="all",
            enable_idempotence=True,
            max_in_flight_requests_per_connection=min(
                5, config.get("max_in_flight_requests_per_connection", 5)
            ),
        )
        try:
            self._producer = KafkaProducer(**config)
        except Exception as exc:  # NoBrokersAvailable and friends
            raise PublishError(
                f"cannot connect to Kafka at {bootstrap_servers}: {exc.__class__.__name__}"
            ) from exc

    def publish(
        self,
        document_bytes: bytes,
        *,
        kind: str | None = None,
        organization_oid: str | None = None,
        meta: dict[str, Any] | None = None,
        trace_id: str | None = None,
    ) -> PublishedEvent:
        """Check, store if large, and publish one document; return where the broker put it.

        With ``opentelemetry-api`` installed (``emd-producer[otel]``) this is a ``publish`` span, child of the
        current one, whose trace id the event carries as its ``traceId`` (``producer.tracing``).
        """
        with tracing.publishing(self.topic, trace_id) as traced:
            event = build_created_event(
                document_bytes,
                system_id=self.system_id,
                store=self.store,
                inline_limit=self.inline_limit,
                max_bytes=self.max_bytes,
                kind=kind,
                organization_oid=organization_oid,
                meta=meta,
                trace_id=traced.trace_id,
            )
            traced.document(event["data"]["localUid"])
            return self.send(event)

    def send(self, event: events.Envelope) -> PublishedEvent:
        """Send an already built and validated event; wait for the acknowledgement or raise PublishError.

        The record is checked as the signer will check it (``producer.contract``: key, headers, the kind on its
        creation date) before anything is sent: InvalidDocument names what is wrong."""
        local_uid = event["data"]["localUid"]
        key, headers = local_uid.encode("utf-8"), events.headers_for(event)
        try:
            contract.check_record(key, headers, event)
        except PermanentError as exc:
            field = str(exc.details.get("field", "event"))
            raise InvalidDocument(f"{field}: {exc.message}", reason=exc.reason, field=field) from None
        try:
            future = self._producer.send(
                self.topic,
                key=key,
                value=events.encode(event),
                headers=headers + tracing.traceparent_for(event["traceId"]),
            )
            meta = future.get(timeout=self.timeout)
        except Exception as exc:
            raise PublishError(
                f"broker did not acknowledge document {local_uid}: {exc.__class__.__name__}: {exc}",
                local_uid=local_uid,
                event_id=event["eventId"],
            ) from exc
        log.info(
            "document published",
            extra={
                "kind": event["data"]["kind"],
                "event_id": event["eventId"],
                "partition": meta.partition,
                "offset": meta.offset,
            },
        )
        return PublishedEvent(
            local_uid=local_uid,
            event_id=event["eventId"],
            topic=meta.topic,
            partition=meta.partition,
            offset=meta.offset,
        )

    def close(self) -> None:
        """Flush and close. Every publish already waited for its acknowledgement (or raised), so a record
        still unconfirmed here was reported to its caller as a PublishError: closing never hides a loss."""
        from kafka.errors import KafkaError

        try:
            self._producer.flush(timeout=self.timeout)
            self._producer.close(timeout=self.timeout)
        except KafkaError as exc:
            log.warning(
                "closing with unconfirmed sends (each already raised PublishError)", extra={"error": str(exc)}
            )
            try:
                self._producer.close(timeout=0)
            except KafkaError:
                pass  # the same unconfirmed batch; kafka-python has released its resources by now

    def __enter__(self) -> DocumentPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

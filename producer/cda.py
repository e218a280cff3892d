"""What a СЭМД (HL7 CDA R2, namespace ``urn:hl7-org:v3``) says about itself: ``extract(root)``.

The pipeline needs a handful of header facts to register a document (docs/architecture.md, the
``emd.document.created`` payload). They are read from the parsed tree, never from the caller, and
anything that cannot be read is recorded in ``CdaMetadata.missing`` as ``{field: reason}`` rather
than guessed. Decisions:

* **localUid** = ``ClinicalDocument/id/@extension``. ``@root`` is the МИС's namespace for document
  ids (``<org OID>.100.<МИС>.1.51`` in every Ministry example), ``@extension`` the id the МИС gave the
  document; РЭМД compares the request's ``localUid`` with the document's id. The root is kept as
  ``id_root``. A deployment serving several organisations must keep extensions unique across them
  (GUIDs do), because the pipeline keys Kafka records and deduplicates by ``localUid``.
* **creation time** = ``ClinicalDocument/effectiveTime/@value`` as an aware datetime. A value without a
  time-zone offset (``20180523``) or a ``nullFlavor`` is *not* turned into a time: РЭМД checks
  ``creationDateTime`` against the document, so inventing midnight or a zone would be a lie.
* **kind**: ``producer.nsi.kind_for_document`` on ``code``/``codeSystem``/``templateId``/``displayName``.
* **document number** = ``setId/@extension`` (the number that stays the same across versions),
  ``version_number`` = ``versionNumber/@value``.
* **organisation** = ``custodian/assignedCustodian/representedCustodianOrganization/id/@root``.
* **department** = the first author's ``representedOrganization/id/@extension`` when it is a ФРМО
  structural-unit OID of that organisation (``<org OID>.0.<n>``); older editions do not carry one.
* **people**: СНИЛС is the ``id`` with root ``1.2.643.100.3`` (digits only); the local id is the
  other ``id``'s extension; position = ``code`` in НСИ 1.2.643.5.1.13.13.11.1002 and its
  ``codeSystemVersion``; speciality = a code in НСИ 1.2.643.5.1.13.13.11.1066 (the author's
  ``functionCode``, or a code inside the person's role) and its version, if the edition has one; a
  signer's department = its ``representedOrganization/id/@extension`` when that is a structural unit
  of the organisation.
* **recipient** = the first ``informationRecipient/intendedRecipient`` that is not РЭМД itself (the
  Ministry's ``1.2.643.5.1.13``): a ``receivedOrganization`` with an OID (a medical organisation) or a
  person with a СНИЛС (a patient's representative). Recipients with ``nullFlavor`` ids name nobody РЭМД
  can check and are skipped.
* **related documents** = each ``relatedDocument`` (``@typeCode``: RPLC, APND, XFRM) with its
  ``parentDocument/id`` (root and extension), as the document states them.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import cast

from lxml import etree

from producer import nsi
from producer.errors import PermanentError

__all__ = [
    "FIELD_XPATHS",
    "HL7",
    "SIGNER_ENTITIES",
    "SIGNER_XPATHS",
    "CdaMetadata",
    "NotCda",
    "Person",
    "Recipient",
    "RelatedDocument",
    "Signer",
    "extract",
    "parse_hl7_time",
]

HL7 = "urn:hl7-org:v3"
IDENTITY = "urn:hl7-ru:identity"
NS = {"h": HL7, "identity": IDENTITY}
SNILS_ROOT = "1.2.643.100.3"
POSITION_SYSTEM = "1.2.643.5.1.13.13.11.1002"
SPECIALITY_SYSTEM = "1.2.643.5.1.13.13.11.1066"
#: the Ministry (ЕГИСЗ/РЭМД) as the document's recipient: every СЭМД names it, it is not a recipient to report
MINISTRY_OID = "1.2.643.5.1.13"


def _patronymic(name: str) -> str:
    """identity:Patronymic, or (legacy templates) the second ``given`` of a name without one."""
    return f"{name}[1]/identity:Patronymic | {name}[1][not(identity:Patronymic)]/h:given[2]"


#: a signer's position: its code in НСИ 1002, else (editions with another dictionary) its first code
_POSITION = (
    f"h:code[@codeSystem='{POSITION_SYSTEM}'][1] | h:code[not(../h:code[@codeSystem='{POSITION_SYSTEM}'])][1]"
)
#: a signer's speciality: the participation's functionCode in НСИ 1066, else one inside the role
_SPECIALITY = (
    f"../h:functionCode[@codeSystem='{SPECIALITY_SYSTEM}'][1]"
    f" | self::node()[not(../h:functionCode[@codeSystem='{SPECIALITY_SYSTEM}'])]"
    f"/descendant::h:code[@codeSystem='{SPECIALITY_SYSTEM}'][1]"
)


#: Where each field of the ``created`` event is read, as absolute XPath 1.0 (prefixes: ``NS``). What
#: :func:`extract` reads, published for a МИС in another language (docs/integration.md, docs/asyncapi.yaml);
#: ``tests/test_cda.py`` evaluates each on every sample against :func:`extract`. Where a value needs more than the
#: path (a kind derived from templateId, a department only of the form ``<organisation>.0.<n>``, a patronymic in a
#: second ``given``), the guide says it.
FIELD_XPATHS: dict[str, str] = {
    "localUid": "/h:ClinicalDocument/h:id/@extension",
    "kind": f"/h:ClinicalDocument/h:code[@codeSystem='{nsi.NSI_1520_OID}']/@code",
    "creationTime": "/h:ClinicalDocument/h:effectiveTime/@value",
    "documentNumber": "/h:ClinicalDocument/h:setId/@extension",
    "organizationOid": "/h:ClinicalDocument/h:custodian/h:assignedCustodian/h:representedCustodianOrganization/h:id/@root",
    "departmentOid": "/h:ClinicalDocument/h:author[1]/h:assignedAuthor/h:representedOrganization/h:id/@extension",
    "patient.snils": f"/h:ClinicalDocument/h:recordTarget/h:patientRole/h:id[@root='{SNILS_ROOT}']/@extension",
    "patient.localId": (
        f"/h:ClinicalDocument/h:recordTarget/h:patientRole/h:id[not(@root='{SNILS_ROOT}')][@extension][1]/@extension"
    ),
    "patient.family": "/h:ClinicalDocument/h:recordTarget/h:patientRole/h:patient/h:name/h:family",
    "patient.given": "/h:ClinicalDocument/h:recordTarget/h:patientRole/h:patient/h:name/h:given[1]",
    "patient.patronymic": _patronymic("/h:ClinicalDocument/h:recordTarget/h:patientRole/h:patient/h:name"),
    "patient.gender": "/h:ClinicalDocument/h:recordTarget/h:patientRole/h:patient/h:administrativeGenderCode/@code",
    "patient.birthDate": "/h:ClinicalDocument/h:recordTarget/h:patientRole/h:patient/h:birthTime/@value",
    "recipient.organizationOid": (
        "/h:ClinicalDocument/h:informationRecipient/h:intendedRecipient/h:receivedOrganization/h:id/@root"
    ),
    "associations.type": "/h:ClinicalDocument/h:relatedDocument/@typeCode",
    "associations.target": "/h:ClinicalDocument/h:relatedDocument/h:parentDocument/h:id/@extension",
}
#: the signers' entities, by the ``role`` the event gives them, in the event's order (every one of each)
SIGNER_ENTITIES: dict[str, str] = {
    "author": "/h:ClinicalDocument/h:author/h:assignedAuthor",
    "legalAuthenticator": "/h:ClinicalDocument/h:legalAuthenticator/h:assignedEntity",
    "authenticator": "/h:ClinicalDocument/h:authenticator/h:assignedEntity",
}
#: each signer's fields, relative to its entity (``..`` is the participation: author/functionCode)
SIGNER_XPATHS: dict[str, str] = {
    "snils": f"h:id[@root='{SNILS_ROOT}']/@extension",
    "localId": f"h:id[not(@root='{SNILS_ROOT}')][@extension][1]/@extension",
    "family": "h:assignedPerson/h:name/h:family",
    "given": "h:assignedPerson/h:name/h:given[1]",
    "patronymic": _patronymic("h:assignedPerson/h:name"),
    "positionCode": f"({_POSITION})/@code",
    "positionCodeSystemVersion": f"({_POSITION})/@codeSystemVersion",
    "specialityCode": f"({_SPECIALITY})/@code",
    "specialityCodeSystemVersion": f"({_SPECIALITY})/@codeSystemVersion",
    "departmentOid": "h:representedOrganization/h:id/@extension",
}

_TS = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\.\d+)?([+-]\d{4})?$")


class NotCda(PermanentError):
    """The XML is not an HL7 CDA R2 ClinicalDocument."""

    reason = "NOT_CDA"


@dataclass(frozen=True, slots=True)
class Person:
    """A patient or medical worker as the header names them (strings exactly as written)."""

    snils: str | None = None
    local_id: str | None = None
    family: str | None = None
    given: str | None = None
    patronymic: str | None = None


@dataclass(frozen=True, slots=True)
class Patient(Person):
    gender: str | None = None  #: administrativeGenderCode/@code, НСИ 1.2.643.5.1.13.13.11.1040
    birth_date: date | None = None


@dataclass(frozen=True, slots=True)
class Signer(Person):
    role: str = "author"  #: author, legalAuthenticator, authenticator
    position_code: str | None = None
    position_version: str | None = None  #: codeSystemVersion of the position code
    speciality_code: str | None = None
    speciality_version: str | None = None
    department_oid: str | None = None  #: the signer's structural unit (ФРМО OID), when stated


@dataclass(frozen=True, slots=True)
class Recipient:
    """``informationRecipient``: an organisation (``organization_oid``) or a person (``snils``)."""

    organization_oid: str | None = None
    snils: str | None = None


@dataclass(frozen=True, slots=True)
class RelatedDocument:
    """``relatedDocument``: the link type and the related document's id as the document writes it."""

    type_code: str
    id_root: str | None
    id_extension: str | None


@dataclass(slots=True)
class CdaMetadata:
    """Header facts of one СЭМД; ``missing`` says which could not be derived and why."""

    local_uid: str | None
    id_root: str | None
    creation_time: datetime | None
    creation_time_raw: str | None
    code: str | None
    code_system: str | None
    display_name: str | None
    template_ids: list[str]
    kind: nsi.KindMatch | None
    document_number: str | None
    version_number: int | None
    organization_oid: str | None
    department_oid: str | None
    patient: Patient | None
    signers: list[Signer]
    missing: dict[str, str] = field(default_factory=dict)
    recipient: Recipient | None = None
    related: list[RelatedDocument] = field(default_factory=list)

    @property
    def kind_code(self) -> str | None:
        return self.kind.code if self.kind else None

    @property
    def requires_patient_snils(self) -> bool | None:
        """Whether the kind demands the patient's СНИЛС; None when the shipped НСИ 1520 does not say."""
        if self.kind is None or self.kind.kind is None:
            return None
        return self.kind.kind.requires_patient_snils

    @property
    def requires_organization_signature(self) -> bool | None:
        if self.kind is None or self.kind.kind is None:
            return None
        return self.kind.kind.organization_signature


def parse_hl7_time(value: str) -> datetime | date:
    """HL7 TS ``YYYYMMDD[HHMM[SS[.s]]][±ZZZZ]`` → aware datetime (with offset) or a plain date.

    A value with a time but no offset raises ValueError: the zone cannot be known.
    """
    m = _TS.match(value.strip())
    if not m or m.group(2) is None or m.group(3) is None:
        raise ValueError(f"not an HL7 timestamp with a full date: {value!r}")
    y, mo, d, hh, mi, ss, frac, tz = m.groups()
    if hh is None:
        if tz:
            raise ValueError(f"a date with an offset but no time: {value!r}")
        return date(int(y), int(mo), int(d))
    if tz is None:
        raise ValueError(f"time without a UTC offset: {value!r}")
    sign = 1 if tz[0] == "+" else -1
    offset = timezone(sign * timedelta(hours=int(tz[1:3]), minutes=int(tz[3:5])))
    micro = int(round(float(frac) * 1_000_000)) if frac else 0
    return datetime(int(y), int(mo), int(d), int(hh), int(mi or 0), int(ss or 0), micro, tzinfo=offset)


@functools.cache
def _compiled(path: str) -> etree.XPath:
    # compiled once per expression: compiling on every call was half of extract()'s time. An XPath object
    # serialises its own evaluations (lxml's eval lock), so the producer's threads may share it.
    return etree.XPath(path, namespaces=NS)


def _x(node: etree._Element, path: str) -> list[etree._Element]:
    # every path of this module selects elements, never text or attributes
    return cast("list[etree._Element]", _compiled(path)(node))


def _first(node: etree._Element, path: str) -> etree._Element | None:
    found = _x(node, path)
    return found[0] if found else None


def _attr(node: etree._Element | None, name: str) -> str | None:
    if node is None:
        return None
    value = node.get(name)
    return value.strip() if value and value.strip() else None


def _text(node: etree._Element | None) -> str | None:
    if node is None:
        return None
    text = "".join(node.itertext()).strip()
    return text or None


def _snils(ids: list[etree._Element]) -> tuple[str | None, str | None]:
    """(digits, problem) for the СНИЛС id among ``ids``."""
    for i in ids:
        if i.get("root") == SNILS_ROOT:
            raw = _attr(i, "extension")
            if raw is None:
                return None, "СНИЛС id has no extension (nullFlavor)"
            digits = re.sub(r"[\s-]", "", raw)
            if not re.fullmatch(r"\d{11}", digits):
                return None, f"СНИЛС {raw!r} is not 11 digits"
            return digits, None
    return None, "no id with root 1.2.643.100.3 (СНИЛС)"


def _local_id(ids: list[etree._Element]) -> str | None:
    for i in ids:
        if i.get("root") != SNILS_ROOT and _attr(i, "extension"):
            return _attr(i, "extension")
    return None


def _names(person: etree._Element | None) -> tuple[str | None, str | None, str | None]:
    if person is None:
        return None, None, None
    name = _first(person, "h:name")
    if name is None:
        return None, None, None
    family = _text(_first(name, "h:family"))
    givens = [_text(g) for g in _x(name, "h:given")]
    patronymic = _text(_first(name, "identity:Patronymic"))
    if patronymic is None and len(givens) > 1:
        patronymic = givens[1]  # legacy templates put the patronymic in a second <given>
    return family, (givens[0] if givens else None), patronymic


def _signer(
    participation: etree._Element,
    entity: etree._Element,
    role: str,
    person_path: str,
    missing: dict[str, str],
    key: str,
    organization_oid: str | None,
) -> Signer:
    ids = _x(entity, "h:id")
    snils, problem = _snils(ids)
    if problem:
        missing[f"{key}.snils"] = problem
    family, given, patronymic = _names(_first(entity, person_path))
    position = _first(entity, f"h:code[@codeSystem='{POSITION_SYSTEM}']")
    if position is None:
        position = _first(entity, "h:code")
    # the author's speciality is its functionCode; some editions put it inside the role instead
    speciality = _first(participation, f"h:functionCode[@codeSystem='{SPECIALITY_SYSTEM}']")
    if speciality is None:
        speciality = _first(entity, f".//h:code[@codeSystem='{SPECIALITY_SYSTEM}']")
    unit = _attr(_first(entity, "h:representedOrganization/h:id"), "extension")
    department = unit if organization_oid and unit and unit.startswith(organization_oid + ".0.") else None
    return Signer(
        role=role,
        snils=snils,
        local_id=_local_id(ids),
        family=family,
        given=given,
        patronymic=patronymic,
        position_code=_attr(position, "code"),
        position_version=_attr(position, "codeSystemVersion"),
        speciality_code=_attr(speciality, "code"),
        speciality_version=_attr(speciality, "codeSystemVersion"),
        department_oid=department,
    )


def _recipient(root: etree._Element) -> Recipient | None:
    for intended in _x(root, "h:informationRecipient/h:intendedRecipient"):
        oid = _attr(_first(intended, "h:receivedOrganization/h:id"), "root")
        if oid and oid != MINISTRY_OID:
            return Recipient(organization_oid=oid)
        snils, _ = _snils(_x(intended, "h:id") + _x(intended, "h:informationRecipient/h:id"))
        if snils:
            return Recipient(snils=snils)
    return None


def _related(root: etree._Element) -> list[RelatedDocument]:
    out = []
    for rel in _x(root, "h:relatedDocument"):
        parent_id = _first(rel, "h:parentDocument/h:id")
        type_code = _attr(rel, "typeCode")
        if type_code and parent_id is not None:
            out.append(
                RelatedDocument(
                    type_code=type_code,
                    id_root=_attr(parent_id, "root"),
                    id_extension=_attr(parent_id, "extension"),
                )
            )
    return out


def extract(root: etree._Element) -> CdaMetadata:
    """Read the header of a parsed СЭМД (from ``producer.xmlsafe.parse_xml``); raise NotCda if it is none."""
    if root.tag != f"{{{HL7}}}ClinicalDocument":
        raise NotCda(f"root element is {root.tag!r}, not {{{HL7}}}ClinicalDocument", field="ClinicalDocument")
    missing: dict[str, str] = {}

    doc_id = _first(root, "h:id")
    local_uid, id_root = _attr(doc_id, "extension"), _attr(doc_id, "root")
    if local_uid is None:
        missing["localUid"] = "ClinicalDocument/id has no @extension"

    raw_time, creation_time = _creation_time(root, missing)

    code_el = _first(root, "h:code")
    code, code_system = _attr(code_el, "code"), _attr(code_el, "codeSystem")
    display = _attr(code_el, "displayName")
    template_ids = [t for t in (_attr(e, "root") for e in _x(root, "h:templateId")) if t]
    kind = _kind(code, code_system, template_ids, display, missing)

    set_id = _first(root, "h:setId")
    document_number = _attr(set_id, "extension")
    if document_number is None:
        missing["documentNumber"] = "ClinicalDocument/setId has no @extension"
    version_raw = _attr(_first(root, "h:versionNumber"), "value")
    version_number = int(version_raw) if version_raw and version_raw.isdigit() else None

    custodian = _first(root, "h:custodian/h:assignedCustodian/h:representedCustodianOrganization/h:id")
    organization_oid = _attr(custodian, "root")
    if organization_oid is None:
        missing["organizationOid"] = (
            "custodian/assignedCustodian/representedCustodianOrganization/id has no @root"
        )

    return CdaMetadata(
        local_uid=local_uid,
        id_root=id_root,
        creation_time=creation_time,
        creation_time_raw=raw_time,
        code=code,
        code_system=code_system,
        display_name=display,
        template_ids=template_ids,
        kind=kind,
        document_number=document_number,
        version_number=version_number,
        organization_oid=organization_oid,
        department_oid=_department(root, organization_oid, missing),
        patient=_patient(root, missing),
        signers=_signers(root, organization_oid, missing),
        missing=missing,
        recipient=_recipient(root),
        related=_related(root),
    )


def _creation_time(root: etree._Element, missing: dict[str, str]) -> tuple[str | None, datetime | None]:
    """ClinicalDocument/effectiveTime as written and as a moment (None, and why in ``missing``, when it is no
    moment with a UTC offset)."""
    eff = _first(root, "h:effectiveTime")
    raw_time = _attr(eff, "value")
    if raw_time is None:
        flavor = _attr(eff, "nullFlavor")
        missing["creationTime"] = (
            f"ClinicalDocument/effectiveTime is nullFlavor={flavor}"
            if flavor
            else "ClinicalDocument/effectiveTime has no @value"
        )
        return raw_time, None
    try:
        parsed = parse_hl7_time(raw_time)
    except ValueError as exc:
        missing["creationTime"] = f"ClinicalDocument/effectiveTime: {exc}"
        return raw_time, None
    if isinstance(parsed, datetime):
        return raw_time, parsed
    missing["creationTime"] = (
        f"ClinicalDocument/effectiveTime {raw_time!r} is a date without time and UTC offset"
    )
    return raw_time, None


def _kind(
    code: str | None,
    code_system: str | None,
    template_ids: list[str],
    display: str | None,
    missing: dict[str, str],
) -> nsi.KindMatch | None:
    """The document's 1520 kind, from its code, templates or title (None, and why in ``missing``)."""
    kind = nsi.kind_for_document(code, code_system, template_ids, display_name=display)
    if kind is None:
        missing["kind"] = nsi.explain_no_kind(code, code_system, template_ids)
    elif kind.kind is None:
        missing["kind.rules"] = (
            f"1520 code {kind.code} is not in {nsi.SHIPPED}: its patient and signature rules are unknown"
        )
    elif kind.kind.organization_signature is None:
        missing["kind.rules"] = (
            f"1520 code {kind.code} is a row of the supplement to НСИ 1520 v{nsi.NSI_1520_VERSION}: its patient "
            "and signature rules are unknown"
        )
    return kind


def _department(root: etree._Element, organization_oid: str | None, missing: dict[str, str]) -> str | None:
    """The author's structural unit, an OID ``<organisation OID>.0.<n>`` (None, and why in ``missing``)."""
    rep = _first(root, "h:author/h:assignedAuthor/h:representedOrganization/h:id")
    ext = _attr(rep, "extension")
    if organization_oid and ext and ext.startswith(organization_oid + ".0."):
        return ext
    missing["departmentOid"] = (
        "author/assignedAuthor/representedOrganization/id/@extension is not a "
        "structural-unit OID <organisation OID>.0.<n>"
    )
    return None


def _patient(root: etree._Element, missing: dict[str, str]) -> Patient | None:
    """recordTarget/patientRole (None, and why in ``missing``, when the document has none)."""
    role = _first(root, "h:recordTarget/h:patientRole")
    if role is None:
        missing["patient"] = "no recordTarget/patientRole"
        return None
    ids = _x(role, "h:id")
    snils, problem = _snils(ids)
    if problem:
        missing["patient.snils"] = problem
    person = _first(role, "h:patient")
    family, given, patronymic = _names(person)
    birth = None
    birth_raw = _attr(_first(person, "h:birthTime"), "value") if person is not None else None
    if birth_raw:
        try:
            parsed_birth = parse_hl7_time(birth_raw[:8])
            birth = parsed_birth if isinstance(parsed_birth, date) else None
        except ValueError:
            missing["patient.birthDate"] = f"birthTime {birth_raw!r} is not a date"
    gender = _attr(_first(person, "h:administrativeGenderCode"), "code") if person is not None else None
    return Patient(
        snils=snils,
        local_id=_local_id(ids),
        family=family,
        given=given,
        patronymic=patronymic,
        gender=gender,
        birth_date=birth,
    )


def _signers(root: etree._Element, organization_oid: str | None, missing: dict[str, str]) -> list[Signer]:
    """Every author, legalAuthenticator and authenticator, in that order."""
    signers: list[Signer] = []
    for path, entity_name, role_name in (
        ("h:author", "h:assignedAuthor", "author"),
        ("h:legalAuthenticator", "h:assignedEntity", "legalAuthenticator"),
        ("h:authenticator", "h:assignedEntity", "authenticator"),
    ):
        for n, participation in enumerate(_x(root, path)):
            entity = _first(participation, entity_name)
            if entity is not None:
                signers.append(
                    _signer(
                        participation,
                        entity,
                        role_name,
                        "h:assignedPerson",
                        missing,
                        f"signers[{role_name} {n}]",
                        organization_oid,
                    )
                )
    if not any(s.role == "legalAuthenticator" for s in signers):
        missing["signers.legalAuthenticator"] = "no legalAuthenticator/assignedEntity"
    return signers

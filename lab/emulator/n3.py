"""The emulator's N3.Health face: PixService, EmkService, a status method and the document storage, in front of
the same registry as its ИПС face.

It reads every request **through the project's schema** (``services/data/n3/n3-subset.xsd``, namespaces taken from
the schema files themselves), never through the N3 transport's builder or names module (``tests/test_layers.py``
checks that this module imports neither): it tests our reading of N3's contract instead of sharing it. A request
the schema refuses is answered as a WCF service answers one it cannot deserialise: HTTP 500, a SOAP 1.1
``s:Client`` fault whose detail is N3's ``RequestFault`` naming the property (``PropertyName``) with every schema
complaint in its nested ``Errors``. Paths and operations, as on N3's stand::

    POST /n3/…/PixService.svc   AddPatient (SOAPAction http://tempuri.org/IPixService/AddPatient)
    POST /n3/…/EMKService.svc   AddMedRecord (…/IEmkService/AddMedRecord); AddCase is refused
    POST /n3/status             [G] the status method (docs/transports.md): {idDocumentMis, oidMo} → status
    POST /n3/docstorage/        «Поиск документа по ДМС» (its real parameters; no emdrId in its answer)

Checks, in order: the SOAPAction names the operation in the body (else a bare ``ActionNotSupported`` fault); the
schema; the ``guid`` is a client's and ``idLpu``/``idLPU`` that client's ЛПУ; AddMedRecord's ``idPatientMis`` was
added by AddPatient for that ЛПУ; ``IdMedDocumentType`` is a dictionary-195 code of the attached СЭМД's kind
(read from the dictionary's data file); then what РЭМД checks (``checks.check_request`` and ``check_document`` on
a registration made from the СЭМД's own header and the request's signatures, as N3 would forward it) and the
localUid rules. Problems of the document come as an ``ArrayOfRequestFault`` (the ``ListOf_`` fault), each message
quoting the РЭМД code as N3's texts do (``Code: X``). A taken document is registered ``delay`` seconds later under
the N3 platform's information system (``N3_SYSTEM``), unless dictionary 195 says N3 does not forward its type to
РЭМД: then it is held for ever, as N3 would keep it in its ИЭМК. Rules: ``reject`` (a RequestFault quoting its
code) and ``warn`` (taken, answered with a RequestWarning fault) on ``n3:AddMedRecord``; the ``rejections``
scenario refuses the documents it would refuse on ИПС (``faults.rejection_for``), at once, quoting the code.

Each call is in the request log as ``n3:AddPatient`` / ``n3:AddMedRecord`` with the ``X-Request-ID`` it carried as
its MessageID: the id Нетрика's support would be given.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from lxml import etree

from lab.emulator import checks
from lab.emulator.faults import FaultInjector, rejection_for
from lab.emulator.registry import Registry
from lab.emulator.variants import LaterRequests
from producer.cda import extract
from producer.errors import PermanentError
from producer.xmlsafe import parse_xml
from services.remd import soap

__all__ = ["ADD_MED_RECORD", "ADD_PATIENT", "N3Face", "N3_SYSTEM", "request_fault", "warning_fault"]

ADD_PATIENT = "n3:AddPatient"
ADD_MED_RECORD = "n3:AddMedRecord"
#: the information system N3 registers its clinics' documents under (one for the platform)
N3_SYSTEM = "n3-platform"
_XML = "text/xml; charset=utf-8"
_JSON = "application/json; charset=utf-8"
_SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
_XSI = "http://www.w3.org/2001/XMLSchema-instance"
#: the contract's SOAPActions (tempuri + the service interface + the operation)
_ACTIONS = {
    "AddPatient": "http://tempuri.org/IPixService/AddPatient",
    "AddMedRecord": "http://tempuri.org/IEmkService/AddMedRecord",
    "AddCase": "http://tempuri.org/IEmkService/AddCase",
}
_SERVICE_OF = {"AddPatient": "pixservice.svc", "AddMedRecord": "emkservice.svc", "AddCase": "emkservice.svc"}
_REGISTERED = 4  # N3's RegistryRemd status «Успешно зарегистрировано в МЗ»
_SENT_TO_REMD = 1  # [G] any other status: taken, no answer from РЭМД yet


# --- the schema, read as data ------------------------------------------------------------------------------


def _data(*parts: str) -> Any:
    return resources.files("services").joinpath("data", "n3", *parts)


@cache
def _schema() -> etree.XMLSchema:
    with resources.as_file(_data("n3-subset.xsd")) as path:
        return etree.XMLSchema(etree.parse(str(path)))


@cache
def namespaces() -> dict[str, str]:
    """``{"tempuri": …, "pix": …, "meddoc": …, "dto": …, "common": …, …}``: each schema file's targetNamespace."""
    out = {}
    with resources.as_file(_data("n3-subset.xsd")) as entry:
        for path in sorted(Path(entry).parent.glob("n3-*.xsd")):
            target = etree.parse(str(path)).getroot().get("targetNamespace")
            if target:
                out[path.stem.removeprefix("n3-")] = target
    return out


@cache
def _search_schema() -> Draft202012Validator:
    return Draft202012Validator(
        json.loads(_data("docstorage-search.schema.json").read_text(encoding="utf-8"))
    )


@cache
def _dictionary() -> dict[int, tuple[str, str | None]]:
    """Dictionary 195 as shipped: code → (РЭМД kind, allowRemdExport)."""
    raw = json.loads(_data("nsi-195-v374.json").read_text(encoding="utf-8"))
    return {
        int(i["code"]): (str(i["remd_code"]), i.get("allowRemdExport"))
        for i in raw["items"]
        if i.get("remd_code")
    }


_ELEMENT = re.compile(r"Element '(?:\{[^}]*\})?([^']+)'")
_EXPECTED = re.compile(r"Expected is .*?\(\s*(?:\{[^}]*\})?([^\s,)]+)")


def _property(message: str) -> str:
    """The property a schema complaint is about: the missing child it expects, else the element it names."""
    if "Missing child element" in message:
        found = _EXPECTED.search(message)
        if found:
            return found.group(1)
    found = _ELEMENT.search(message)
    return found.group(1) if found else ""


# --- answers -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Problem:
    property_name: str | None
    message: str
    code: int


def _fault_envelope(faultcode: str, faultstring: str) -> tuple[etree._Element, etree._Element]:
    env = etree.Element(f"{{{_SOAP11}}}Envelope", nsmap={"s": _SOAP11})
    fault = etree.SubElement(etree.SubElement(env, f"{{{_SOAP11}}}Body"), f"{{{_SOAP11}}}Fault")
    etree.SubElement(fault, "faultcode").text = faultcode
    etree.SubElement(fault, "faultstring").text = faultstring
    return env, fault


def _problem(parent: etree._Element, tag: str, p: Problem, code_tag: str, nested_tag: str,
             nested: list[Problem] | None = None, *, top: bool = False) -> None:  # fmt: skip
    cmn = namespaces()["common"]
    el = etree.SubElement(parent, f"{{{cmn}}}{tag}", nsmap={None: cmn, "i": _XSI} if top else None)
    prop = etree.SubElement(el, f"{{{cmn}}}PropertyName")
    if p.property_name:
        prop.text = p.property_name
    else:
        prop.set(f"{{{_XSI}}}nil", "true")
    etree.SubElement(el, f"{{{cmn}}}Message").text = p.message
    etree.SubElement(el, f"{{{cmn}}}{code_tag}").text = str(p.code)
    if nested:
        box = etree.SubElement(el, f"{{{cmn}}}{nested_tag}")
        for sub in nested:
            _problem(box, tag, sub, code_tag, nested_tag)


def _detail(problems: list[Problem], kind: str, *, listed: bool, nested: bool) -> bytes:
    code_tag, nested_tag = ("ErrorCode", "Errors") if kind == "RequestFault" else ("WarningCode", "Warnings")
    env, fault = _fault_envelope("s:Client", problems[0].message)
    detail = etree.SubElement(fault, "detail")
    if listed:
        cmn = namespaces()["common"]
        box = etree.SubElement(detail, f"{{{cmn}}}ArrayOf{kind}", nsmap={None: cmn, "i": _XSI})
        for p in problems:
            _problem(box, kind, p, code_tag, nested_tag)
    else:
        _problem(detail, kind, problems[0], code_tag, nested_tag, problems[1:] if nested else None, top=True)
    return etree.tostring(env, encoding="UTF-8", xml_declaration=True)


def request_fault(problems: list[Problem], *, listed: bool = False, nested: bool = False) -> bytes:
    """A SOAP 1.1 ``s:Client`` fault with N3's detail: one ``RequestFault`` (the first problem; with ``nested``, the
    others as its ``Errors``), or with ``listed`` an ``ArrayOfRequestFault`` of all (the ``ListOf_`` fault)."""
    return _detail(problems, "RequestFault", listed=listed, nested=nested)


def warning_fault(warnings: list[Problem], *, listed: bool = False) -> bytes:
    """A fault whose detail is N3's ``RequestWarning`` (the others nested in ``Warnings``), or with ``listed`` an
    ``ArrayOfRequestWarning``: the document was taken, with remarks."""
    return _detail(warnings, "RequestWarning", listed=listed, nested=True)


def _bare_fault(code: str, text: str) -> bytes:
    env, _ = _fault_envelope(code, text)
    return etree.tostring(env, encoding="UTF-8", xml_declaration=True)


def _response(operation: str) -> bytes:
    env = etree.Element(f"{{{_SOAP11}}}Envelope", nsmap={"s": _SOAP11})
    body = etree.SubElement(env, f"{{{_SOAP11}}}Body")
    tempuri = namespaces()["tempuri"]
    etree.SubElement(body, f"{{{tempuri}}}{operation}Response", nsmap={None: tempuri})
    return etree.tostring(env, encoding="UTF-8", xml_declaration=True)


class Refused(Exception):
    """A request this face refuses: the HTTP status and body to answer."""

    def __init__(
        self, body: bytes, codes: list[str], status: int = 500, operation: str | None = None
    ) -> None:
        super().__init__(codes)
        self.body, self.codes, self.status, self.operation = body, codes, status, operation


def _refuse(property_name: str | None, message: str, *, code: int = 1, remd: str | None = None) -> Refused:
    text = f"Code: {remd}: {message}" if remd else message
    return Refused(request_fault([Problem(property_name, text, code)]), [remd or f"N3:{code}"])


# --- reading a request through the schema ------------------------------------------------------------------


def _read(body: bytes, action: str | None, path: str) -> tuple[str, etree._Element]:
    """(operation, the Body's payload) of a request the schema accepts; ``Refused`` otherwise."""
    try:
        root = parse_xml(body)
    except PermanentError as exc:
        raise Refused(
            _bare_fault("s:Client", f"Запрос не является XML: {exc.message}"), ["NOT_XML"]
        ) from None
    bodies = root.findall(f"{{{_SOAP11}}}Body") if etree.QName(root).namespace == _SOAP11 else []
    payload = next((c for c in bodies[0] if isinstance(c.tag, str)), None) if bodies else None
    if payload is None:
        raise Refused(_bare_fault("s:Client", "Не SOAP 1.1 конверт с телом"), ["NOT_SOAP11"])
    operation = etree.QName(payload).localname
    wanted = _ACTIONS.get(operation)
    if wanted is None or (action or "").strip().strip('"') != wanted:
        raise Refused(
            _bare_fault(
                "a:ActionNotSupported",
                f"The message with Action '{(action or '').strip()}' cannot be processed at the receiver "
                f"(the body holds {operation})",
            ),
            ["ACTION_NOT_SUPPORTED"],
        )
    if not path.lower().endswith(_SERVICE_OF[operation]):
        raise Refused(_bare_fault("a:ActionNotSupported", f"{operation} is not an operation of {path}"),
                      ["ACTION_NOT_SUPPORTED"])  # fmt: skip
    schema = _schema()
    if not schema.validate(payload):
        complaints = [Problem(_property(e.message), e.message, 1) for e in schema.error_log]
        first = complaints[0]
        head = Problem(first.property_name, f"Запрос не соответствует контракту: {first.message}", 1)
        raise Refused(request_fault([head, *complaints], nested=True), ["SCHEMA"], operation=operation)
    return operation, payload


def _x(el: etree._Element, path: str) -> str | None:
    """The text at ``path`` (steps ``prefix:Local`` with the schema's namespaces), stripped; None when absent."""
    found = el.xpath(path, namespaces=namespaces())
    if not found:
        return None
    node = found[0]
    text = node if isinstance(node, str) else "".join(node.itertext())
    return text.strip() or None


def _staff(el: etree._Element) -> dict[str, str | None]:
    person = "dto:Person"
    return {
        "snils": _x(el, f"{person}/dto:Documents/dto:IdentityDocument[dto:IdDocumentType='223']/dto:DocN"),
        "given": _x(el, f"{person}/dto:HumanName/dto:GivenName"),
        "patronymic": _x(el, f"{person}/dto:HumanName/dto:MiddleName"),
        "family": _x(el, f"{person}/dto:HumanName/dto:FamilyName"),
        "local_id": _x(el, f"{person}/dto:IdPersonMis"),
        "speciality": _x(el, "dto:IdSpeciality"),
        "position": _x(el, "dto:IdPosition"),
    }


# --- the face ---------------------------------------------------------------------------------------------------


class N3Face:
    """``handle(path, body, headers) -> (HTTP status, body, content type)`` for the ``/n3/`` paths."""

    def __init__(
        self,
        *,
        registry: Registry,
        faults: FaultInjector,
        tokens: Mapping[str, str],
        later: LaterRequests,
        delay: float = 1.0,
        rejection_rate: float = 0.0,
    ) -> None:
        self.registry, self.faults, self.later, self.delay = registry, faults, later, delay
        #: the ``rejections`` scenario's share of documents refused, as on the ИПС face (``faults.rejection_for``)
        self.rejection_rate = rejection_rate
        self.tokens = dict(tokens)  # token → ЛПУ id
        self._held: dict[str, tuple[str, str, str | None]] = {}  # localUid → (organisation, kind, creation)
        self._patients: dict[tuple[str, str], dict[str, str | None]] = {}  # (ЛПУ, IdPatientMIS) → patient
        self._lock = threading.Lock()

    def reset(self) -> None:
        """Forget the patients and the documents taken and not yet registered (with the registry's own reset)."""
        with self._lock:
            self._held.clear()
            self._patients.clear()

    def handle(self, path: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, bytes, str]:
        if path.rstrip("/").endswith("/docstorage"):
            return self._search(body, headers)
        if path.rstrip("/").endswith("/status"):
            return self._status(body, headers)
        return self._soap(path, body, headers)

    # --- SOAP ------------------------------------------------------------------------------------------

    def _soap(self, path: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, bytes, str]:
        request_id = headers.get("X-Request-ID")
        try:
            operation, payload = _read(body, headers.get("SOAPAction"), path)
        except Refused as refused:
            entry = self.registry.log_request(f"n3:{refused.operation or 'unknown'}", message_id=request_id)
            return self._refused(entry, refused)
        entry = self.registry.log_request(f"n3:{operation}", message_id=request_id)
        try:
            if operation == "AddPatient":
                return 200, self._add_patient(payload), _XML
            if operation == "AddMedRecord":
                return self._add_med_record(payload, entry, request_id)
            raise _refuse("caseDto", "AddCase не поддерживается: готовый СЭМД передаётся в AddMedRecord")
        except Refused as refused:
            return self._refused(entry, refused)

    def _refused(self, entry: Any, refused: Refused) -> tuple[int, bytes, str]:
        self.registry.update(
            entry, outcome="rejected", sync_codes=refused.codes, finished_at=dt.datetime.now(dt.UTC)
        )
        return refused.status, refused.body, _XML

    def _client(self, payload: etree._Element, lpu_name: str) -> str:
        token = _x(payload, "tempuri:guid") or ""
        lpu = _x(payload, f"tempuri:{lpu_name}")
        if token not in self.tokens:
            raise _refuse("guid", "Неизвестный guid: клиент не зарегистрирован на платформе", code=401)
        if self.tokens[token] != lpu:
            raise _refuse(lpu_name, f"ЛПУ [{lpu}] не принадлежит этому guid", code=403)
        return lpu or ""

    def _add_patient(self, payload: etree._Element) -> bytes:
        lpu = self._client(payload, "idLPU")
        p = "tempuri:patient/pix:"
        patient = {
            "snils": _x(payload, f"{p}Documents/pix:DocumentDto[pix:IdDocumentType='223']/pix:DocN"),
            "family": _x(payload, f"{p}FamilyName"),
            "given": _x(payload, f"{p}GivenName"),
            "patronymic": _x(payload, f"{p}MiddleName"),
            "birth_date": (_x(payload, f"{p}BirthDate") or "")[:10] or None,
            "gender": _x(payload, f"{p}Sex"),
        }
        with self._lock:
            self._patients[(lpu, _x(payload, f"{p}IdPatientMIS") or "")] = patient
        return _response("AddPatient")

    def _add_med_record(
        self, payload: etree._Element, entry: Any, request_id: str | None
    ) -> tuple[int, bytes, str]:
        arrival = dt.datetime.now(dt.UTC)
        lpu = self._client(payload, "idLpu")
        record = "tempuri:medRecord/meddoc:"
        local_uid = _x(payload, f"{record}IdDocumentMis") or ""
        self.registry.update(entry, local_uid=local_uid, client_entity_id=N3_SYSTEM)
        with self._lock:
            patient = self._patients.get((lpu, _x(payload, "tempuri:idPatientMis") or ""))
        if patient is None:
            raise _refuse("idPatientMis", "Пациент не найден: сначала PixService.AddPatient", code=404)
        decision = self.faults.decide(operation=ADD_MED_RECORD, message_id=request_id, local_uid=local_uid)
        if decision.sync_kind == "http_error" and decision.sync is not None:
            self.registry.update(entry, outcome="injected:http_error")
            return decision.sync.status, b"N3 temporarily unavailable (injected)", "text/plain; charset=utf-8"
        reject = decision.callbacks.get("reject")
        if reject is not None:
            raise _refuse(
                None, "Отклонено правилом эмулятора", code=2, remd=reject.code or "VALIDATION_ERROR"
            )
        forced = rejection_for(local_uid, rate=self.rejection_rate) if self.rejection_rate else None
        if forced is not None:
            raise _refuse(None, forced.message, code=2, remd=forced.code)
        attachment = f"{record}Attachments/meddoc:MedDocumentDto.DocumentAttachment/meddoc:"
        document = base64.b64decode(_x(payload, f"{attachment}Data") or "")
        try:
            meta = extract(parse_xml(document))
        except PermanentError as exc:
            raise _refuse(
                "Data", f"Вложение не является СЭМД: {exc.message}", remd="INVALID_CONTENT"
            ) from None
        type_code = int(_x(payload, f"{record}IdMedDocumentType") or 0)
        row = _dictionary().get(type_code)
        if row is None or row[0] != meta.kind_code:
            raise _refuse(
                "IdMedDocumentType",
                f"Тип документа [{type_code}] справочника 1.2.643.2.69.1.1.1.195 не соответствует виду СЭМД "
                f"[{meta.kind_code}] (в справочнике: вид {row[0] if row else 'нет'})",
                code=3,
            )
        reg = self._registration(payload, meta, attachment, local_uid)
        errors = checks.check_request(reg, now=arrival) or checks.check_document(
            reg, document, arrival=arrival
        )
        if errors:
            raise Refused(
                request_fault(
                    [Problem(None, f"Code: {e.code}: {e.message}", 2) for e in errors], listed=True
                ),
                [e.code for e in errors],
            )
        digest = hashlib.sha256(document).hexdigest()
        existing = self.registry.lookup(N3_SYSTEM, local_uid)
        if existing is not None and existing.digest != digest:
            raise _refuse(
                "IdDocumentMis",
                f"Документ с идентификатором [{local_uid}] уже зарегистрирован [{existing.emdr_id}] с другим "
                f"содержимым: изменённый СЭМД регистрируется под новым localUid",
                remd="NOT_UNIQUE_PROVIDED_ID",
            )
        self.registry.update(entry, organization=reg.organization, outcome="accepted")
        if existing is None:
            with self._lock:
                new = local_uid not in self._held
                self._held.setdefault(local_uid, (reg.organization, reg.kind, reg.creation_date_time))
            if new and row[1] == "true":  # N3 forwards this type to РЭМД; otherwise it stays in the ИЭМК
                self.later.schedule(self.delay, lambda: self._register(entry, reg, digest))
        warn = decision.callbacks.get("warn")
        if warn is not None:
            self.registry.update(entry, faults=["warn"])
            remark = Problem("Header", f"Замечание эмулятора: {warn.code or 'проверьте заголовок'}", 7)
            return 500, warning_fault([remark]), _XML
        return 200, _response("AddMedRecord"), _XML

    def _registration(
        self, payload: etree._Element, meta: Any, attachment: str, local_uid: str
    ) -> soap.Registration:
        """What N3 would send РЭМД: the СЭМД's own header, the request's signatures (each doctor's data from the
        request, position and role from the СЭМД, matched by СНИЛС)."""
        signs = []
        for sign in payload.xpath(
            f"{attachment}PersonalSigns/meddoc:MedDocumentDto.PersonalSign", namespaces=namespaces()
        ):
            doctor = _staff(sign.xpath("meddoc:Doctor", namespaces=namespaces())[0])
            in_doc = next((s for s in meta.signers if s.snils == doctor["snils"]), None)
            signer = soap.Signer(
                role=soap.Coded("1"),
                snils=doctor["snils"],
                local_id=doctor["local_id"],
                family=doctor["family"],
                given=doctor["given"],
                patronymic=doctor["patronymic"],
                position=soap.Coded(in_doc.position_code) if in_doc and in_doc.position_code else None,
            )
            signs.append(
                soap.PersonalSignature(
                    signer=signer, signature=base64.b64decode(_x(sign, "meddoc:Sign") or "")
                )
            )
        org = _x(payload, f"{attachment}OrganizationSign")
        p = meta.patient
        return soap.Registration(
            kind=meta.kind_code or "",
            system=N3_SYSTEM,
            organization=meta.organization_oid or "",
            local_uid=local_uid,
            creation_date_time=_x(payload, "tempuri:medRecord/meddoc:CreationDate") or "",
            patient=soap.Patient(
                snils=p.snils,
                local_id=p.local_id,
                family=p.family,
                given=p.given,
                patronymic=p.patronymic,
                gender=p.gender,
                birth_date=p.birth_date.isoformat() if p.birth_date else None,
            )
            if p
            else soap.Patient(),
            personal_signatures=tuple(signs),
            org_signature=soap.OrgSignature(signature=base64.b64decode(org)) if org else None,
            department=meta.department_oid,
            document_number=meta.document_number,
        )

    def _register(self, entry: Any, reg: soap.Registration, digest: str) -> None:
        record, existing = self.registry.register(
            local_uid=reg.local_uid,
            organization=reg.organization,
            kind=reg.kind,
            message_id=entry.message_id or "",
            client_entity_id=N3_SYSTEM,
            patient_snils=reg.patient.snils,
            digest=digest,
        )
        with self._lock:
            self._held.pop(reg.local_uid, None)
        done = record or existing
        self.registry.update(
            entry,
            outcome="registered",
            emdr_id=done.emdr_id if done else None,
            finished_at=dt.datetime.now(dt.UTC),
        )

    # --- JSON services -------------------------------------------------------------------------------

    def _authorised(self, headers: Mapping[str, str]) -> bool:
        scheme, _, token = (headers.get("Authorization") or "").partition(" ")
        return scheme == "N3" and token.strip() in self.tokens

    def _status(self, body: bytes, headers: Mapping[str, str]) -> tuple[int, bytes, str]:
        """[G] The document's РЭМД status as N3 keeps it: 4 with the emdrId once registered."""
        if not self._authorised(headers):
            return 401, b'{"error": "unauthorized"}', _JSON
        try:
            query = json.loads(body or b"{}")
            local_uid, organization = str(query["idDocumentMis"]), str(query["oidMo"])
        except (ValueError, KeyError, TypeError):
            return 400, b'{"error": "idDocumentMis and oidMo are required"}', _JSON
        self.registry.log_request("n3:status", local_uid=local_uid, outcome="answered")
        record = self.registry.lookup(N3_SYSTEM, local_uid)
        if record is not None and record.organization == organization:
            answer = {
                "idDocumentMis": local_uid,
                "status": _REGISTERED,
                "emdrId": record.emdr_id,
                "registrationDateTime": record.registration_date_time.isoformat(),
                "message": "Успешно зарегистрировано в МЗ",
            }
        else:
            with self._lock:
                held = self._held.get(local_uid)
            if held is None or held[0] != organization:
                return 404, b'{"error": "document not found"}', _JSON
            answer = {"idDocumentMis": local_uid, "status": _SENT_TO_REMD, "message": "Передано в РЭМД"}
        return 200, json.dumps(answer, ensure_ascii=False).encode(), _JSON

    def _search(self, body: bytes, headers: Mapping[str, str]) -> tuple[int, bytes, str]:
        """«Поиск документа по ДМС»: the query is checked against its real parameters; the emulator knows no ДМС
        policy, so a valid search finds nothing (as it would for a patient without one)."""
        if not self._authorised(headers):
            return 401, b'{"error": "unauthorized"}', _JSON
        try:
            query = json.loads(body or b"{}")
        except ValueError:
            return 400, b'{"error": "not JSON"}', _JSON
        problem = next(iter(_search_schema().iter_errors(query)), None)
        if problem is not None:
            where = ".".join(str(p) for p in problem.absolute_path) or "request"
            text = json.dumps({"error": f"{where}: {problem.message}"}, ensure_ascii=False)
            return 400, text.encode(), _JSON
        self.registry.log_request("n3:docstorage", outcome="answered")
        return 200, b"[]", _JSON

"""The N3.Health route: the second ``Transport`` (``services.remd.transport``), for clinics whose МИС reaches
ФРЭМД through N3 (the route of the dental МИС this project started from).

``submit`` makes one attempt: PixService ``AddPatient`` when the sender asks for it (``SubmitRequest.add_patient``:
the patient is not known to N3 as it is now), then EmkService ``AddMedRecord`` with the signed СЭМД and every
signature (``services.remd.n3``; SOAP 1.1, the clinic's GUID as the first parameter, our request id in
``X-Request-ID`` of both calls). Each request is checked against the project's schema before it leaves. N3 then
registers the document in РЭМД itself; how it reports the result is not public, so the status is asked through
:class:`N3Status`, the one interface a callback or N3's own status method replaces: today
:class:`PolledStatusMethod`, a poll of a guessed status method [G] (``has_callbacks`` False). Classification::

    accepted    AddMedRecordResponse; a fault carrying only RequestWarnings (the warnings kept for the МИС) [G]
    transient   network failures (transport.post), HTTP 5xx / 408 / 429 without SOAP, a non-SOAP 2xx,
                s:Server faults and bare faults without N3's detail from the server side (N3_SERVER_FAULT),
                a РЭМД code quoted in the fault that is transient, a fault naming idPatientMis (N3_PATIENT_UNKNOWN:
                AddPatient is sent again)
    permanent   RequestFault / ArrayOfRequestFault (N3_REQUEST_REFUSED; its category: a РЭМД code quoted in the
                message decides, else configuration for guid/idLpu/codes, data for the document's fields),
                HTTP 401/403 (the GUID) and other 4xx without SOAP

:param client: an ``httpx.AsyncClient`` (tests pass one with ``httpx.MockTransport``); default: our own.
:param connect_timeout / read_timeout: seconds (defaults 10 / 60). :param max_connections: pool size (32).
:param status: how results are learnt (default :class:`PolledStatusMethod` over the same client).
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import date
from typing import Any, Protocol

import httpx

from producer.errors import EmdError, TransientError
from services.logs import get_logger
from services.outcome import Outcome
from services.remd import codes, envelope, n3, soap
from services.remd import n3_names as names
from services.remd.transport import (
    LookupRequest,
    SubmitOutcome,
    SubmitRequest,
    post,
)

__all__ = ["N3Status", "N3Transport", "PolledStatusMethod", "build_requests", "classify_n3_answer"]

log = get_logger(__name__)

#: fault properties that name the deployment's settings, not the document: guid, idLpu/idLPU, the codes
_CONFIGURATION_PROPERTIES = {
    names.GUID.lower(),
    names.EMK_ID_LPU.lower(),
    names.ID_MED_DOCUMENT_TYPE.lower(),
    names.ID_SPECIALITY.lower(),
    names.ID_POSITION.lower(),
}
_ASK_NETRIKA = "ask Нетрика's support with the request id (X-Request-ID) and the localUid"


def _auth(token: str) -> dict[str, str]:
    return {names.AUTH_HEADER: f"{names.AUTH_SCHEME} {token}"}


def _leaf(property_name: str | None) -> str:
    """``medRecord.Author.IdSpeciality`` → ``idspeciality``: the member a fault names, whatever path it gives."""
    return (property_name or "").replace("/", ".").rsplit(".", 1)[-1].strip().lower()


def _no_soap(status: int, operation: str, exc: EmdError) -> SubmitOutcome:
    if status in (401, 403):
        return SubmitOutcome(
            kind=Outcome.PERMANENT,
            reason=f"HTTP_{status}",
            http_status=status,
            category="configuration",
            message=f"HTTP {status}: N3 refuses the clinic's GUID",
            hint="check the organisation's remd.n3 token and ЛПУ id with Нетрика",
        )
    if status >= 500 or status in (408, 429):
        return SubmitOutcome(
            kind=Outcome.TRANSIENT,
            reason=f"HTTP_{status}",
            http_status=status,
            transport_failure=True,
            ambiguous=status >= 500,
            message=f"{operation}: HTTP {status} without a SOAP answer",
        )
    if 400 <= status < 500:
        return SubmitOutcome(
            kind=Outcome.PERMANENT,
            reason=f"HTTP_{status}",
            http_status=status,
            category="configuration",
            message=f"{operation}: HTTP {status} without a SOAP answer",
            hint="check the organisation's remd.endpoint (N3's EmkService address) and PixService's",
        )
    return SubmitOutcome(
        kind=Outcome.TRANSIENT,
        reason="MALFORMED_ANSWER",
        http_status=status,
        transport_failure=True,
        ambiguous=True,
        message=f"answer is not an {operation} response ({exc.reason})",
    )


def _warnings(answer: n3.N3Answer) -> tuple[tuple[str, str], ...]:
    return tuple((f"N3:{w.code}" if w.code is not None else "N3", w.describe()) for w in answer.warnings)


def classify_n3_answer(status: int, body: bytes, operation: str = names.ADD_MED_RECORD) -> SubmitOutcome:
    """What N3's answer to ``operation`` means (the table in the module docstring)."""
    try:
        answer = n3.parse_answer(body, operation)
    except EmdError as exc:
        return _no_soap(status, operation, exc)
    if answer.taken:
        return SubmitOutcome(
            kind=Outcome.ACCEPTED, reason="ACCEPTED", http_status=status, warnings=_warnings(answer)
        )
    fault = answer.fault
    assert fault is not None
    said = "; ".join(p.describe() for p in answer.errors) or f"{fault.code}: {fault.reason}"
    listed = " (ListOf_RequestFault)" if answer.listed else ""
    message = f"{operation} refused{listed}: {said}"
    common: dict[str, Any] = {"http_status": status, "message": message, "warnings": _warnings(answer)}
    if answer.remd_codes:  # РЭМД's own verdict, quoted by N3: the code table decides
        code = answer.remd_codes[0]
        info = codes.classify(code)
        return SubmitOutcome(
            kind=Outcome.TRANSIENT if info.transient else Outcome.PERMANENT,
            reason="N3_REQUEST_REFUSED",
            remd_code=code,
            remd_message=said,
            category=info.category,
            hint=info.hint,
            defer=info.retry_after,
            **common,
        )
    if not answer.errors or fault.server_side:
        if fault.server_side:
            return SubmitOutcome(
                kind=Outcome.TRANSIENT,
                reason="N3_SERVER_FAULT",
                category="transient",
                transport_failure=True,
                ambiguous=True,
                **common,
            )
        return SubmitOutcome(  # a bare client fault: WCF could not read the request at all
            kind=Outcome.PERMANENT,
            reason="N3_REQUEST_REFUSED",
            category="configuration",
            hint=f"N3 could not read the request (not its contract?): {_ASK_NETRIKA}",
            **common,
        )
    leaves = {_leaf(p.property_name) for p in answer.errors}
    if operation == names.ADD_MED_RECORD and names.PATIENT_UNKNOWN_PROPERTY.lower() in leaves:
        return SubmitOutcome(
            kind=Outcome.TRANSIENT,
            reason="N3_PATIENT_UNKNOWN",
            category="transient",
            hint="N3 does not know the patient: the next attempt sends AddPatient first",
            **common,
        )
    configuration = bool(leaves & _CONFIGURATION_PROPERTIES) or leaves == {""}
    return SubmitOutcome(
        kind=Outcome.PERMANENT,
        reason="N3_REQUEST_REFUSED",
        category="configuration" if configuration else "data",
        hint=(
            f"N3 refuses the clinic's settings or codes (organisations file, dictionary 195): {_ASK_NETRIKA}"
            if configuration
            else f"N3 refuses a field of the document: the МИС must correct it; {_ASK_NETRIKA}"
        ),
        **common,
    )


def build_requests(request: SubmitRequest) -> list[tuple[str, str, bytes]]:
    """Every request of this attempt, in sending order: ``(operation, endpoint, body)``; AddPatient first when
    asked for. ``ValueError`` for what cannot be built (no codes, no document, a request our schema refuses)."""
    if request.document is None or not request.auth_token or not request.lpu_id:
        raise ValueError("an N3 record needs the document, the clinic's N3 GUID and its ЛПУ id")
    if request.n3_codes is None:
        raise ValueError("an N3 record needs the dictionary-195 code of its kind and its doctors' codes")
    r = request.registration
    out = []
    if request.add_patient:
        pix = request.pix_endpoint or n3.pix_endpoint_for(request.endpoint)
        out.append(
            (
                names.ADD_PATIENT,
                pix,
                n3.build_add_patient(r.patient, token=request.auth_token, lpu_id=request.lpu_id),
            )
        )
    body = n3.build_add_med_record(
        r,
        document=request.document,
        token=request.auth_token,
        lpu_id=request.lpu_id,
        codes=request.n3_codes,
    )
    out.append((names.ADD_MED_RECORD, request.endpoint, body))
    for operation, _, data in out:
        problems = n3.validate(envelope.open_envelope(data)[1])
        if problems:
            raise ValueError(f"{operation} fails the project's N3 schema: {problems[0]}")
    return out


class N3Status(Protocol):
    """How the N3 route learns what РЭМД made of a document. N3 publishes no way yet; whichever it gives (a
    callback, a status method) replaces :class:`PolledStatusMethod` here and nowhere else."""

    #: whether results come by themselves (a callback); without, the status worker polls ``registration``
    calls_back: bool

    async def registration(self, request: LookupRequest) -> soap.RegistryItem | None: ...


class PolledStatusMethod:
    """[G] A status method N3 does not publish: ``POST <remd.n3.status_url>`` with the localUid and organisation,
    ``Authorization: N3 <GUID>`` (as N3's REST services), answering the document's РЭМД status as N3 keeps it
    (4 = registered, with the emdrId). ``docs/transports.md`` lists every name of it as [G]."""

    calls_back = False

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def registration(self, request: LookupRequest) -> soap.RegistryItem | None:
        query = n3.status_query(local_uid=request.local_uid, organization=request.organization)
        try:
            response = await self._client.post(
                request.endpoint, json=query, headers=_auth(request.auth_token or "")
            )
            if response.status_code == 404:
                return None  # N3 holds no such document (yet)
            response.raise_for_status()
            return n3.parse_status_answer(response.json(), local_uid=request.local_uid)
        except (httpx.HTTPError, ValueError, EmdError) as exc:
            raise TransientError(
                f"N3 status request failed: {type(exc).__name__}: {exc}", reason="REGISTRY_LOOKUP_FAILED"
            ) from None


class N3Transport:
    """Registrations through N3.Health's PixService and EmkService; their status through :class:`N3Status`."""

    name = "n3"
    pushes_document = True

    def __init__(
        self,
        *,
        client: httpx.AsyncClient | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        max_connections: int = 32,
        status: N3Status | None = None,
    ) -> None:
        self._own = client is None
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )
        self.status: N3Status = status or PolledStatusMethod(self._client)
        #: as the status source says: a callback makes the route one that is not polled
        self.has_callbacks = self.status.calls_back

    def build(self, request: SubmitRequest) -> list[tuple[str, str, bytes]]:
        """Every request of this attempt (:func:`build_requests`)."""
        return build_requests(request)

    def headers(self, operation: str, request_id: str) -> dict[str, str]:
        """The HTTP headers of one call: SOAP 1.1 with the quoted SOAPAction, and our request id."""
        return {
            **envelope.http_headers("1.1", action=n3.soap_action(operation)),
            names.REQUEST_ID_HEADER: request_id,
        }

    async def submit(self, request: SubmitRequest) -> SubmitOutcome:
        started = time.perf_counter()
        try:
            calls = self.build(request)
        except (ValueError, TypeError, EmdError) as exc:
            return SubmitOutcome(
                kind=Outcome.PERMANENT,
                reason="REQUEST_BUILD_FAILED",
                category="internal" if request.n3_codes is not None else "configuration",
                message=f"the N3 requests could not be built: {exc}",
            )
        patient_added = False
        for operation, endpoint, body in calls:
            response = await post(
                self._client, endpoint, body, self.headers(operation, request.message_id), started
            )
            if isinstance(response, SubmitOutcome):
                return replace(response, patient_added=patient_added)
            outcome = classify_n3_answer(response.status_code, response.content, operation)
            outcome = replace(
                outcome,
                duration=time.perf_counter() - started,
                request=body,
                response=response.content,
                patient_added=patient_added,
            )
            if not outcome.accepted:
                return outcome
            if operation == names.ADD_PATIENT:
                patient_added = True
                if outcome.warnings:
                    log.info("N3 AddPatient warnings", local_uid=request.registration.local_uid,
                             warnings=len(outcome.warnings))  # fmt: skip
        return outcome

    async def lookup(self, request: LookupRequest) -> soap.RegistryItem | None:
        """The document's registration as :attr:`status` learns it (None: not registered yet)."""
        return await self.status.registration(request)

    async def search_documents(
        self, *, url: str, token: str, dms_value: str, organization: str, since: date, until: date
    ) -> list[n3.StoredDocument]:
        """N3's document storage, «Поиск документа по ДМС»: a patient's documents by their ДМС policy number. Not a
        status channel (no emdrId in its output, and most patients have no policy N3 knows): for support tools."""
        query = n3.search_query(dms_value=dms_value, organization=organization, since=since, until=until)
        try:
            response = await self._client.post(url, json=query, headers=_auth(token))
            response.raise_for_status()
            return n3.parse_search_answer(response.json())
        except (httpx.HTTPError, ValueError, EmdError) as exc:
            raise TransientError(
                f"N3 document storage search failed: {type(exc).__name__}: {exc}",
                reason="REGISTRY_LOOKUP_FAILED",
            ) from None

    async def aclose(self) -> None:
        if self._own:
            await self._client.aclose()

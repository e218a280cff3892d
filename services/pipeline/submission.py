"""The sender's domain: one signed event → one registration accepted by РЭМД (or a typed failure).

``Submitter.handle(record)`` in order:

1. decode the ``emd.document.signed`` event; resolve the organisation's РЭМД settings;
2. **idempotency first**: if the lifecycle store says the localUid is already accepted or registered, it
   is never sent again — the ``sent`` event is re-emitted from the store instead (a crash between the
   acceptance and the broker's ack of the ``sent`` event must not lose it; downstream is idempotent). Other
   bytes under a localUid the store holds are a corrected document: taken (the store's content replaced,
   ``resubmit``) only when РЭМД refused what it held, for it registers nothing it refuses; else
   ``LOCAL_UID_REUSED`` (docs/dead-letters.md, "A corrected document");
3. per endpoint: wait while its circuit is open (holding at most ``hold_per_endpoint`` records; more are
   parked back on the first retry tier *without* using an attempt), then a rate-limit/concurrency slot;
4. a new MessageID, recorded and committed in the lifecycle store **before** the request leaves (a document the
   store does not hold yet is created in that same transaction: one commit, not two);
5. accepted → the attempt's outcome and the acceptance committed together, then ``emd.document.sent`` +
   ``emd.document.status`` "sent"; transient → ``TransientError``
   (retry tiers; RATE_LIMIT defers ``rate_limit_defer``, a minute by default); permanent → ``PermanentError`` with the РЭМД code, message,
   category, hint and every MessageID. Transport failures while the circuit is open are not the
   document's fault: the record waits for the circuit and is tried again without burning an attempt.

On the N3.Health route an attempt is PixService ``AddPatient`` (only when ``patients`` does not hold the patient
of this organisation as described now) then EmkService ``AddMedRecord``, with N3's codes resolved here again
(``services.pipeline.n3_route``); N3's warnings on a taken document go to the МИС in the "sent" status, as РЭМД's
registrationWarnings go in the "registered" one.

A redelivery after a crash between send and record (an attempt with no outcome) is sent again with a new
MessageID, without asking ``searchRegistryItem`` first: registration is asynchronous, so "not found" then
proves nothing (the first request may still be in ИПС's queue or in РЭМД's checks), and only "found" would
save the resend, at the price of a search on every crash recovery. If the first request did go through,
РЭМД answers the resend with ``NOT_UNIQUE_PROVIDED_ID``, and the status worker reconciles exactly there
(``services.pipeline.acknowledgment``: it asks the registry, retrying until the registration shows, and acknowledges
the document with its emdrId), which covers lost answers, timeouts and crashes alike.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from prometheus_client import Counter, Histogram

from producer import events, topology
from producer.errors import PermanentError, TransientError
from producer.ids import new_message_id
from services import lifecycle, telemetry
from services.documents.store import DocumentStore, document_bytes
from services.logs import get_logger
from services.messaging import deadletter as dl
from services.messaging.records import Output, Record
from services.metrics import REGISTRY
from services.outcome import Outcome
from services.pipeline import routing
from services.pipeline.exchanges import ExchangeArchive
from services.pipeline.n3_route import dictionary_of, n3_codes, patient_of
from services.pipeline.organizations import Organization, OrganizationsConfig, RemdSettings
from services.remd import codes, n3, soap
from services.remd import names as remd_names
from services.remd.circuit import CircuitBreaker
from services.remd.ratelimit import EndpointLimiter
from services.remd.transport import SubmitOutcome, SubmitRequest, Transport
from services.remd.transports import Transports

log = get_logger(__name__)
SOURCE = "emd-sender"

REQUESTS = Counter(
    "emd_sender_requests",
    "registerDocument attempts by outcome and reason (a РЭМД code of the "
    "code table, or the transport's reason).",
    ["outcome", "reason"],
    registry=REGISTRY,
)
REQUEST_DURATION = Histogram(
    "emd_sender_request_duration_seconds",
    "registerDocument round trip, by outcome.",
    ["outcome"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
    registry=REGISTRY,
)
PARKED = Counter(
    "emd_sender_parked",
    "Records parked on the retry tier while their endpoint's circuit was open.",
    registry=REGISTRY,
)
#: series a dashboard shows from the start (a counter's labelled series exists only after its first use)
for _outcome, _reason in (
    (Outcome.ACCEPTED, "ACCEPTED"),
    (Outcome.TRANSIENT, "RATE_LIMIT"),
    (Outcome.TRANSIENT, "TIMEOUT"),
    (Outcome.TRANSIENT, "CONNECT_ERROR"),
    (Outcome.PERMANENT, "UNKNOWN_REMD_CODE"),
):
    REQUESTS.labels(_outcome, _reason)
    REQUEST_DURATION.labels(_outcome)


def reason_label(outcome: SubmitOutcome) -> str:
    """The ``reason`` label of one attempt, from a bounded set whatever the server sends.

    A РЭМД code counts only if the code table (НСИ 1.2.643.5.1.13.13.99.2.305) knows it, else
    ``UNKNOWN_REMD_CODE``; HTTP statuses are grouped by class (``HTTP_5XX``); the transport's other reasons
    are a fixed set of its own.
    """
    if outcome.remd_code:
        info = codes.classify(outcome.remd_code)
        return "UNKNOWN_REMD_CODE" if info.unknown else info.code
    if outcome.reason.startswith("HTTP_") and outcome.reason[5:].isdigit():
        return f"HTTP_{outcome.reason[5]}XX"
    return outcome.reason


def _b64(text: str | None) -> bytes | None:
    return base64.b64decode(text) if text else None


def _coded(code: str | None, version: str | None) -> soap.Coded | None:
    return soap.Coded(code=code, code_system_version=version) if code else None


def registration_from_event(data: Mapping[str, Any]) -> soap.Registration:
    """The registerDocument content of a signed event (signers matched to signatures by СНИЛС and role).

    Every value is the event's: the producer read it from the CDA or took it from the МИС (the event
    contract, docs/schemas, says which). A signer without a role falls back to the default РЭМД role.
    """
    signers = {(s.get("snils"), s.get("role")): s for s in data.get("signers") or []}
    personal = []
    for sig in (data.get("signatures") or {}).get("personal") or []:
        s = signers.get((sig.get("snils"), sig.get("role"))) or {}
        signer = soap.Signer(
            role=soap.Coded(
                code=s.get("roleCode") or remd_names.DEFAULT_SIGNER_ROLE,
                code_system_version=s.get("roleCodeSystemVersion") or remd_names.DEFAULT_SIGNER_ROLE_VERSION,
            ),
            snils=sig.get("snils"),
            local_id=s.get("localId"),
            family=s.get("family"),
            given=s.get("given"),
            patronymic=s.get("patronymic"),
            position=_coded(s.get("positionCode"), s.get("positionCodeSystemVersion")),
            speciality=_coded(s.get("specialityCode"), s.get("specialityCodeSystemVersion")),
            department=s.get("departmentOid") or data.get("departmentOid"),
        )
        personal.append(soap.PersonalSignature(signer=signer, signature=base64.b64decode(sig["cms"])))
    org_sign = None
    org = (data.get("signatures") or {}).get("organization")
    if org:
        poa = None
        if org.get("mchd"):
            m = org["mchd"]
            poa = soap.PowerOfAttorney(
                number=m["number"],
                principal_inn=m.get("principalInn"),
                principal_ogrn=m.get("principalOgrn"),
                document=_b64(m.get("xml")),
                signature=_b64(m.get("signature")),
            )
        org_sign = soap.OrgSignature(signature=base64.b64decode(org["cms"]), power_of_attorney=poa)
    r = data.get("recipient")
    recipient = (
        soap.Recipient(kind=r["kind"], organization=r.get("organizationOid"), snils=r.get("snils"))
        if r
        else None
    )
    return soap.Registration(
        kind=data["kind"],
        system=data["systemId"],
        organization=data["organizationOid"],
        department=data.get("departmentOid"),
        local_uid=data["localUid"],
        document_number=data.get("documentNumber"),
        creation_date_time=data["creationTime"],
        patient=patient_of(data),
        personal_signatures=tuple(personal),
        org_signature=org_sign,
        recipient=recipient,
        associations=tuple(
            soap.Association(target=a["target"], type=a["type"]) for a in data.get("associations") or ()
        ),
    )


def _check_route(remd: RemdSettings, org_oid: str) -> None:
    """What the organisation's route needs is configured: ИПС its ИС key, clientEntityId and callback address;
    N3 its n3 settings (the schema asks for them too; this names them at the document)."""
    if remd.transport == "n3":
        if remd.n3 is None:
            raise PermanentError(
                f"organisation {org_oid}: remd transport n3 needs the n3 settings",
                reason="REMD_NOT_CONFIGURED",
                organization=org_oid,
            )
        return
    if remd.system is None or not remd.client_entity_id or not remd.callback_url:
        raise PermanentError(
            f"organisation {org_oid}: remd needs system_key/system_certificate, "
            "client_entity_id and callback_url",
            reason="REMD_NOT_CONFIGURED",
            organization=org_oid,
        )


#: РЭМД's refusal that says it holds the localUid (a document is registered under it)
LOCAL_UID_TAKEN = "NOT_UNIQUE_PROVIDED_ID"
#: failures of the pipeline's own after which nothing reached РЭМД (the request was never sent)
NOT_SENT = frozenset({"REQUEST_BUILD_FAILED"})


def refused_by_remd(doc: lifecycle.Document) -> bool:
    """Whether РЭМД holds nothing under the document's localUid, so a corrected document may go under it: the
    document failed, and either РЭМД's last word was a refusal with one of its codes (any but
    ``NOT_UNIQUE_PROVIDED_ID``, and not a transient one, which is resent) or the request never left. A document
    in flight, accepted, registered, or failed without an answer (``NO_ACKNOWLEDGMENT``) may be held by РЭМД."""
    if doc.state != lifecycle.FAILED:
        return False
    if doc.failure_reason in NOT_SENT:
        return True
    code = doc.failure_code
    if not code or code == LOCAL_UID_TAKEN or doc.failure_reason == "REMD_TRANSIENT":
        return False
    return not codes.classify(code).unknown


def _is_correction(doc: lifecycle.Document, data: Mapping[str, Any]) -> bool:
    """Whether ``data`` brings other bytes than the document held under its localUid and РЭМД refused the held
    one (a corrected document, to be sent under the same localUid); other bytes under a localUid РЭМД may hold are
    refused in plain words: РЭМД keeps the first content of a localUid it registered (NOT_UNIQUE_PROVIDED_ID for
    anything else), so a changed СЭМД must then come under a new localUid."""
    if not doc.signed_event:
        return False
    first = (json.loads(doc.signed_event).get("data") or {}).get("document") or {}
    now = (data.get("document") or {}).get("sha256")
    if not (first.get("sha256") and now and first["sha256"] != now):
        return False
    if refused_by_remd(doc):
        return True
    held = f"registered in РЭМД as {doc.emdr_id}" if doc.emdr_id else f"already {doc.state}"
    raise PermanentError(
        f"localUid {doc.local_uid} is {held} with other content: РЭМД refuses a changed document under a "
        f"localUid it may hold; publish the changed СЭМД under a new localUid",
        reason="LOCAL_UID_REUSED",
        local_uid=doc.local_uid,
    )


class Submitter:
    """The sender's handler and its per-endpoint state (breakers, limiters, transports).

    :param config: the organisations (their ``remd`` settings: endpoint, environment, rate limit, keys).
    :param store: the lifecycle store.
    :param transports: ``name -> Transport`` (default: built with ``transport_for`` on first use).
    :param breaker_failures / breaker_cool_down: the circuit breakers' settings.
    :param endpoint_concurrency: requests in flight per (endpoint, organisation).
    :param hold_per_endpoint: records held in memory per open circuit; the rest are parked.
    :param retry_topic: where parked records go (the first retry tier).
    :param transport_options: passed to ``transport_for`` (timeouts) when a transport is made.
    :param park_max_seconds: a parked record is due again after the circuit's remaining cool-down, but at most
        this long: the retry tier it waits on is shared with other clinics' first retries, which wait behind it
        in its partition (keep it at the first tier's delay, ``EMD_SENDER_RETRY_BASE_SECONDS``).
    :param rate_limit_defer: after a RATE_LIMIT answer, the organisation's requests pause and the document
        is retried this many seconds later (ИПС asks for a minute or more).
    :param clinic_state: ``oid -> onboarding state`` (``routing.ClinicStates``): a clinic not promoted never
        reaches production (``services.pipeline.routing``); None (tools, tests): every clinic is in production.
    :param unpromoted: ``routing.TEST_STAND`` (default) or ``routing.HOLD``, for such clinics.
    :param exchanges: keeps each attempt's signed request and answer for support (``exchanges.ExchangeArchive``).
    :param documents: the claim-check store, to read a document by reference for a route that takes the
        document attached (N3); default none: documents carried inline only.
    :param patients: which patients N3 already holds per organisation (``services.lifecycle.patients``); None:
        AddPatient before every N3 document.
    """

    def __init__(
        self,
        *,
        config: OrganizationsConfig,
        store: lifecycle.LifecycleStore,
        transports: Mapping[str, Transport] | None = None,
        breaker_failures: int = 5,
        breaker_cool_down: float = 30.0,
        endpoint_concurrency: int = 8,
        hold_per_endpoint: int = 4,
        retry_topic: str = topology.SENDER_RETRIES[0].name,
        transport_options: Mapping[str, Any] | None = None,
        rate_limit_defer: float = 60.0,
        park_max_seconds: float = 60.0,
        clinic_state: Callable[[str], str] | None = None,
        unpromoted: str = routing.TEST_STAND,
        exchanges: ExchangeArchive | None = None,
        documents: DocumentStore | None = None,
        patients: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.store = store
        self.transports = Transports(options=transport_options, preset=transports)
        self.breaker_failures, self.breaker_cool_down = breaker_failures, breaker_cool_down
        self.endpoint_concurrency = endpoint_concurrency
        self.hold_per_endpoint = hold_per_endpoint
        self.retry_topic = retry_topic
        self.rate_limit_defer = rate_limit_defer
        self.park_max_seconds = park_max_seconds
        self.clinic_state, self.unpromoted, self.exchanges = clinic_state, unpromoted, exchanges
        self.documents = documents
        self.patients = patients
        self._clock = clock
        self.breakers: dict[str, CircuitBreaker] = {}
        self.limiters: dict[tuple[str, str], EndpointLimiter] = {}
        self._held: dict[str, int] = {}

    # --- per-endpoint state ----------------------------------------------------------------------
    def breaker(self, endpoint: str) -> CircuitBreaker:
        if endpoint not in self.breakers:
            self.breakers[endpoint] = CircuitBreaker(
                endpoint,
                failure_threshold=self.breaker_failures,
                cool_down=self.breaker_cool_down,
                clock=self._clock,
            )
        return self.breakers[endpoint]

    def limiter(self, endpoint: str, organization: str, rate_per_minute: int) -> EndpointLimiter:
        key = (endpoint, organization)  # each clinic its own budget: one clinic's burst never delays another
        if key not in self.limiters:
            self.limiters[key] = EndpointLimiter(rate_per_minute, max_concurrency=self.endpoint_concurrency)
        return self.limiters[key]

    async def aclose(self) -> None:
        await self.transports.aclose()

    # --- the handler -------------------------------------------------------------------------------
    async def handle(self, record: Record) -> list[Output]:
        event = events.decode(record.value, expected_type=events.SIGNED)
        data = event["data"]
        uid, org_oid = data["localUid"], data["organizationOid"]
        org = self.config.organization(org_oid)
        remd = org.remd
        if remd is None:
            raise PermanentError(
                f"organisation {org_oid} has no РЭМД settings",
                reason="REMD_NOT_CONFIGURED",
                organization=org_oid,
            )
        _check_route(remd, org_oid)

        # a read: a new document is written with its first attempt, in that attempt's transaction
        doc = await asyncio.to_thread(partial(self.store.get, uid, organization=org_oid))
        if doc is not None and _is_correction(doc, data):
            log.info(
                "corrected document under a localUid РЭМД refused",
                local_uid=uid,
                refused=doc.failure_code or doc.failure_reason,
            )
            try:
                doc = await asyncio.to_thread(
                    partial(
                        self.store.resubmit,
                        uid,
                        organization=org_oid,
                        kind=data["kind"],
                        signed_event=record.value,
                        document_ref=(data.get("document") or {}).get("ref"),
                    )
                )
            except lifecycle.LifecycleConflict as exc:  # another replica moved it on meanwhile
                return await self._already_handled(event, uid, exc)
        if doc is not None:
            if doc.state in lifecycle.DONE_STATES:
                log.info(
                    "already accepted: re-emitting sent, not sending again", local_uid=uid, state=doc.state
                )
                return await self._sent_outputs(event, doc)

        where = (
            routing.Route(remd.endpoint, remd.environment)
            if self.clinic_state is None
            else routing.route(
                remd, await asyncio.to_thread(self.clinic_state, org_oid), unpromoted=self.unpromoted
            )
        )
        # raises the deferred key error of this organisation only (N3 needs no WS-Security key)
        key = remd.system.signer() if remd.system is not None else None
        registration = registration_from_event(data)
        if not registration.personal_signatures:
            raise PermanentError(
                "signed event has no personal signature", reason="NO_PERSONAL_SIGNATURE", local_uid=uid
            )
        new_document = {
            "kind": data["kind"],
            "signed_event": record.value,
            "document_ref": (data.get("document") or {}).get("ref"),
        }
        route = self._n3(data, org, registration, where) if remd.transport == "n3" else {}
        try:
            return await self._submit(record, event, registration, remd, where, key, new_document, route)
        except lifecycle.LifecycleConflict as exc:
            return await self._already_handled(event, uid, exc)

    async def _submit(
        self,
        record: Record,
        event: Mapping[str, Any],
        registration: soap.Registration,
        remd: RemdSettings,
        where: routing.Route,
        key: Any,
        new_document: Mapping[str, Any],
        route: Mapping[str, Any],
    ) -> list[Output]:
        """Attempts until one is accepted, the record is parked, or a failure is raised. ``new_document``: the
        lifecycle row to create with the first attempt if the store does not hold the document yet. ``route``:
        the N3 fields of the request (``_n3``)."""
        data = event["data"]
        uid, org_oid = data["localUid"], data["organizationOid"]
        endpoint = where.endpoint
        breaker = self.breaker(endpoint)
        limiter = self.limiter(endpoint, org_oid, remd.rate_limit_per_minute)
        transport = self.transports.get(remd.transport)
        # a route that takes the document attached (N3) gets the exact signed bytes, read once per record
        document = (
            await asyncio.to_thread(
                partial(
                    document_bytes, data["document"], self.documents, max_bytes=self.config.max_document_bytes
                )
            )
            if getattr(transport, "pushes_document", False)
            else None
        )

        while True:
            parked = await self._wait_for_circuit(breaker, record)
            if parked is not None:
                return parked
            try:
                async with limiter.slot():
                    message_id = new_message_id()
                    add_patient = await self._patient_unknown(route)
                    attempt = await asyncio.to_thread(
                        partial(
                            self.store.record_attempt,
                            uid,
                            message_id,
                            organization=org_oid,
                            endpoint=endpoint,
                            register=new_document,
                        )
                    )
                    outcome = await transport.submit(
                        SubmitRequest(
                            registration=registration,
                            message_id=message_id,
                            endpoint=endpoint,
                            client_entity_id=remd.client_entity_id or "",
                            reply_to=remd.callback_url or "",
                            key=key,
                            certificate=remd.system.certificate if remd.system is not None else None,
                            document=document,
                            auth_token=remd.n3.token if remd.n3 is not None else None,
                            lpu_id=remd.n3.lpu_id if remd.n3 is not None else None,
                            n3_codes=route.get("codes"),
                            add_patient=add_patient,
                            pix_endpoint=route.get("pix"),
                        )
                    )
            except BaseException:
                breaker.release()
                raise
            self._observe(breaker, limiter, outcome)
            await self._note_patient(route, outcome)
            if self.exchanges is not None:
                await asyncio.to_thread(
                    self.exchanges.keep, message_id, local_uid=uid, endpoint=endpoint, outcome=outcome
                )
            code, message = outcome.remd_code or outcome.reason, outcome.message[:500] or None
            if outcome.accepted:  # the attempt's outcome and the document's state: one transaction
                doc = await asyncio.to_thread(
                    partial(
                        self.store.mark_accepted,
                        uid,
                        organization=org_oid,
                        message_id=message_id,
                        code=code,
                        message=message,
                    )
                )
                log.info(
                    "accepted by РЭМД",
                    local_uid=uid,
                    message_id=message_id,
                    attempt=attempt.attempt,
                    endpoint=endpoint,
                    warnings=len(outcome.warnings),
                )
                # reads the MessageIDs with the history
                return await self._sent_outputs(event, doc, warnings=outcome.warnings)
            await asyncio.to_thread(
                self.store.record_outcome,
                message_id,
                outcome=outcome.kind,
                decided_by=lifecycle.DECIDED_BY_ANSWER,
                code=code,
                message=message,
            )
            ids = await asyncio.to_thread(partial(self.store.message_ids, uid, organization=org_oid))
            common = {"message_ids": ids, "local_uid": uid, "kind": data["kind"], "organization": org_oid}
            if outcome.kind == Outcome.PERMANENT:
                await asyncio.to_thread(
                    self.store.mark_failed,
                    uid,
                    organization=org_oid,
                    reason=outcome.reason,
                    code=outcome.remd_code,
                    message=outcome.message[:500],
                )
                raise PermanentError(
                    outcome.message or outcome.reason,
                    reason=outcome.reason,
                    remd_code=outcome.remd_code,
                    remd_message=outcome.remd_message,
                    category=outcome.category,
                    hint=outcome.hint,
                    **common,
                )
            if outcome.transport_failure and breaker.state != "closed":
                # the endpoint is down, not the document: wait for the circuit, no attempt used
                log.info(
                    "endpoint unavailable, holding the record",
                    local_uid=uid,
                    endpoint=endpoint,
                    reason=outcome.reason,
                )
                continue
            defer = self.rate_limit_defer if outcome.reason == "RATE_LIMIT" else outcome.defer
            raise TransientError(
                outcome.message or outcome.reason,
                reason=outcome.reason,
                defer=defer,
                remd_code=outcome.remd_code,
                remd_message=outcome.remd_message,
                category=outcome.category,
                hint=outcome.hint,
                **common,
            )

    async def _already_handled(
        self, event: Mapping[str, Any], uid: str, conflict: lifecycle.LifecycleConflict
    ) -> list[Output]:
        """The lifecycle refused our transition: another replica (a redelivery after a rebalance) accepted or
        registered the document while we were on it. Not a failure of the document: say what the store says."""
        doc = await asyncio.to_thread(
            partial(self.store.get, uid, organization=event["data"]["organizationOid"])
        )
        log.info(
            "already handled by another replica",
            local_uid=uid,
            state=doc.state if doc else None,
            conflict=conflict.message,
        )
        if doc is not None and doc.state in lifecycle.DONE_STATES:
            return await self._sent_outputs(event, doc)
        return []

    def _observe(self, breaker: CircuitBreaker, limiter: EndpointLimiter, outcome: SubmitOutcome) -> None:
        REQUESTS.labels(outcome.kind, reason_label(outcome)).inc()
        REQUEST_DURATION.labels(outcome.kind).observe(outcome.duration, exemplar=telemetry.exemplar())
        if outcome.transport_failure:
            breaker.record_failure()
        else:
            breaker.record_success()  # any real answer, even a rejection, proves the endpoint works
        if outcome.reason == "RATE_LIMIT":
            limiter.pause(self.rate_limit_defer)

    async def _wait_for_circuit(self, breaker: CircuitBreaker, record: Record) -> list[Output] | None:
        if breaker.try_acquire():
            return None
        held = self._held.get(breaker.name, 0)
        if held >= self.hold_per_endpoint:
            return [self._park(record, breaker.remaining())]
        self._held[breaker.name] = held + 1
        try:
            await breaker.wait()
        finally:
            self._held[breaker.name] -= 1
        return None

    def _park(self, record: Record, wait: float) -> Output:
        """The record back on the first retry tier, due when the circuit probes, its attempt count unchanged."""
        PARKED.inc()
        wait = min(max(wait, 1.0), self.park_max_seconds)  # never hold up the tier longer than its own delay
        headers = dl.retry_headers(
            record.headers,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            delay=wait,
            reason="CIRCUIT_OPEN",
        )
        log.info("circuit open: parked", local_uid=record.key, due_in=round(wait, 1))
        return Output(self.retry_topic, record.value, record.key, headers)

    def _n3(
        self,
        data: Mapping[str, Any],
        org: Organization,
        registration: soap.Registration,
        where: routing.Route,
    ) -> dict[str, Any]:
        """An N3 document's codes (``PermanentError`` when it has none: see n3_route), PixService's address for
        where it goes, and how the patient is keyed and described in the patient store."""
        assert org.remd is not None and org.remd.n3 is not None
        settings = org.remd.n3
        try:
            pix = settings.pix_for(where.endpoint)
        except ValueError as exc:
            raise PermanentError(str(exc), reason="REMD_NOT_CONFIGURED", organization=org.oid) from None
        return {
            "codes": n3_codes(data, org, dictionary_of(self.config)),
            "pix": pix,
            "patient": (
                "n3",
                org.oid,
                registration.patient.local_id or "",
                n3.patient_fingerprint(registration.patient, settings.lpu_id),
            ),
        }

    async def _patient_unknown(self, route: Mapping[str, Any]) -> bool:
        """Whether this N3 attempt must add the patient first (always, without a patient store)."""
        if not route or self.patients is None:
            return True
        return not await asyncio.to_thread(self.patients.known, *route["patient"])

    async def _note_patient(self, route: Mapping[str, Any], outcome: SubmitOutcome) -> None:
        if not route or self.patients is None:
            return
        r, org, patient_id, fingerprint = route["patient"]
        if outcome.patient_added:
            await asyncio.to_thread(self.patients.remember, r, org, patient_id, fingerprint)
        elif outcome.reason == "N3_PATIENT_UNKNOWN":
            await asyncio.to_thread(self.patients.forget, r, org, patient_id)

    async def _sent_outputs(
        self, event: Mapping[str, Any], doc: lifecycle.Document, *, warnings: tuple[tuple[str, str], ...] = ()
    ) -> list[Output]:
        history = await asyncio.to_thread(
            partial(self.store.history, doc.local_uid, organization=doc.organization)
        )
        accepted = next((a for a in history if a.message_id == doc.accepted_message_id), history[-1])
        ids = [a.message_id for a in history]
        data = dict(event["data"])
        data["submission"] = events.submission_data(
            message_id=accepted.message_id,
            message_ids=ids,
            attempt=accepted.attempt,
            sent_at=accepted.sent_at,
            accepted_at=doc.accepted_at,
            endpoint=accepted.endpoint,
            environment=self.config.environment(doc.organization, endpoint=accepted.endpoint),
        )
        sent = events.new_event(events.SENT, data, source=SOURCE, trace_id=event["traceId"])
        # a replay of a registered document must not move the МИС's view back from "registered" to "sent"
        told = events.STATUS_REGISTERED if doc.state == lifecycle.REGISTERED else events.STATUS_SENT
        status = events.new_event(
            events.STATUS,
            events.status_data(
                doc.local_uid,
                told,
                organization=doc.organization,
                mis_id=data["misId"],
                emdr_id=doc.emdr_id,
                message_ids=ids,
                warnings=warnings,
            ),
            source=SOURCE,
            trace_id=event["traceId"],
        )
        return [Output.of_event(sent), Output.of_event(status)]

"""The bad-input corpus of the whole-system run: each case enters where a real one would, and says where it must end.

Four entry points:

* ``publish`` — the МИС producer library (what ``emd publish`` runs): broken or hostile XML, oversize, a kind
  nobody registers, no СНИЛС are refused there, before anything reaches Kafka; a document that parses but is
  XSD- or Schematron-invalid is published and dead-lettered by the signer;
* ``topic`` — records another МИС (or a bug) writes straight onto the pipeline's topics: not JSON, an unknown
  schemaVersion, missing fields, wrong types, a claim-check reference to nothing;
* ``signing`` — valid documents of organisations whose keys, certificates or МЧД are wrong, and МИС-made
  doctor signatures that do not fit;
* ``callback`` — requests to the callback endpoint that are not ИПС: unsigned, signed by a stranger, an old
  replayed one, with a DOCTYPE, too large.

An outcome is ``refused`` (at the entry, with the reason it gave) or ``dead`` (the stage and dead-letter reason
of the record keyed by the case's key).
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from kafka import KafkaProducer

from lab.dev.config import DEV_MIS_ID, DEV_SYSTEM_IDS
from lab.dev.local_pipeline import as_new_document
from lab.dev.pki import DevCA, SubjectInfo
from lab.dev.samples import REPOSITORY_SAMPLES
from producer import events, topology
from producer.client import DocumentPublisher, InvalidDocument, build_created_event
from producer.ids import new_message_id
from services.crypto import keys
from services.crypto.certificates import load_certificate
from services.remd import names as n
from services.remd import soap
from services.remd.soap import RegisterResult, RegistryItem
from tests import signing_lab as lab

#: the producer's size limit in the run (documents above it are refused at publish)
MAX_BYTES = lab.MAX_BYTES


@dataclass(frozen=True)
class Outcome:
    kind: str  # refused | dead | accepted (a callback the endpoint took: must not happen)
    reason: str
    stage: str = ""


@dataclass(frozen=True)
class Case:
    name: str
    entry: str  # publish | topic | signing | callback
    expect: Outcome
    key: str  # the localUid / record key its dead letter carries


@dataclass
class Context:
    """What the cases need from the running system."""

    bootstrap: str
    publisher: DocumentPublisher
    store_root: Path
    callback_url: str
    emulator_key: Any
    emulator_certificate: Any
    lab: lab.Lab


def _good(uid: str) -> bytes:
    """ConsultRedaction4 (kind 119, valid against its XSD and Schematron) as a fresh document ``uid``."""
    return as_new_document(lab.GOOD.read_bytes(), local_uid=uid)


def _variant(oid: str, uid: str) -> bytes:
    return _good(uid).replace(lab.GOOD_OID.encode(), oid.encode())


def _created(uid: str) -> dict[str, Any]:
    return build_created_event(_good(uid), system_id=DEV_SYSTEM_IDS[0], store=None, inline_limit=10**9)


def _raw(
    ctx: Context, topic: str, key: str, value: bytes, headers: list[tuple[str, bytes]] | None = None
) -> None:
    producer = KafkaProducer(bootstrap_servers=ctx.bootstrap, acks="all")
    try:
        producer.send(topic, key=key.encode(), value=value, headers=headers or []).get(30)
    finally:
        producer.close()


# --- publish ---------------------------------------------------------------------------------------
def _publish(data: bytes, ctx: Context, **kw: Any) -> Outcome | None:
    try:
        ctx.publisher.publish(data, **kw)
    except InvalidDocument as exc:
        return Outcome("refused", exc.reason)
    return None  # published: its outcome is the dead letter


def _publish_cases(run: str) -> list[tuple[Case, Callable[[Context], Outcome | None]]]:
    def uid(name: str) -> str:
        return f"bad-{name}-{run}"

    good = _good(uid("x"))
    body = good[good.index(b"<ClinicalDocument") :]
    laughs = '<!ENTITY l0 "ha">' + "".join(f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 10))
    cases = {
        "not_xml": (b"%PDF-1.7 this is not XML", "refused", "NOT_XML"),
        "truncated": (_good(uid("truncated"))[:20000], "refused", "NOT_XML"),
        "xxe": (
            b'<?xml version="1.0"?>\n<!DOCTYPE ClinicalDocument [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n'
            + body,
            "refused",
            "ENTITY_FORBIDDEN",
        ),
        "billion_laughs": (
            f'<?xml version="1.0"?>\n<!DOCTYPE ClinicalDocument [{laughs}]>\n'.encode() + body,
            "refused",
            "ENTITY_FORBIDDEN",
        ),
        "oversize": (lab.too_large(_good(uid("oversize"))), "refused", "TOO_LARGE"),
        "unknown_kind": (
            as_new_document((REPOSITORY_SAMPLES / "Consult.xml").read_bytes(), local_uid=uid("unknown_kind")),
            "refused",
            "KIND_UNKNOWN",
        ),
        "missing_snils": (
            _good(uid("missing_snils")).replace(b'extension="25463625426"', b'extension=""', 1),
            "refused",
            "MISSING_FIELD",
        ),
        "xsd_invalid": (lab.xsd_invalid(_good(uid("xsd_invalid"))), "dead", "XSD_INVALID"),
        "schematron_invalid": (
            as_new_document(
                (REPOSITORY_SAMPLES / "CertOnPayForMedServ.xml").read_bytes(),
                local_uid=uid("schematron_invalid"),
            ),
            "dead",
            "SCHEMATRON_INVALID",
        ),
    }
    out = []
    for name, (data, kind, reason) in cases.items():
        case = Case(
            name, "publish", Outcome(kind, reason, "signer" if kind == "dead" else "publish"), uid(name)
        )
        out.append((case, lambda ctx, d=data: _publish(d, ctx)))
    return out


# --- events written straight onto the topics -------------------------------------------------------
def _outside_the_grant(e: dict[str, Any], key: str, ctx: Context) -> dict[str, Any]:
    """The event as a МИС would publish it under a systemId its grant does not name."""
    e["data"]["systemId"] = "not-granted-01"
    return e


Mutation = Callable[[dict[str, Any], str, Context], "bytes | dict[str, Any]"]


def _record(value: bytes | dict[str, Any]) -> tuple[bytes, list[tuple[str, bytes]] | None]:
    """The value and headers of a bad record: raw bytes alone, an event with the headers a МИС sends with it (so
    the record reaches the check its case is about, past the signer's header check)."""
    if isinstance(value, bytes):
        return value, None
    return events.encode(value), events.headers_for(value)


def _topic_cases(run: str) -> list[tuple[Case, Callable[[Context], Outcome | None]]]:
    stages = {
        topology.created_topic(DEV_MIS_ID).name: ("signer", events.CREATED),
        topology.SIGNED.name: ("sender", events.SIGNED),
        topology.SENT.name: ("acknowledger", events.SENT),
    }
    out = []

    def event_for(topic: str, key: str) -> dict[str, Any]:
        created = _created(key)
        _, etype = stages[topic]
        if etype == events.CREATED:
            return created
        data = copy.deepcopy(created["data"])
        data["signatures"] = {
            "personal": [],
            "organization": {"cms": "", "signingTime": "2026-01-01T00:00:00Z", "mchd": None},
        }
        if etype == events.SENT:
            data["submission"] = {"messageId": new_message_id(), "messageIds": [], "attempt": 1}
        # the shape of a real envelope, but not validated: the mutations below make it invalid anyway
        return {**created, "eventId": str(uuid.uuid4()), "type": etype, "source": "bad-mis", "data": data}

    def add(topic: str, name: str, mutate: Mutation, reason: str) -> None:
        key = f"bad-{name}-{run}"
        stage, _ = stages[topic]

        def inject(ctx: Context, topic=topic, key=key) -> None:
            _raw(ctx, topic, key, *_record(mutate(event_for(topic, key), key, ctx)))

        out.append((Case(name, "topic", Outcome("dead", reason, stage), key), inject))

    def version(e, key, ctx):
        return {**e, "schemaVersion": 99}

    def no_patient(e, key, ctx):
        e["data"].pop("patient")
        return e

    def size_text(e, key, ctx):
        e["data"]["document"]["size"] = "big"
        return e

    def reference(e, key, ctx, *, inside: bool):
        digest = hashlib.sha256(key.encode()).hexdigest()
        where = (ctx.store_root if inside else Path("/nonexistent")) / digest[:2] / digest
        e["data"]["document"] = {
            "sha256": digest,
            "size": 1000,
            "mediaType": "text/xml",
            "ref": where.as_uri(),
        }
        return e

    def no_signatures(e, key, ctx):
        e["data"].pop("signatures")
        return e

    def signatures_text(e, key, ctx):
        e["data"]["signatures"] = "signed, trust me"
        return e

    def no_submission(e, key, ctx):
        e["data"].pop("submission")
        return e

    created, signed, sent = topology.created_topic(DEV_MIS_ID).name, topology.SIGNED.name, topology.SENT.name
    add(created, "created_not_json", lambda e, k, c: b"{this is not json", "EVENT_INVALID")
    add(created, "created_unknown_version", version, "EVENT_INVALID")
    add(created, "created_missing_patient", no_patient, "EVENT_INVALID")
    add(created, "created_size_as_text", size_text, "EVENT_INVALID")
    add(created, "created_outside_the_grant", _outside_the_grant, "ORGANIZATION_NOT_ALLOWED")
    add(
        created,
        "created_reference_outside_the_store",
        lambda e, k, c: reference(e, k, c, inside=False),
        "DOCUMENT_REF_INVALID",
    )
    add(
        created,
        "created_reference_to_nothing",
        lambda e, k, c: reference(e, k, c, inside=True),
        "DOCUMENT_MISSING",
    )
    add(signed, "signed_not_json", lambda e, k, c: b"\xff\xfe not even utf-8", "EVENT_INVALID")
    add(signed, "signed_unknown_version", version, "EVENT_INVALID")
    add(signed, "signed_missing_signatures", no_signatures, "EVENT_INVALID")
    add(signed, "signed_signatures_as_text", signatures_text, "EVENT_INVALID")
    add(sent, "sent_not_json", lambda e, k, c: b"[1, 2", "EVENT_INVALID")
    add(sent, "sent_missing_submission", no_submission, "EVENT_INVALID")
    return out


# --- signing ----------------------------------------------------------------------------------------
def _signing_cases(run: str) -> list[tuple[Case, Callable[[Context], Outcome | None]]]:
    out = []
    for defect, (oid, reason) in sorted(lab.DEFECT_ORGS.items()):
        if defect == "not_yet_valid_on_creation":
            continue  # needs a creation time before the certificate: the fresh documents are dated now
        uid = f"bad-{defect}-{run}"
        out.append(
            (
                Case(defect, "signing", Outcome("dead", reason, "signer"), uid),
                lambda ctx, o=oid, u=uid: _publish(_variant(o, u), ctx),
            )
        )

    def mis_signed(
        uid: str, who: Callable[[Context], tuple], *, other_bytes: bool
    ) -> Callable[[Context], None]:
        def inject(ctx: Context) -> Outcome | None:
            doc = _variant(lab.MIS_OID, uid)
            signature = lab.mis_signature(who(ctx), doc + b"\n" if other_bytes else doc)
            return _publish(doc, ctx, meta={"signatures": {lab.AUTHOR: signature}})

        return inject

    uid = f"bad-signature_over_other_bytes-{run}"
    out.append(
        (
            Case("signature_over_other_bytes", "signing", Outcome("dead", "DIGEST_MISMATCH", "signer"), uid),
            mis_signed(uid, lambda ctx: ctx.lab.mis_doctor, other_bytes=True),
        )
    )
    uid = f"bad-signature_by_another_doctor-{run}"
    out.append(
        (
            Case(
                "signature_by_another_doctor",
                "signing",
                Outcome("dead", "SIGNER_SNILS_MISMATCH", "signer"),
                uid,
            ),
            mis_signed(uid, lambda ctx: ctx.lab.other_doctor, other_bytes=False),
        )
    )
    foreign = DevCA.create("foreign CA")
    stranger = foreign.issue(
        subject=SubjectInfo(family="Смирнов", given="Александр Игоревич", snils=lab.AUTHOR),
        not_before=dt.datetime(2015, 1, 1, tzinfo=dt.UTC),
    )
    uid = f"bad-signature_from_a_foreign_ca-{run}"
    out.append(
        (
            Case(
                "signature_from_a_foreign_ca",
                "signing",
                Outcome("dead", "CANT_BUILD_CERT_CHAIN_TO_ACCREDITED_CA_CERT", "acknowledger"),
                uid,
            ),
            mis_signed(uid, lambda ctx: stranger, other_bytes=False),
        )
    )
    return out


# --- the callback endpoint --------------------------------------------------------------------------
def _post(ctx: Context, body: bytes, *, wait: float = 120.0) -> Outcome | None:
    deadline = time.monotonic() + wait
    while True:  # the run may have just killed the callback service: what is under test is its answer
        try:
            response = httpx.post(
                ctx.callback_url,
                content=body,
                timeout=60,
                headers={"Content-Type": "text/xml; charset=utf-8"},
            )
            break
        except httpx.ConnectError:
            if time.monotonic() > deadline:
                return Outcome("refused", "connection refused for good")
            time.sleep(0.5)
        except httpx.HTTPError as exc:
            return Outcome("refused", f"connection: {type(exc).__name__}")
    if response.status_code >= 400:
        detail = response.text[:2000]
        reason = next((r for r in ("WSS_", "DTD_FORBIDDEN", "ENTITY_FORBIDDEN") if r in detail), "")
        return Outcome("refused", f"HTTP {response.status_code}" + (f" {reason}" if reason else ""))
    return Outcome("accepted", f"HTTP {response.status_code}")


def _callback_cases(run: str) -> list[tuple[Case, Callable[[Context], Outcome | None]]]:
    def result(key: str) -> RegisterResult:
        return RegisterResult(
            relates_to_message=key,
            status=n.STATUS_SUCCESS,
            local_uid=key,
            kind="119",
            organization=lab.GOOD_OID,
            registry_item=RegistryItem(
                emdr_id="16.62.26.12.999999999",
                registration_date_time="2026-12-01T10:00:00+00:00",
                store_till_date="2031-12-01",
                document_version="1",
            ),
        )

    def signed(
        ctx: Context, key: str, *, signer: tuple | None = None, now: dt.datetime | None = None
    ) -> bytes:
        k, c = signer or (ctx.emulator_key, ctx.emulator_certificate)
        return soap.build_register_result(result(key), to=ctx.callback_url, key=k, certificate=c, now=now)

    stranger = DevCA.create("not ИПС").issue(subject=SubjectInfo(family="", common_name="ИПС", org="чужой"))

    def unsigned(ctx: Context, key: str) -> bytes:
        body = signed(ctx, key)
        start, end = body.index(b"<wsse:Security"), body.index(b"</wsse:Security>") + len(b"</wsse:Security>")
        return body[:start] + body[end:]

    def doctype(ctx: Context, key: str) -> bytes:
        body = signed(ctx, key)
        if body.startswith(b"<?xml"):
            body = body[body.index(b"?>") + 2 :].lstrip()
        return b'<!DOCTYPE Envelope [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n' + body

    def huge(ctx: Context, key: str) -> bytes:
        body = signed(ctx, key)
        return body.replace(b"</soap:Body>", b"<!--" + b"x" * (65 * 1024 * 1024) + b"--></soap:Body>", 1)

    builders = {
        "callback_unsigned": unsigned,
        "callback_foreign_key": lambda ctx, key: signed(ctx, key, signer=stranger),
        "callback_replayed_old": lambda ctx, key: signed(
            ctx, key, now=dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
        ),
        "callback_doctype": doctype,
        "callback_huge": huge,
    }
    out = []
    for name, build in builders.items():
        key = f"bad-{name}-{run}"
        out.append(
            (
                Case(name, "callback", Outcome("refused", "HTTP", "callbacks"), key),
                lambda ctx, b=build, k=key: _post(ctx, b(ctx, k)),
            )
        )
    return out


def corpus(run: str | None = None) -> list[tuple[Case, Callable[[Context], Outcome | None]]]:
    """Every case with the function that injects it (returns the outcome at the entry, None if it went in)."""
    run = run or uuid.uuid4().hex[:6]
    return [*_publish_cases(run), *_topic_cases(run), *_signing_cases(run), *_callback_cases(run)]


def identity(config_dir: Path) -> tuple[Any, Any]:
    """The emulator's key and certificate (``LocalPipeline`` writes them), to sign callbacks as ИПС would."""
    return (
        keys.load_private_key(config_dir / "emulator-identity.key"),
        load_certificate(config_dir / "emulator-identity.pem"),
    )


def describe(outcome: Outcome | None) -> str:
    if outcome is None:
        return "—"
    return f"{outcome.kind} {outcome.stage + ' ' if outcome.stage else ''}{outcome.reason}".strip()


__all__ = ["Case", "Context", "Outcome", "corpus", "describe", "identity", "MAX_BYTES"]

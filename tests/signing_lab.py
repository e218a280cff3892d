"""A signing "lab" for the signer tests: one configuration with healthy and deliberately broken organisations.

``build_lab(tmp)`` writes a dev configuration (``write_dev_config``) covering every Ministry sample the
producer accepts (their custodian OIDs and signer СНИЛС), then adds one organisation per defect (expired
certificate, МЧД for another employee, …) and a ``mis``-mode organisation. ``variant(oid, uid)`` gives
the good sample ConsultRedaction4 re-addressed to one of those organisations under a new localUid, so
each defect is exercised by an otherwise valid document. The development МИС (``local-mis``) is granted every
organisation; a second МИС (``OTHER_MIS``) only the ``mis``-mode one, to publish outside its grant.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from lab.dev.config import DEV_MIS_ID, DEV_SYSTEM_IDS, dev_credential, write_dev_config
from lab.dev.mchd import Person, build_mchd, sign_mchd
from lab.dev.pki import DevCA, SubjectInfo, write_pem
from lab.dev.samples import REPOSITORY_SAMPLES as SAMPLES  # noqa: E402
from producer import events
from producer.client import build_created_event
from services.crypto import cades
from tests import openssl_gost as ossl

GOOD = SAMPLES / "ConsultRedaction4.xml"
GOOD_OID = "1.2.643.5.1.13.13.12.2.77.7831"
GOOD_UID = 'extension="144632"/>'
AUTHOR = "52415372312"  # ConsultRedaction4's author (and legalAuthenticator)
MAX_BYTES = 1_000_000  # the largest accepted sample is 97 KB

#: defect → (organisation OID, expected dead-letter reason)
DEFECT_ORGS = {
    "expired_certificate": ("1.2.643.5.1.13.13.12.2.77.99001", "CERT_EXPIRED"),
    "not_yet_valid_on_creation": ("1.2.643.5.1.13.13.12.2.77.99002", "CERT_NOT_YET_VALID"),
    "mchd_other_employee": ("1.2.643.5.1.13.13.12.2.77.99003", "MCHD_WRONG_EMPLOYEE"),
    "mchd_other_organization": ("1.2.643.5.1.13.13.12.2.77.99004", "MCHD_WRONG_ORGANIZATION"),
    "mchd_expired": ("1.2.643.5.1.13.13.12.2.77.99005", "MCHD_EXPIRED"),
    "mchd_revoked": ("1.2.643.5.1.13.13.12.2.77.99006", "MCHD_REVOKED"),
    "wrong_key_password": ("1.2.643.5.1.13.13.12.2.77.99007", "KEY_PASSWORD_INVALID"),
}
MIS_OID = "1.2.643.5.1.13.13.12.2.77.99008"
#: the lab's second МИС: granted only MIS_OID, under its own systemId (the development МИС is granted every
#: organisation of the lab)
OTHER_MIS, OTHER_SYSTEM_ID = "lab-other-mis", "lab-other-01"
#: the systemId the development МИС publishes as
SYSTEM_ID = DEV_SYSTEM_IDS[0]


def refused_samples() -> dict[str, tuple[str, str]]:
    """Samples the producer refuses, with (field, reason) — Ministry examples that РЭМД would refuse too."""
    from tests.test_cda import KINDS, NO_CREATION_TIME

    out = {n: ("creationTime", "MISSING_FIELD") for n in NO_CREATION_TIME}
    for n, k in KINDS.items():
        if k is None and n not in out:
            out[n] = ("kind", "KIND_UNKNOWN")
    out["AmbCasev4.xml"] = (
        "patient.snils",
        "MISSING_FIELD",
    )  # kind 92 needs СНИЛС; the sample's has 10 digits
    return out


def accepted_samples() -> list[Path]:
    """The Ministry samples the producer publishes: every sample but the refused ones, by name."""
    refused = refused_samples()
    return sorted(p for p in SAMPLES.glob("*.xml") if p.name not in refused)


def variant(oid: str = GOOD_OID, uid: str = "144632", data: bytes | None = None) -> bytes:
    """ConsultRedaction4 (or ``data``) addressed to organisation ``oid`` under localUid ``uid``."""
    doc = (data if data is not None else GOOD.read_bytes()).replace(GOOD_OID.encode(), oid.encode())
    return doc.replace(GOOD_UID.encode(), f'extension="{uid}"/>'.encode(), 1)


def created_data(document: bytes, *, meta: dict | None = None) -> dict:
    """The created event for ``document`` as the producer builds it (inline)."""
    return build_created_event(document, system_id=SYSTEM_ID, store=None, inline_limit=10**9, meta=meta)


def raw_event(base_document: bytes, payload: bytes) -> dict:
    """A created event for ``base_document`` whose bytes are replaced by ``payload`` (a buggy МИС)."""
    event = created_data(base_document)
    data = dict(event["data"])
    data["document"] = {
        "sha256": hashlib.sha256(payload).hexdigest(),
        "size": len(payload),
        "mediaType": "text/xml",
        "inline": base64.b64encode(payload).decode(),
    }
    return events.new_event(events.CREATED, data, source="buggy-mis")


#: ConsultRedaction4's creation time, and one before its kind 119 came into force (01.01.2022)
GOOD_TIME = b'<effectiveTime value="202201011600+0300"/>'
BEFORE_KIND = b'<effectiveTime value="202101251600+0300"/>'
#: the author's position code with its codeSystemVersion, and without it
POSITION = b'code="34" codeSystem="1.2.643.5.1.13.13.11.1002" codeSystemVersion="7.5"'
POSITION_NO_VERSION = b'code="34" codeSystem="1.2.643.5.1.13.13.11.1002"'


@dataclass(frozen=True)
class Breach:
    """A record a МИС in another language could send that breaks the contract at the door (producer.contract):
    its key, headers and event (not validated: the schema is part of what is broken), and the reason and the
    field the signer and `emd publish --dry-run --record` must name."""

    name: str
    key: str
    headers: dict[str, str]
    event: dict
    reason: str
    field: str

    def record_json(self) -> dict:
        """The record as `emd publish --dry-run --record` reads it."""
        return {"key": self.key, "headers": self.headers, "value": self.event}


def _inline(data: dict, document: bytes) -> dict:
    return {
        **data,
        "document": {
            "sha256": hashlib.sha256(document).hexdigest(),
            "size": len(document),
            "mediaType": "text/xml",
            "inline": base64.b64encode(document).decode(),
        },
    }


def contract_breaches(tag: str, oid: str = GOOD_OID) -> list[Breach]:
    """One record per breach of the contract at the door, each an otherwise valid document of ``oid``: a key that
    is not the localUid, a missing header, a kind not registrable on the creation date, a signer with a position
    code but no codeSystemVersion. Each document is consistent with its event (the breach is the record's)."""

    def headers(event: dict) -> dict[str, str]:
        return {k: v.decode() for k, v in events.headers_for(event)}

    good = created_data(variant(oid, f"key-{tag}"))
    missing = created_data(variant(oid, f"header-{tag}"))
    early_doc = variant(oid, f"date-{tag}").replace(GOOD_TIME, BEFORE_KIND)
    early = created_data(variant(oid, f"date-{tag}"))
    early = events.new_event(
        events.CREATED,
        _inline({**early["data"], "creationTime": "2021-01-25T16:00:00+03:00"}, early_doc),
        source=SYSTEM_ID,
    )
    position_doc = variant(oid, f"position-{tag}").replace(POSITION, POSITION_NO_VERSION)
    position = created_data(variant(oid, f"position-{tag}"))
    signers = [
        {**s, "positionCodeSystemVersion": None} if s["positionCode"] == "34" else s
        for s in position["data"]["signers"]
    ]
    position = {**position, "data": _inline({**position["data"], "signers": signers}, position_doc)}
    no_version = headers(missing)
    del no_version[events.HEADER_SCHEMA_VERSION]
    return [
        Breach("wrong_key", f"not-{tag}", headers(good), dict(good), "KEY_NOT_LOCAL_UID", "key"),
        Breach(
            "missing_header",
            missing["data"]["localUid"],
            no_version,
            dict(missing),
            "HEADER_MISSING",
            f"headers.{events.HEADER_SCHEMA_VERSION}",
        ),
        Breach(
            "kind_not_on_date",
            early["data"]["localUid"],
            headers(early),
            dict(early),
            "KIND_NOT_VALID_ON_DATE",
            "kind",
        ),
        Breach(
            "position_without_version",
            position["data"]["localUid"],
            headers(position),
            position,
            "EVENT_INVALID",
            "data.signers[0].positionCodeSystemVersion",
        ),
    ]


def xxe(document: bytes) -> bytes:
    body = document[document.index(b"<ClinicalDocument") :]
    return (
        b'<?xml version="1.0"?>\n<!DOCTYPE ClinicalDocument [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n'
        + body
    )


def billion_laughs(document: bytes) -> bytes:
    body = document[document.index(b"<ClinicalDocument") :]
    ents = '<!ENTITY l0 "ha">' + "".join(f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 10))
    return f'<?xml version="1.0"?>\n<!DOCTYPE ClinicalDocument [{ents}]>\n'.encode() + body


def xsd_invalid(document: bytes) -> bytes:
    # an element the CDA schema does not allow there
    return document.replace(b'<realmCode code="RU"/>', b'<realmCode code="RU"/><unexpected/>', 1)


def too_large(document: bytes) -> bytes:
    pad = b"<!-- " + b"x" * (MAX_BYTES + 1000) + b" -->\n"
    i = document.index(b"<ClinicalDocument")
    return document[:i] + pad + document[i:]


@dataclass
class Lab:
    config_path: Path
    ca: DevCA
    mis_doctor: tuple  # (key, certificate) of the author, for attaching МИС signatures
    other_doctor: tuple  # a doctor with another СНИЛС


def mis_signature(key_cert: tuple, document: bytes, *, signing_time: dt.datetime | None = None) -> str:
    key, cert = key_cert
    return cades.to_base64(
        cades.sign_detached(
            document, key=key, certificate=cert, signing_time=signing_time or dt.datetime.now(dt.UTC)
        )
    )


def build_lab(out: Path) -> Lab:
    """Write the lab configuration into ``out``; return it with the keys the tests sign with."""
    samples = accepted_samples()
    oids, doctors = set(), set()
    for p in samples:
        data = created_data(p.read_bytes())["data"]
        oids.add(data["organizationOid"])
        doctors.update(s["snils"] for s in data["signers"])
    path = write_dev_config(out, oids=sorted(oids), doctors=sorted(doctors))
    config = json.loads(path.read_text(encoding="utf-8"))
    config["max_document_bytes"] = MAX_BYTES
    good = next(o for o in config["organizations"] if o["oid"] == GOOD_OID)

    now = dt.datetime.now(dt.UTC)
    old = dt.datetime(2015, 1, 1, tzinfo=dt.UTC)
    ca = DevCA.create("lab CA", not_before=old)
    author = {AUTHOR: good["signing"]["doctors"][AUTHOR]}

    def org(
        n: int,
        oid: str,
        *,
        doctors=author,
        cert_window=None,
        mchd=None,
        mode="server",
        password_pfx: bool = False,
    ) -> dict:
        inn, ogrn = f"55{n:08d}", f"10255{n:08d}"
        name = f"Лаборатория дефектов № {n}"
        employee = Person(family="Подписантов", given="Олег", patronymic="Ильич", snils=f"700{n:08d}")
        head = Person(family="Главный", given="Пётр", patronymic="Сергеевич", snils=f"600{n:08d}")
        window = cert_window or {"not_before": old, "not_after": now + dt.timedelta(days=365)}
        entry = dev_credential(
            out,
            f"lab{n}-employee",
            ca,
            SubjectInfo(
                family=employee.family,
                given=f"{employee.given} {employee.patronymic}",
                snils=employee.snils,
                ogrn=ogrn,
                inn_le=inn,
                org=name,
            ),
            **window,
        )
        if password_pfx:
            ossl.run(
                "pkcs12",
                "-export",
                "-inkey",
                out / entry["key"],
                "-in",
                out / entry["certificate"],
                "-passout",
                "pass:right",
                "-out",
                out / f"lab{n}.pfx",
            )
            (out / f"lab{n}.pass").write_text("wrong\n")
            entry = {**entry, "key": f"lab{n}.pfx", "password_file": f"lab{n}.pass"}
        m = dict(mchd or {})
        principal = m.pop("principal", (name, inn, ogrn, head))
        p_name, p_inn, p_ogrn, p_head = principal
        head_key, head_cert = ca.issue(
            subject=SubjectInfo(
                family=p_head.family,
                given=f"{p_head.given} {p_head.patronymic}",
                snils=p_head.snils,
                ogrn=p_ogrn,
                inn_le=p_inn,
                org=p_name,
            ),
            not_before=old,
        )
        xml = build_mchd(
            organization_name=p_name,
            organization_inn=p_inn,
            organization_ogrn=p_ogrn,
            head=p_head,
            representative=m.pop("representative", employee),
            **{"issued": old.date(), "valid_until": (now + dt.timedelta(days=365)).date(), **m},
        )
        (out / f"lab{n}-mchd.xml").write_bytes(xml)
        (out / f"lab{n}-mchd.sig").write_bytes(sign_mchd(xml, key=head_key, certificate=head_cert))
        entry["mchd"] = {"xml": f"lab{n}-mchd.xml", "signature": f"lab{n}-mchd.sig"}
        return {
            "oid": oid,
            "name": name,
            "inn": inn,
            "ogrn": ogrn,
            "signing": {"mode": mode, "doctors": doctors if mode == "server" else {}, "organization": entry},
        }

    stranger = Person(family="Чужой", given="Семён", patronymic="Семёнович", snils="11122233344")
    other_org = (
        "ООО Другая",
        "5500099999",
        "1025500099999",
        Person(family="Другой", given="Глав", patronymic="Врачевич", snils="60099999999"),
    )
    young = {
        AUTHOR: {
            **dev_credential(
                out, "young-author", ca, SubjectInfo(family="Молодой", given="Врач Врачевич", snils=AUTHOR)
            ),
            "server_signing_consent": "lab",
        }
    }  # valid from yesterday
    d = DEFECT_ORGS
    lab_orgs = [
        org(
            1,
            d["expired_certificate"][0],
            cert_window={"not_before": old, "not_after": now - dt.timedelta(days=1)},
        ),
        org(2, d["not_yet_valid_on_creation"][0], doctors=young),
        org(3, d["mchd_other_employee"][0], mchd={"representative": stranger}),
        org(4, d["mchd_other_organization"][0], mchd={"principal": other_org}),
        org(5, d["mchd_expired"][0], mchd={"valid_until": (now - dt.timedelta(days=2)).date()}),
        org(6, d["mchd_revoked"][0], mchd={"number": "0d9a1c3e-0000-4000-8000-00000000beef"}),
        org(7, d["wrong_key_password"][0], password_pfx=True),
        org(8, MIS_OID, mode="mis"),
    ]
    config["organizations"] += lab_orgs
    (dev_mis,) = config["mis"]
    assert dev_mis["id"] == DEV_MIS_ID
    dev_mis["organizations"] += [o["oid"] for o in lab_orgs]
    config["mis"].append({"id": OTHER_MIS, "organizations": [MIS_OID], "systemIds": [OTHER_SYSTEM_ID]})
    config["mchd_revoked"] = ["0D9A1C3E-0000-4000-8000-00000000BEEF"]  # case-insensitive GUIDs
    path.write_text(json.dumps(config, ensure_ascii=False, indent=2), encoding="utf-8")

    mis_doctor = ca.issue(
        subject=SubjectInfo(family="Смирнов", given="Александр Игоревич", snils=AUTHOR), not_before=old
    )
    other_doctor = ca.issue(
        subject=SubjectInfo(family="Другой", given="Доктор Иванович", snils="99988877766"), not_before=old
    )
    write_pem(None, ca.certificate, cert_path=out / "lab-ca.pem")
    return Lab(config_path=path, ca=ca, mis_doctor=mis_doctor, other_doctor=other_doctor)

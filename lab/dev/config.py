"""The development organisations file: a dev CA, doctors' keys, an employee signing under an МЧД, the ИС key.

``emd certs dev-config``, ``emd run``/``emd demo`` and the tests write one with :func:`write_dev_config`;
``services.pipeline.organizations.load_organizations`` reads it like any other. Development only:
software keys issued by nobody's CA.

Its one МИС, ``local-mis`` (:data:`DEV_MIS_ID`), is granted every organisation of the file under the development
systemIds (:data:`DEV_SYSTEM_IDS`): every development publisher (``emd run``, ``emd demo``, ``emd bench``,
``make reliability``, the tests) writes ``emd.document.created.local-mis``. Each doctor's key carries a
development consent to server-side signing, and the organisations allow the sample kinds no XSD or Schematron is
shipped for (``allow_unvalidated_kinds``): an operator's decision that a development run makes for you.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lab.dev.mchd import Person, build_mchd, sign_mchd
from lab.dev.pki import DevCA, SubjectInfo, write_pem
from lab.dev.ports import DEV_CALLBACK_URL, DEV_EMULATOR, DEV_EMULATOR_PORT
from producer.files import private_dir, write_private

__all__ = [
    "DEV_CALLBACK_URL",
    "DEV_EMULATOR",
    "DEV_EMULATOR_PORT",
    "DEV_MIS_ID",
    "DEV_SYSTEM_IDS",
    "N3_DEV_CODES",
    "dev_credential",
    "put_on_n3",
    "request_config",
    "write_dev_config",
]

#: the development МИС: its topics are emd.document.created.local-mis and emd.document.status.local-mis
DEV_MIS_ID = "local-mis"
#: the systemIds the development МИС may publish as: the first is what the development publishers use
DEV_SYSTEM_IDS = ("local-mis", "emd-clinic-test")
#: the N3 codes every development doctor gets (IdSpeciality, IdPosition): the values of N3's own minimal sample
N3_DEV_CODES = {"id_speciality": 28, "id_position": 114}


def _dev_numbers(index: int) -> tuple[str, str, str]:
    """Distinct, well-formed dev ИНН ЮЛ (10), ОГРН (13) and head СНИЛС (11) for organisation ``index``."""
    return f"77{index:08d}", f"10277{index:08d}", f"900{index:08d}"


def dev_credential(directory: Path, name: str, ca: Any, subject: Any, **issue: Any) -> dict[str, Any]:
    """Issue a key + certificate from the dev ``ca``, write ``name.key``/``name.pem``; return the config entry."""
    key, cert = ca.issue(subject=subject, **issue)
    write_pem(key, cert, cert_path=directory / f"{name}.pem", key_path=directory / f"{name}.key")
    return {"key": f"{name}.key", "certificate": f"{name}.pem"}


#: the emulator's file of registered information systems, written beside organizations.json
SYSTEMS_FILE = "systems.json"


def write_dev_config(
    directory: str | os.PathLike,
    *,
    organizations: int = 1,
    oids: list[str] | None = None,
    doctors: list[str] | tuple[str, ...] = ("12345678901",),
    mode: str = "server",
    valid_from: dt.datetime | None = None,
    valid_days: int = 730,
    endpoint: str = f"{DEV_EMULATOR}/ips",
    callback_url: str | None = None,
    schematron: str = "warn",
    paramset: str = "A",
    mis_id: str = DEV_MIS_ID,
    system_ids: tuple[str, ...] = DEV_SYSTEM_IDS,
    allow_unvalidated_kinds: bool = True,
) -> Path:
    """A complete development configuration in ``directory``; returns the path of ``organizations.json``. Beside
    it, ``systems.json`` registers each organisation's information system (its clientEntityId and WS-Security
    certificate) with the emulator (``emd emulator --systems``): the defaults of both agree with ``emd emulator``
    and ``emd callbacks`` on their default ports (:data:`DEV_EMULATOR`, :data:`DEV_CALLBACK_URL`).

    Writes a dev CA (``lab.dev.pki``), one key per doctor СНИЛС in ``doctors`` (shared by every
    organisation), and per organisation an employee certificate signing for it under an МЧД signed by
    its head (``lab.dev.mchd``), plus the information system's WS-Security key. ``oids``: the ФРМО
    OIDs (default ``1.2.643.5.1.13.13.12.2.77.<n>``; their count overrides ``organizations``).
    ``valid_from``: certificates' notBefore (default 2015-01-01, so the Ministry samples' creation dates
    fall inside); ``valid_days`` counts from now. ``mis_id``/``system_ids``: the one МИС granted every
    organisation; ``allow_unvalidated_kinds``: what each organisation says about kinds without a shipped XSD or
    Schematron. Development only: software keys, nobody's CA.
    """
    out = Path(directory)
    out = private_dir(out)  # private keys: 0600 files in a 0700 directory
    now = dt.datetime.now(dt.UTC)
    not_before = valid_from or dt.datetime(2015, 1, 1, tzinfo=dt.UTC)
    not_after = now + dt.timedelta(days=valid_days)
    window: dict[str, Any] = {"not_before": not_before, "not_after": not_after}
    ca = DevCA.create(
        "emd-pipeline dev CA",
        paramset=paramset,
        not_before=not_before,
        not_after=now + dt.timedelta(days=3650),
    )
    write_pem(None, ca.certificate, cert_path=out / "ca.pem")
    oids = list(oids) if oids else [f"1.2.643.5.1.13.13.12.2.77.{9000 + i}" for i in range(organizations)]

    doctor_entries = {}
    for n, snils in enumerate(doctors):
        doctor_entries[snils] = dev_credential(
            out,
            f"doctor-{snils}",
            ca,
            SubjectInfo(family=f"Врачев{n}", given="Иван Петрович", snils=snils, title="врач"),
            **window,
        )
        doctor_entries[snils]["server_signing_consent"] = "development configuration (emd certs dev-config)"

    orgs = []
    registered: list[dict[str, Any]] = []  # the emulator's systems.json
    for i, oid in enumerate(oids, start=1):
        inn, ogrn, head_snils = _dev_numbers(i)
        name = f"ГБУЗ Тестовая больница № {i}"
        head = Person(
            family="Главный", given="Пётр", patronymic="Сергеевич", snils=head_snils, position="Главный врач"
        )
        employee = Person(family="Подписантов", given="Олег", patronymic="Ильич", snils=f"800{i:08d}")
        head_key, head_cert = ca.issue(
            subject=SubjectInfo(
                family=head.family,
                given=f"{head.given} {head.patronymic}",
                snils=head_snils,
                ogrn=ogrn,
                inn_le=inn,
                org=name,
                title="Главный врач",
            ),
            **window,
        )
        write_pem(None, head_cert, cert_path=out / f"org{i}-head.pem")
        entry = dev_credential(
            out,
            f"org{i}-employee",
            ca,
            SubjectInfo(
                family=employee.family,
                given=f"{employee.given} {employee.patronymic}",
                snils=employee.snils,
                ogrn=ogrn,
                inn_le=inn,
                org=name,
                title="Заместитель главного врача",
            ),
            **window,
        )
        xml = build_mchd(
            organization_name=name,
            organization_inn=inn,
            organization_ogrn=ogrn,
            head=head,
            representative=employee,
            issued=not_before.date(),
            valid_until=not_after.date(),
        )
        write_private(out / f"org{i}-mchd.xml", xml)
        write_private(out / f"org{i}-mchd.sig", sign_mchd(xml, key=head_key, certificate=head_cert))
        entry["mchd"] = {"xml": f"org{i}-mchd.xml", "signature": f"org{i}-mchd.sig"}
        system = dev_credential(
            out,
            f"org{i}-system",
            ca,
            SubjectInfo(family="", common_name=f"МИС {name}", ogrn=ogrn, inn_le=inn, org=name),
            **window,
        )
        client_entity_id = f"dev-mis-{i}"
        registered.append(
            {"clientEntityId": client_entity_id, "name": name, "certificates": [system["certificate"]]}
        )
        orgs.append(
            {
                "oid": oid,
                "name": name,
                "inn": inn,
                "ogrn": ogrn,
                "allow_unvalidated_kinds": allow_unvalidated_kinds,
                "signing": {
                    "mode": mode,
                    "doctors": doctor_entries if mode == "server" else {},
                    "organization": entry,
                },
                "remd": {
                    "environment": "test",
                    "endpoint": endpoint,
                    "callback_url": callback_url or DEV_CALLBACK_URL,
                    "client_entity_id": client_entity_id,
                    "system_key": system["key"],
                    "system_certificate": system["certificate"],
                    "rate_limit_per_minute": 600,
                    "transport": "ips",
                },
            }
        )
    config = {
        "comment": "development configuration written by `emd certs dev-config`: software keys, dev CA",
        "schematron": schematron,
        "mchd_revoked": [],
        "organizations": orgs,
        "mis": [{"id": mis_id, "organizations": list(oids), "systemIds": list(system_ids)}],
    }
    path = out / "organizations.json"
    write_private(path, json.dumps(config, ensure_ascii=False, indent=2) + "\n")
    systems = {
        "comment": "the information systems the emulator admits (emd emulator --systems); written with "
        "organizations.json by `emd certs dev-config`",
        "systems": registered,
    }
    write_private(out / SYSTEMS_FILE, json.dumps(systems, ensure_ascii=False, indent=2) + "\n")
    return path


def put_on_n3(
    org: dict[str, Any], directory: Path, *, index: int, base_url: str, doctors: Sequence[str]
) -> tuple[str, str]:
    """Move one organisation of a development configuration (a dict, as written) to the N3 route of the emulator
    at ``base_url``: its GUID in ``n3-<index>.token``, EmkService and PixService as on N3's stand, the [G] status
    method, and N3 codes for each of ``doctors``. Returns (GUID, ЛПУ id), what the emulator's systems file lists."""
    token, lpu = str(uuid.uuid4()), f"dev-lpu-{index}"
    write_private(directory / f"n3-{index}.token", token + "\n")  # a secret: 0600
    org["remd"].update(
        transport="n3",
        endpoint=f"{base_url}/n3/emk/EMKService.svc",
        n3={
            "lpu_id": lpu,
            "token_file": f"n3-{index}.token",
            "status_url": f"{base_url}/n3/status",
            "docstorage_url": f"{base_url}/n3/docstorage/",
            "doctors": {snils: dict(N3_DEV_CODES) for snils in doctors},
        },
    )
    return token, lpu


def request_config(directory: str | os.PathLike, document: bytes, route: str) -> Path:
    """A throwaway development configuration for ``emd request --dev``: the document's organisation and signers
    (keys from a fresh dev CA, as ``emd run`` writes them), on ``route`` ("ips" or "n3") against a local emulator
    address. Entry point ``emd.dev_config`` (the deployable reaches the lab only through it)."""
    from producer import cda
    from producer.xmlsafe import parse_xml

    meta = cda.extract(parse_xml(document))
    out = Path(directory)
    doctors = sorted({s.snils for s in meta.signers if s.snils}) or ["12345678901"]
    path = write_dev_config(
        out, oids=[meta.organization_oid or "1.2.643.5.1.13.13.12.2.77.9000"], doctors=doctors
    )
    if route == "n3":
        config = json.loads(path.read_text(encoding="utf-8"))
        put_on_n3(config["organizations"][0], out, index=1, base_url=DEV_EMULATOR, doctors=doctors)
        path.write_text(json.dumps(config, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return path

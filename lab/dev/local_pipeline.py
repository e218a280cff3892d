"""The whole pipeline on one machine, as child processes: what `emd run`, `emd demo` and the end-to-end tests start.

``LocalPipeline`` writes a development configuration (dev CA, doctors' and organisations' keys, МЧД, one
ИС key for all clinics), starts the РЭМД/ИПС emulator, the callback service and the three workers as
children of a :class:`~lab.dev.supervisor.Supervisor` against a broker it is given, and publishes
documents through the МИС producer library. Children can be killed (``kill -9``) and restarted, which is
how the tests crash a worker in the middle of a run.

``sample_documents`` turns the Ministry samples into documents a clinic would send today: each with a new
localUid and a creation time of now (the examples share ids and predate some of their kinds).
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from lxml import etree

from lab.broker import free_port
from lab.dev.supervisor import Supervisor
from producer.files import write_private
from producer.xmlsafe import parse_xml
from services.timestamps import cda_minute

#: the support console's development user (its password is new on each run: `console_hint`)
CONSOLE_USER = "dev"

HL7 = "urn:hl7-org:v3"
#: every child of a full pipeline, in start order (the emulator first: the others need its certificate)
COMPONENTS = ("emulator", "signer", "sender", "status", "callbacks")


# ------------------------------------------------------------------------------------------- documents
def sample_documents(
    folder: Path, count: int | None
) -> tuple[list[tuple[str, bytes]], list[tuple[str, str]]]:
    """(sample name, bytes) of ``count`` documents made from the samples the producer accepts (all of them once
    when ``count`` is None), each with a fresh localUid and created now, and (name, reason) of the samples left out.

    A sample is left out when the producer refuses it as it stands, or when its kind is not in force today (НСИ
    1520 dates): a document made from it now would be refused at the door (``KIND_NOT_VALID_ON_DATE``,
    ``producer.contract``), so every document made can be acknowledged.
    """
    from producer.client import InvalidDocument, build_created_data, read_document
    from producer.contract import kind_date_problem

    files = sorted(Path(folder).glob("*.xml"))
    if not files:
        raise SystemExit(f"emd: no sample documents in {folder} (give --samples a folder of СЭМД)")
    accepted, refused = [], []
    now = datetime.now(ZoneInfo("Europe/Moscow")).isoformat()
    for f in files:
        data = f.read_bytes()
        try:  # exactly the producer's checks, without storing or sending anything
            created = build_created_data(read_document(data), system_id="emd-run", document=None)
        except InvalidDocument as exc:
            refused.append((f.name, f"{exc.reason}: {exc.message}"))
            continue
        today = kind_date_problem(created["kind"], now)
        if today is not None:
            refused.append((f.name, f"KIND_NOT_VALID_ON_DATE: made new today, {today}"))
            continue
        accepted.append((f.name, data))
    if not accepted:
        raise SystemExit(f"emd: none of the samples in {folder} can be published")
    count = len(accepted) if count is None else count
    return [
        (accepted[n % len(accepted)][0], as_new_document(accepted[n % len(accepted)][1]))
        for n in range(count)
    ], refused


def as_new_document(data: bytes, *, local_uid: str | None = None) -> bytes:
    """The same document with a new localUid (ClinicalDocument/id extension) and a creation time of now.

    The time is to the minute, with its zone: the Ministry Schematron (rule У1-15) allows a day or a minute,
    not seconds, so a document with seconds fails every kind's Schematron.
    """
    root = parse_xml(data)
    _header(root, "id").set("extension", local_uid or uuid.uuid4().hex[:20])
    _header(root, "effectiveTime").set("value", cda_minute(datetime.now(ZoneInfo("Europe/Moscow"))))
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def _organization_of(data: bytes) -> str:
    from producer import cda

    return cda.extract(parse_xml(data)).organization_oid or ""


def n3_refusal(data: bytes) -> str | None:
    """Why the N3 route would refuse this document whoever signs it (its kind in N3's dictionary 195 as shipped,
    the patient and signers' data N3 needs), or None: the reason code and message the signer would give."""
    from producer.client import build_created_data, read_document
    from producer.errors import PermanentError
    from services.pipeline.n3_route import n3_carries
    from services.remd.n3_kinds import packaged

    created = build_created_data(read_document(data), system_id="emd-run", document=None)
    try:
        n3_carries(created, packaged())
    except PermanentError as exc:
        return f"{exc.reason}: {exc.message}"
    return None


def _header(root: etree._Element, name: str) -> etree._Element:
    el = root.find(f"{{{HL7}}}{name}")
    if el is None:
        raise ValueError(f"not a СЭМД: no ClinicalDocument/{name}")
    return el


def participants(documents: Iterable[tuple[str, bytes]]) -> tuple[list[str], list[str]]:
    """Organisation OIDs and signer СНИЛСы a development configuration must cover."""
    from producer import cda

    oids: set[str] = set()
    snils: set[str] = set()
    for _, data in documents:
        meta = cda.extract(parse_xml(data))
        if meta.organization_oid:
            oids.add(meta.organization_oid)
        snils.update(s.snils for s in meta.signers if s.snils)
    return sorted(oids), sorted(snils)


# ------------------------------------------------------------------------------------------- the pipeline
class LocalPipeline:
    """Emulator, workers and callback service as children, on a broker you give it.

    :param workdir: configuration, data (claim-check documents, lifecycle database) and child logs.
    :param bootstrap_servers: the broker; topics must exist (``producer.topology.ensure_topics``, with the
        development МИС's: ``mis_ids=(lab.dev.config.DEV_MIS_ID,)``), and documents are published as that МИС.
    :param documents: the documents the configuration must cover (their organisations and signers).
    :param kafka_env: environment the children need for this broker (``LocalBroker.client_env()``).
    :param scenario: the emulator scenario; ``emulator_args`` adds options (``--outage-seconds 20``…).
    :param env: extra environment for every child (``EMD_SENDER_RETRY_BASE_SECONDS``…).
    :param components: which children to start (default all of :data:`COMPONENTS`).
    :param configure: called with the parsed organisations configuration (a dict, file names relative to
        ``config_dir``) after :meth:`write_config` made it and before any child starts; what it changes in
        the dict is written back (a test breaks one clinic: a dead endpoint, a certificate ИПС rejects).
    :param n3_clinics: how many of the documents' organisations register through the emulator's N3.Health face
        instead of ИПС (default 0): the first by OID whose every document N3 can carry (``n3_refusal``); their
        documents are polled every 2 s unless ``env`` sets ``EMD_POLL_INTERVAL_SECONDS``.
    """

    def __init__(
        self,
        *,
        workdir: Path,
        bootstrap_servers: str,
        documents: Sequence[tuple[str, bytes]],
        kafka_env: dict[str, str] | None = None,
        scenario: str = "ok",
        emulator_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        components: Sequence[str] = COMPONENTS,
        configure: Callable[[dict[str, Any]], None] | None = None,
        n3_clinics: int = 0,
    ) -> None:
        self.configure = configure
        self.n3_clinics = n3_clinics
        #: the organisations on the N3 route (set by write_config)
        self.n3_organizations: list[str] = []
        self.workdir = Path(workdir).resolve()
        self.bootstrap_servers = bootstrap_servers
        self.documents = documents
        self.scenario, self.emulator_args = scenario, tuple(emulator_args)
        self.components = tuple(components)
        unknown = set(self.components) - set(COMPONENTS)
        if unknown:
            raise ValueError(f"unknown component(s) {sorted(unknown)}; known: {', '.join(COMPONENTS)}")
        self.supervisor = Supervisor(log_dir=self.workdir / "logs")
        self.emulator_port, self.callbacks_port = free_port(), free_port()
        #: each pipeline process's /metrics port (what a Prometheus scrapes: tests/test_prometheus_live.py)
        self.metrics_ports = {name: free_port() for name in ("signer", "sender", "status", "callbacks")}
        self.emulator_url = f"http://127.0.0.1:{self.emulator_port}"
        self.callback_url = f"http://127.0.0.1:{self.callbacks_port}/callback"
        self.config_dir = self.workdir / "config"
        self.data_dir = self.workdir / "data"
        self.console_users_file = self.config_dir / "console-users.json"
        self.console_password = ""  # written with the configuration
        self.env: dict[str, str] = {
            **(kafka_env or {}),
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers,
            "EMD_DATA_DIR": str(self.data_dir),
            "EMD_LOG_FORMAT": "json",
            "EMD_EMULATOR_URL": self.emulator_url,
            "EMD_IPS_CERTIFICATES": str(self.config_dir / "emulator.pem"),
            "EMD_CALLBACK_PORT": str(self.callbacks_port),
            "EMD_ORGANIZATIONS": str(self.config_dir / "organizations.json"),
            "EMD_CONSOLE_USERS": str(self.config_dir / "console-users.json"),
            **({"EMD_POLL_INTERVAL_SECONDS": "2"} if n3_clinics else {}),
            **(env or {}),
        }

    # --- set-up ---------------------------------------------------------------------------------
    def write_config(self) -> Path:
        """The development configuration: every organisation and signer of the documents, one ИС for all."""
        from lab.dev.config import write_dev_config

        oids, snils = participants(self.documents)
        orgs_file = write_dev_config(
            self.config_dir,
            oids=oids,
            doctors=snils,
            endpoint=f"{self.emulator_url}/ips",
            callback_url=self.callback_url,
        )
        # One МИС serving many clinics is one information system in ЕГИСЗ: one clientEntityId, one ИС key.
        config = json.loads(orgs_file.read_text())
        orgs = config["organizations"]
        shared = {k: orgs[0]["remd"][k] for k in ("client_entity_id", "system_key", "system_certificate")}
        for org in orgs:
            org["remd"].update(shared)
        write_private(orgs_file, json.dumps(config, ensure_ascii=False, indent=2))
        first = orgs[0]
        systems = {
            "systems": [
                {
                    "clientEntityId": first["remd"]["client_entity_id"],
                    "name": first["name"],
                    "certificates": [str(self.config_dir / first["remd"]["system_certificate"])],
                }
            ],
            "n3": self._route_through_n3(orgs, snils),
        }
        write_private(orgs_file, json.dumps(config, ensure_ascii=False, indent=2))
        write_private(self.config_dir / "systems.json", json.dumps(systems, ensure_ascii=False, indent=2))
        self._write_emulator_identity()
        self._write_console_user()
        if self.configure is not None:
            self.configure(config)
            write_private(orgs_file, json.dumps(config, ensure_ascii=False, indent=2))
        return orgs_file

    def _write_console_user(self) -> None:
        """The console's development user, with a fresh random password: every console page needs a login, so
        a development run prints this way in (``emd run`` / ``emd demo``)."""
        from services.console.auth import add_user

        self.console_password = secrets.token_urlsafe(12)
        add_user(self.console_users_file, CONSOLE_USER, self.console_password)

    def console_hint(self) -> str:
        """How to open the support console on this run, with its development user."""
        return (
            f"console: EMD_CONSOLE_USERS={self.console_users_file} EMD_ORGANIZATIONS={self.config_dir / 'organizations.json'} "
            f"EMD_DATA_DIR={self.data_dir} KAFKA_BOOTSTRAP_SERVERS={self.bootstrap_servers} emd console; "
            f"log in as {CONSOLE_USER}, password {self.console_password}"
        )

    def _route_through_n3(self, orgs: list[dict[str, Any]], doctors: list[str]) -> list[dict[str, str]]:
        """The first ``n3_clinics`` organisations (by OID) whose every document N3 can carry (``n3_refusal``), on the
        N3 route of the emulator's N3 face; the face's clients (GUID → ЛПУ id)."""
        from lab.dev.config import put_on_n3

        by_org: dict[str, list[bytes]] = {}
        for _, data in self.documents:
            by_org.setdefault(_organization_of(data), []).append(data)
        ready = [
            o
            for o in sorted(orgs, key=lambda o: o["oid"])
            if not any(n3_refusal(d) for d in by_org.get(o["oid"], []))
        ]
        clients = []
        for i, org in enumerate(ready[: self.n3_clinics], start=1):
            token, lpu = put_on_n3(org, self.config_dir, index=i, base_url=self.emulator_url, doctors=doctors)
            clients.append({"token": token, "lpuId": lpu})
            self.n3_organizations.append(org["oid"])
        return clients

    def _write_emulator_identity(self) -> None:
        """The emulator's key and certificate, made once: a restarted emulator signs as before (the callback
        service pins this certificate), and its state dir keeps what it registered and accepted."""
        from lab.dev.pki import DevCA, SubjectInfo, write_pem

        key, cert = DevCA.create("РЭМД emulator CA").issue(
            subject=SubjectInfo(family="", common_name="ИПС ЕГИСЗ (эмулятор)", org="emd-pipeline emulator")
        )
        write_pem(
            key,
            cert,
            cert_path=self.config_dir / "emulator-identity.pem",
            key_path=self.config_dir / "emulator-identity.key",
        )

    def start(self) -> LocalPipeline:
        """Write the configuration and start the children; if one does not start, stop those already running
        (``with LocalPipeline(...)`` never reaches ``__exit__`` when ``start`` raises)."""
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> LocalPipeline:
        self.write_config()
        self.supervisor.base_env.update(self.env)
        if "emulator" in self.components:
            self.supervisor.start(
                "emulator",
                "emulator",
                "--port",
                str(self.emulator_port),
                "--scenario",
                self.scenario,
                "--systems",
                str(self.config_dir / "systems.json"),
                "--key",
                str(self.config_dir / "emulator-identity.key"),
                "--certificate",
                str(self.config_dir / "emulator-identity.pem"),
                "--state",
                str(self.workdir / "emulator-state"),
                "--write-certificate",
                str(self.config_dir / "emulator.pem"),
                *self.emulator_args,
            )
            self._wait_for_file(self.config_dir / "emulator.pem", "emulator")
        for stage in ("signer", "sender", "status"):
            if stage in self.components:
                self.supervisor.start(stage, "worker", stage, env=self._metrics_env(stage))
        if "callbacks" in self.components:
            self.supervisor.start(
                "callbacks",
                "callbacks",
                "--port",
                str(self.callbacks_port),
                env=self._metrics_env("callbacks"),
            )
        return self

    def _metrics_env(self, name: str) -> dict[str, str]:
        return {"EMD_METRICS_PORT": str(self.metrics_ports[name])}

    def metrics_urls(self) -> dict[str, str]:
        """``name -> http://127.0.0.1:PORT/metrics`` of every pipeline process started."""
        return {
            n: f"http://127.0.0.1:{port}/metrics"
            for n, port in self.metrics_ports.items()
            if n in self.components
        }

    def stop(self) -> None:
        self.supervisor.stop()

    def __enter__(self) -> LocalPipeline:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # 120 s: on a 2-core machine at load average 30-40 (parallel test runs) importing the emulator alone took 11 s,
    # and 30 s ran out before it wrote its certificate
    def _wait_for_file(self, path: Path, name: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not path.exists():
            if name in self.supervisor.dead() or time.monotonic() > deadline:
                raise SystemExit(f"emd: the {name} did not start:\n{self.supervisor.tail(name)}")
            time.sleep(0.1)

    # --- crashes ----------------------------------------------------------------------------------
    def kill(self, name: str) -> None:
        """``kill -9`` of one child: no drain, no commit."""
        self.supervisor.kill(name)

    def restart(self, name: str) -> None:
        self.supervisor.restart(name)

    # --- documents ----------------------------------------------------------------------------------
    def publish(self, documents: Iterable[tuple[str, bytes]] | None = None, *, say=None) -> list[str]:
        """Publish through the МИС producer library (claim-check store in the data dir); their localUids."""
        from lab.dev.config import DEV_MIS_ID, DEV_SYSTEM_IDS
        from producer.client import DocumentPublisher
        from services.documents.store import FilesystemStore

        documents = list(self.documents if documents is None else documents)
        store = FilesystemStore(self.data_dir / "documents")
        uids: list[str] = []
        with DocumentPublisher(
            self.bootstrap_servers, mis_id=DEV_MIS_ID, store=store, system_id=DEV_SYSTEM_IDS[0]
        ) as publisher:
            for i, (_, data) in enumerate(documents, 1):
                uids.append(publisher.publish(data).local_uid)
                if say is not None and (i % 50 == 0 or i == len(documents)):
                    say(f"published {i}/{len(documents)}")
        return uids

    # --- the emulator's view ------------------------------------------------------------------------
    def emulator(self, resource: str, **params: Any) -> Any:
        """GET ``/_emulator/<resource>`` (``registry``, ``requests``, ``rules``, ``health``) as JSON."""
        response = httpx.get(f"{self.emulator_url}/_emulator/{resource}", params=params, timeout=30)
        response.raise_for_status()
        return response.json()

    def add_rules(self, rules: list[dict[str, Any]], *, replace: bool = False) -> None:
        httpx.post(
            f"{self.emulator_url}/_emulator/rules", json={"rules": rules, "replace": replace}, timeout=30
        ).raise_for_status()

    def duplicates(self) -> int:
        """localUids the emulator registered more than once (must be 0); -1 when it cannot be asked."""
        try:
            rows = self.emulator("registry")
        except (httpx.HTTPError, ValueError):
            return -1
        seen: dict[tuple[str, str], int] = {}
        for row in rows:
            k = (row.get("organization") or "", row.get("local_uid") or "")
            seen[k] = seen.get(k, 0) + 1
        return sum(1 for n in seen.values() if n > 1)

"""``emd run`` and ``emd demo``: the whole pipeline on one machine, on the embedded defaults.

Starts (or uses, with KAFKA_BOOTSTRAP_SERVERS) a broker, creates the topics, writes a development
configuration (dev CA, doctors' and organisations' keys, МЧД, ИС keys), starts the РЭМД/ИПС emulator, the
callback service and the three workers as child processes, publishes documents, and follows them from
topic to topic until each is acknowledged or dead-lettered.

* ``emd run`` (``make run``): the Ministry sample documents, a live terminal view, then a summary. Ctrl-C
  stops everything; no process is left behind.
* ``emd demo --documents N``: N documents generated from the samples with fresh localUids, no live view;
  exit 0 only when every document reached a final state; the last line is machine-readable:
  ``acknowledged=A dead_lettered=D lost=L duplicated=R``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import uuid
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from lxml import etree

from services.broker import LocalBroker, free_port
from services.config import Settings
from services.logs import configure, get_logger
from services.samples import MINISTRY_SAMPLES
from services.supervisor import Supervisor
from services.topology import ensure_topics
from services.watch import STAGES, PipelineWatcher, Snapshot

log = get_logger("emd.run")
HL7 = "urn:hl7-org:v3"


def register(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("run", help="run the whole pipeline locally on the Ministry samples, with a live view",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(r)
    r.add_argument("--samples", type=Path, default=MINISTRY_SAMPLES, help="folder of СЭМД to publish")
    r.set_defaults(func=run, documents=None)

    d = sub.add_parser("demo", help="non-interactive run: N generated documents, machine-readable result",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(d)
    d.add_argument("--documents", type=int, default=100, help="how many documents (default 100)")
    d.add_argument("--samples", type=Path, default=MINISTRY_SAMPLES, help="folder of СЭМД to generate from")
    d.set_defaults(func=run)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--timeout", type=float, default=600, help="seconds to wait for every document (default 600)")
    p.add_argument("--scenario", default="ok", help="emulator scenario (emd emulator --list-scenarios)")
    p.add_argument("--until", choices=STAGES[1:], default="acknowledged",
                   help="the stage that counts as done (default acknowledged: the whole pipeline)")
    p.add_argument("--workdir", type=Path, default=Path(".emd-data/run"),
                   help="configuration, data and child logs (emptied at start)")


# ------------------------------------------------------------------------------------------- documents
def _load_documents(folder: Path, count: int | None) -> tuple[list[tuple[str, bytes]], list[tuple[str, str]]]:
    """(name, bytes) of the documents the producer accepts, and (name, reason) of those it refuses."""
    from producer.client import InvalidDocument, build_created_data, read_document

    files = sorted(folder.glob("*.xml"))
    if not files:
        raise SystemExit(f"emd: no sample documents in {folder} (set EMD_SHARED_DIR, or give --samples)")
    accepted, refused = [], []
    for f in files:
        data = f.read_bytes()
        try:  # exactly the producer's checks, without storing or sending anything
            build_created_data(read_document(data), system_id="emd-run", document=None)
        except InvalidDocument as exc:
            refused.append((f.name, f"{exc.reason}: {exc.message}"))
            continue
        accepted.append((f.name, data))
    # The Ministry examples share ids (many are "144632") and were created in 2015–2022, before some of
    # their kinds took effect: published as they are, РЭМД would refuse them as duplicates or out of date.
    # Each is published as a clinic would today: a document of its own, created now.
    count = len(accepted) if count is None else count
    return [(f"{accepted[n % len(accepted)][0]}", _as_new_document(accepted[n % len(accepted)][1]))
            for n in range(count)], refused


def _as_new_document(data: bytes) -> bytes:
    """The same document with a new localUid (ClinicalDocument/id extension) and a creation time of now."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True)
    root = etree.fromstring(data, parser)
    root.find(f"{{{HL7}}}id").set("extension", uuid.uuid4().hex[:20])
    effective = root.find(f"{{{HL7}}}effectiveTime")
    effective.set("value", datetime.now(ZoneInfo("Europe/Moscow")).strftime("%Y%m%d%H%M%S%z"))
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def _participants(documents: list[tuple[str, bytes]]) -> tuple[list[str], list[str]]:
    """Organisation OIDs and signer СНИЛСы the development configuration must cover."""
    from services import cda
    from services.xmlsafe import parse_xml

    oids, snils = set(), set()
    for _, data in documents:
        meta = cda.extract(parse_xml(data))
        if meta.organization_oid:
            oids.add(meta.organization_oid)
        snils.update(s.snils for s in meta.signers if s.snils)
    return sorted(oids), sorted(snils)


# ------------------------------------------------------------------------------------------- the run
def run(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    configure(fmt=settings.log_format, level="warning")
    interactive = args.documents is None and sys.stdout.isatty()
    workdir: Path = args.workdir.resolve()
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)

    documents, refused = _load_documents(args.samples, args.documents)
    say = print if args.documents is None else (lambda *a, **k: print(*a, **k, file=sys.stderr))
    say(f"{len(documents)} documents to publish, each with a fresh localUid and created now"
        + (f"; {len(refused)} samples refused by the producer (reasons at the end)" if refused else ""))

    with ExitStack() as stack:
        if settings.kafka_bootstrap_servers:
            bootstrap, kafka_env = settings.kafka_bootstrap_servers, {}
        else:
            broker = stack.enter_context(LocalBroker(port=settings.local_broker_port,
                                                     log_path=workdir / "broker.log"))
            bootstrap, kafka_env = broker.bootstrap_servers, broker.client_env()
        ensure_topics(bootstrap, partitions=settings.kafka_topic_partitions)
        say(f"broker: {bootstrap}")

        sup = Supervisor(log_dir=workdir / "logs")
        stack.callback(sup.stop)
        env = _start_components(sup, workdir, documents, bootstrap, kafka_env, args, settings, say)

        watcher = PipelineWatcher(bootstrap, final_stage=args.until).start()
        stack.callback(watcher.stop)
        expected = _publish(documents, bootstrap, env, say)
        view = _LiveView(interactive, sup)
        try:
            snap = watcher.wait_for(expected, timeout=args.timeout, on_tick=view.tick)
        except KeyboardInterrupt:
            say("\ninterrupted: stopping every component...")
            return 130
        duplicated = _emulator_duplicates(env)
        lost = snap.total - snap.final
        _summary(snap, refused, workdir, env, say, args.until)
        print(f"acknowledged={snap.per_stage[args.until]} dead_lettered={snap.dead_lettered} "
              f"lost={lost} duplicated={duplicated}", flush=True)
        return 0 if lost == 0 and duplicated == 0 else 1


def _start_components(sup: Supervisor, workdir: Path, documents, bootstrap: str, kafka_env: dict[str, str],
                      args: argparse.Namespace, settings: Settings, say) -> dict[str, str]:
    from services.organizations import write_dev_config

    emulator_port, callbacks_port = free_port(), free_port()
    oids, snils = _participants(documents)
    config_dir = workdir / "config"
    orgs_file = write_dev_config(config_dir, oids=oids, doctors=snils,
                                 endpoint=f"http://127.0.0.1:{emulator_port}/ips",
                                 callback_url=f"http://127.0.0.1:{callbacks_port}/callback")
    # One МИС serving many clinics is one information system in ЕГИСЗ: one clientEntityId, one ИС key.
    config = json.loads(orgs_file.read_text())
    orgs = config["organizations"]
    shared = {k: orgs[0]["remd"][k] for k in ("client_entity_id", "system_key", "system_certificate")}
    for org in orgs:
        org["remd"].update(shared)
    orgs_file.write_text(json.dumps(config, ensure_ascii=False, indent=2))
    orgs = orgs[:1]
    systems = {"systems": [{"clientEntityId": o["remd"]["client_entity_id"], "name": o["name"],
                            "certificates": [str(config_dir / o["remd"]["system_certificate"])]} for o in orgs]}
    (config_dir / "systems.json").write_text(json.dumps(systems, ensure_ascii=False, indent=2))
    env = {
        **kafka_env,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "EMD_ORGANIZATIONS": str(orgs_file),
        "EMD_DATA_DIR": str(workdir / "data"),
        "EMD_LOG_FORMAT": "json",
        "EMD_EMULATOR_URL": f"http://127.0.0.1:{emulator_port}",
        "EMD_IPS_CERTIFICATES": str(config_dir / "emulator.pem"),
        "EMD_CALLBACKS_PORT": str(callbacks_port),
    }
    sup.base_env.update(env)
    sup.start("emulator", "emulator", "--port", str(emulator_port), "--scenario", args.scenario,
              "--systems", str(config_dir / "systems.json"), "--write-certificate", str(config_dir / "emulator.pem"))
    _wait_for_file(config_dir / "emulator.pem", sup, "emulator")
    for stage in ("signer", "sender", "status"):
        sup.start(stage, "worker", stage)
    sup.start("callbacks", "callbacks", "--port", str(callbacks_port))
    say(f"emulator: {env['EMD_EMULATOR_URL']} (scenario {args.scenario}); callbacks: "
        f"http://127.0.0.1:{callbacks_port}/callback; logs: {sup.log_dir}")
    return env


def _wait_for_file(path: Path, sup: Supervisor, name: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if name in sup.dead() or time.monotonic() > deadline:
            raise SystemExit(f"emd: the {name} did not start:\n{sup.tail(name)}")
        time.sleep(0.1)


def _publish(documents, bootstrap: str, env: dict[str, str], say) -> set[str]:
    from producer.client import DocumentPublisher
    from services.docstore import FilesystemStore

    store = FilesystemStore(Path(env["EMD_DATA_DIR"]) / "documents")
    expected: set[str] = set()
    with DocumentPublisher(bootstrap, store=store, system_id="emd-run") as publisher:
        for i, (name, data) in enumerate(documents, 1):
            published = publisher.publish(data)
            expected.add(published.local_uid)
            if i % 50 == 0 or i == len(documents):
                say(f"published {i}/{len(documents)}")
    return expected


def _emulator_duplicates(env: dict[str, str]) -> int:
    """localUids the emulator registered more than once (must be 0)."""
    import httpx

    try:
        items = httpx.get(env["EMD_EMULATOR_URL"] + "/_emulator/registry", timeout=10).json()
    except (httpx.HTTPError, ValueError):
        return -1
    rows = items.get("items", items) if isinstance(items, dict) else items
    seen: dict[tuple[str, str], int] = {}
    for row in rows:
        k = (row.get("organization") or "", row.get("localUid") or row.get("local_uid") or "")
        seen[k] = seen.get(k, 0) + 1
    return sum(1 for n in seen.values() if n > 1)


class _LiveView:
    """A few lines redrawn in place on a terminal; a line every 5 s otherwise."""

    def __init__(self, interactive: bool, sup: Supervisor) -> None:
        self.interactive, self.sup = interactive, sup
        self.lines = 0
        self.last_plain = 0.0

    def tick(self, snap: Snapshot) -> None:
        dead_children = self.sup.dead()
        text = [
            "  ".join(f"{s}: {snap.per_stage[s]:>4}" for s in STAGES) + f"  dead-lettered: {snap.dead_lettered:>4}",
            f"final {snap.final}/{snap.total}   {snap.rate:.1f} documents/s"
            + (f"   STOPPED: {', '.join(dead_children)}" if dead_children else ""),
        ]
        for e in snap.errors[-3:]:
            ids = f" MessageID {e.message_ids[-1]}" if e.message_ids else ""
            text.append(f"  ✗ {e.local_uid} [{e.stage}] {e.reason}{ids}: {e.message[:90]}")
        if self.interactive:
            sys.stdout.write(("\x1b[F\x1b[K" * self.lines) + "\n".join(text) + "\n")
            sys.stdout.flush()
            self.lines = len(text)
        elif time.monotonic() - self.last_plain >= 5:
            print(text[0] + "  " + text[1], file=sys.stderr, flush=True)
            self.last_plain = time.monotonic()


def _summary(snap: Snapshot, refused, workdir: Path, env: dict[str, str], say, until: str) -> None:
    say("")
    say(f"{snap.per_stage[until]} {until}, {snap.dead_lettered} dead-lettered, "
        f"{snap.total - snap.final} not final, of {snap.total} published")
    for e in snap.errors:
        say(f"  dead letter: {e.local_uid} at {e.stage}: {e.reason} — {e.message[:120]}")
    for name, reason in refused:
        say(f"  refused by the producer: {name}: {reason[:140]}")
    say(f"dead letters: `emd dlq list`; one document: `emd status LOCALUID`; logs: {workdir / 'logs'}")
    say("metrics: each worker logs its /metrics address at start (see its log); "
        f"emulator control API: {env['EMD_EMULATOR_URL']}/_emulator/requests")

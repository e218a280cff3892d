"""Each stage of the pipeline alone: its CPU cost per document and so its ceiling (``emd bench``).

* **sign**: ``services.pipeline.signing.sign_document`` (checks, XSD, Schematron, the doctors' and the
  organisation's CAdES signatures) over the samples, in this process, one thread;
* **soap**: building and WS-Security-signing one registerDocument (``IpsSoapTransport.build``), one thread;
* **emulator**: the real ``emd emulator`` and ``emd callbacks`` as child processes on a broker of their own;
  signed registerDocument requests are POSTed over HTTP, and each is followed to its end (file pulled from
  the callback service, checked, result called back). Its figure is the emulator process's CPU per request;
* **broker**: aiokafka produce and consume of records the sizes of a document's events: one created event (the
  mean sample, inline) and three of a signed event's size (signed, sent, acknowledged carry it by reference).

A ceiling is documents per second on one core: 1000 / CPU ms per document (the CPU work of each stage holds
the GIL, so a process goes no faster whatever the machine has). Figures come from CPU time, not wall time,
so a busy machine does not move them much. For the broker a document is those four records, each produced
once and consumed once.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from lab.dev import procstat
from lab.dev.local_pipeline import LocalPipeline, as_new_document, participants, sample_documents
from producer import events

__all__ = ["Ceiling", "measure", "table"]

#: records after created per document, each about a signed event's size (signed, sent, acknowledged)
LATER_RECORDS_PER_DOCUMENT = 3


@dataclass(frozen=True)
class Ceiling:
    stage: str
    what: str
    cpu_ms_per_doc: float
    samples: int

    @property
    def docs_per_s(self) -> float:
        return 1000 / self.cpu_ms_per_doc if self.cpu_ms_per_doc > 0 else 0.0


def _timed(work: Callable[[int], None], seconds: float, *, least: int = 3) -> tuple[float, int]:
    """(CPU ms per call, calls) of ``work(i)`` run for ``seconds`` of wall time (at least ``least`` calls)."""
    n, cpu0, deadline = 0, time.process_time(), time.monotonic() + seconds
    while n < least or time.monotonic() < deadline:
        work(n)
        n += 1
    return (time.process_time() - cpu0) * 1000 / n, n


def _created(document: bytes) -> dict[str, Any]:
    from producer.client import build_created_data, read_document
    from services.documents.store import document_field

    data = build_created_data(
        read_document(document),
        system_id="emd-bench",
        document=document_field(document, None, inline_limit=len(document)),
    )
    return dict(data)


def _ips(config: Any, oid: str) -> Any:
    """The organisation's ИПС settings (``remd`` with its ``system`` credential): the bench signs as it."""
    remd = config.organization(oid).remd
    if remd is None or remd.system is None:
        raise SystemExit(f"emd bench: organisation {oid} has no ИПС settings (remd.system) in the dev config")
    return remd


def _cpu_seconds(pid: int) -> float:
    """The CPU seconds of the process tree rooted at ``pid``, which must still run."""
    usage = procstat.usage(pid)
    if usage is None:
        raise SystemExit(f"emd bench: process {pid} ended during the measurement")
    return usage.cpu_seconds


def measure(
    samples: Path, *, seconds: float, workdir: Path, say: Callable[[str], None] = print
) -> list[Ceiling]:
    """Every stage's ceiling (module docstring); ``seconds`` of measurement each, after a warm-up."""
    from lab.dev.config import write_dev_config
    from services.pipeline.organizations import load_organizations
    from services.pipeline.signing import sign_document
    from services.pipeline.submission import registration_from_event
    from services.remd._transports.ips import IpsSoapTransport
    from services.remd.transport import SubmitRequest

    templates = [d for _, d in sample_documents(samples, None)[0]]
    oids, snils = participants([("", d) for d in templates])
    config_file = write_dev_config(workdir / "config", oids=oids, doctors=snils)
    config = load_organizations(config_file)
    created = [_created(d) for d in templates]
    say(
        f"ceilings: warming up on the {len(templates)} samples (each kind's XSD and Schematron compiled once)"
    )
    signatures = [sign_document(c, d, config) for c, d in zip(created, templates, strict=True)]

    def sign(i: int) -> None:
        k = i % len(templates)
        sign_document(created[k], templates[k], config)

    out = [
        Ceiling("sign", "checks + doctors' and organisation's CAdES (sign_document)", *_timed(sign, seconds))
    ]
    say(f"  sign: {out[-1].cpu_ms_per_doc:.1f} ms CPU per document")

    transport = IpsSoapTransport()
    registrations = [
        registration_from_event({**c, "signatures": s}) for c, s in zip(created, signatures, strict=True)
    ]

    def build(i: int) -> None:
        k = i % len(templates)
        remd = _ips(config, created[k]["organizationOid"])
        transport.build(
            SubmitRequest(
                registration=registrations[k],
                message_id=f"urn:uuid:bench-{i}",
                endpoint=remd.endpoint,
                client_entity_id=remd.client_entity_id or "",
                reply_to=remd.callback_url or "",
                key=remd.system.signer(),
                certificate=remd.system.certificate,
            )
        )

    out.append(Ceiling("soap", "registerDocument built and WS-Security signed", *_timed(build, seconds)))
    say(f"  soap: {out[-1].cpu_ms_per_doc:.1f} ms CPU per document")
    out += _emulator_and_broker(templates, workdir=workdir, seconds=seconds, say=say)
    return out


def _emulator_and_broker(
    templates: list[bytes], *, workdir: Path, seconds: float, say: Callable[[str], None]
) -> list[Ceiling]:
    from lab.broker import LocalBroker
    from lab.dev.config import DEV_MIS_ID
    from producer.topology import ensure_topics
    from services.documents.store import FilesystemStore, by_reference, mark_signer_store
    from services.lifecycle import open_store
    from services.pipeline.organizations import load_organizations
    from services.pipeline.signing import sign_document
    from services.pipeline.submission import registration_from_event
    from services.remd import envelope
    from services.remd import names as n
    from services.remd._transports.ips import IpsSoapTransport
    from services.remd.transport import SubmitRequest

    out: list[Ceiling] = []
    with LocalBroker(log_path=workdir / "broker.log") as broker:
        ensure_topics(broker.bootstrap_servers, partitions=6, mis_ids=(DEV_MIS_ID,))
        lab = LocalPipeline(
            workdir=workdir / "run",
            bootstrap_servers=broker.bootstrap_servers,
            documents=[("", d) for d in templates],
            kafka_env=broker.client_env(),
            components=("emulator", "callbacks"),
            env={"EMD_LOG_LEVEL": "warning"},
        )
        # this process plays the signer: its store, marked before the callback service starts and looks for it
        documents = FilesystemStore(lab.data_dir / "documents")
        mark_signer_store(documents)
        signed_sizes = []
        with lab:
            config = load_organizations(lab.config_dir / "organizations.json")
            store = open_store(lab.data_dir)
            transport = IpsSoapTransport()
            count, warm = (
                max(5, int(seconds * 15)),
                5,
            )  # warm: each key's first use (tables, parsing) not counted
            bodies = []
            for i in range(warm + count):  # each request a fresh document (РЭМД registers a localUid once)
                document = as_new_document(templates[i % len(templates)])
                data = _created(document)
                signed = events.new_event(
                    events.SIGNED,
                    {
                        **data,
                        "misId": DEV_MIS_ID,
                        "document": by_reference(data["document"], document, documents),
                        "signatures": sign_document(data, document, config),
                    },
                    source="emd-bench",
                )
                signed_sizes.append(len(events.encode(signed)))
                store.register(
                    data["localUid"],
                    organization=data["organizationOid"],
                    kind=data["kind"],
                    signed_event=events.encode(signed),
                    document_ref=signed["data"]["document"]["ref"],
                )
                remd = _ips(config, data["organizationOid"])
                bodies.append(
                    transport.build(
                        SubmitRequest(
                            registration=registration_from_event(signed["data"]),
                            message_id=f"urn:uuid:{_uuid()}",
                            endpoint=lab.emulator_url + "/ips",
                            client_entity_id=remd.client_entity_id or "",
                            reply_to=lab.callback_url,
                            key=remd.system.signer(),
                            certificate=remd.system.certificate,
                        )
                    )
                )
            store.close()
            _wait_idle(lab)
            emulator = lab.supervisor.children["emulator"].process
            if emulator is None:
                raise SystemExit("emd bench: the emulator is not running")
            pid = emulator.pid

            def post(some: list[bytes], finished: int) -> None:
                with httpx.Client(timeout=60) as client, ThreadPoolExecutor(8) as pool:
                    answers = list(
                        pool.map(
                            lambda b: client.post(
                                lab.emulator_url + "/ips",
                                content=b,
                                headers=envelope.http_headers(
                                    transport.soap_version, action=n.ACTION_REGISTER_DOCUMENT
                                ),
                            ).status_code,
                            some,
                        )
                    )
                if any(a != 200 for a in answers):
                    raise SystemExit(
                        f"emd bench: the emulator refused {sum(a != 200 for a in answers)} requests; "
                        f"see {lab.supervisor.log_dir}"
                    )
                _wait_finished(lab, finished)

            post(bodies[:warm], warm)
            cpu0 = _cpu_seconds(pid)
            post(bodies[warm:], warm + count)
            cpu = _cpu_seconds(pid) - cpu0
        out.append(
            Ceiling(
                "emulator",
                "registerDocument + file pull + checks + callback (emulator process)",
                cpu * 1000 / count,
                count,
            )
        )
        say(f"  emulator: {out[-1].cpu_ms_per_doc:.1f} ms CPU per document")
        out.append(
            _broker(broker, templates, later_size=sum(signed_sizes) // len(signed_sizes), seconds=seconds)
        )
        say(f"  broker: {out[-1].cpu_ms_per_doc:.1f} ms CPU per document")
    return out


def _uuid() -> str:
    import uuid

    return str(uuid.uuid4())


def _wait_idle(lab: LocalPipeline, timeout: float = 60.0) -> None:
    """Until the emulator answers and the callback service listens (the emulator pulls files from it)."""
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            lab.emulator("health")
            socket.create_connection(("127.0.0.1", lab.callbacks_port), timeout=1).close()
            return
        except (httpx.HTTPError, ValueError, OSError):
            if lab.supervisor.dead():
                break
            time.sleep(0.2)
    raise SystemExit(
        f"emd bench: the emulator or the callback service did not start; see {lab.supervisor.log_dir}"
    )


def _wait_finished(lab: LocalPipeline, count: int, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = lab.emulator("requests", operation="registerDocument")
        done = [r for r in rows if r.get("finished_at")]
        if len(done) >= count:
            bad = [r for r in done if r.get("outcome") != "registered"]
            if bad:
                raise SystemExit(
                    f"emd bench: {len(bad)} emulator requests ended {bad[0].get('outcome')}: "
                    f"{json.dumps(bad[0], ensure_ascii=False)[:400]}"
                )
            return
        time.sleep(0.3)
    raise SystemExit("emd bench: the emulator did not finish its requests in time")


def _broker(broker: Any, templates: list[bytes], *, later_size: int, seconds: float) -> Ceiling:
    """Produce then consume records of a document's sizes (the mean created event; ``later_size`` for signed, sent
    and acknowledged); the broker's and the clients' CPU."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from producer.topology import Topic, ensure_topics

    created_size = int(sum(len(base64.b64encode(d)) for d in templates) / len(templates)) + 2048
    count = max(200, int(seconds * 200))
    topics = {
        size: Topic(f"emd.bench.records.{size}", "emd bench: the broker's ceiling", partitions=1)
        for size in (created_size, later_size)
    }
    ensure_topics(broker.bootstrap_servers, topics=tuple(topics.values()))

    async def go(topic: Topic, value: bytes) -> float:
        producer = AIOKafkaProducer(
            bootstrap_servers=broker.bootstrap_servers,
            acks="all",
            linger_ms=5,
            max_request_size=2 * 1024 * 1024,
        )
        await producer.start()
        try:
            futures = [
                await producer.send(topic.name, value=value, key=str(i).encode()) for i in range(count)
            ]
            await asyncio.gather(*futures)
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            topic.name,
            bootstrap_servers=broker.bootstrap_servers,
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            seen, deadline = 0, time.monotonic() + 120
            while seen < count and time.monotonic() < deadline:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    seen += len(records)
        finally:
            await consumer.stop()
        return seen

    def cpu_per_record(size: int) -> float:
        own0, broker0 = time.process_time(), _cpu_seconds(broker.process.pid)
        asyncio.run(go(topics[size], b"x" * size))
        return ((time.process_time() - own0) + _cpu_seconds(broker.process.pid) - broker0) / count

    total = cpu_per_record(created_size) + cpu_per_record(later_size) * LATER_RECORDS_PER_DOCUMENT
    return Ceiling(
        "broker",
        f"produce + consume, 1 record of {created_size // 1024} KB and "
        f"{LATER_RECORDS_PER_DOCUMENT} of {later_size // 1024} KB per document (broker + aiokafka clients)",
        total * 1000,
        count,
    )


def table(ceilings: list[Ceiling], *, e2e: float) -> str:
    rows = [
        "| stage alone | CPU ms per document | ceiling, documents/s on one core | measured over |",
        "|---|---|---|---|",
    ]
    for c in ceilings:
        rows.append(f"| {c.stage}: {c.what} | {c.cpu_ms_per_doc:.1f} | {c.docs_per_s:.0f} | {c.samples} |")
    slowest = min(ceilings, key=lambda c: c.docs_per_s)
    ratio = e2e / slowest.docs_per_s if slowest.docs_per_s else 0.0
    return "\n".join(rows) + (
        f"\n\nSlowest ceiling: {slowest.stage}, {slowest.docs_per_s:.0f} documents/s; "
        f"end to end {e2e:.1f} documents/s is **{ratio:.2f}×** of it "
        f"(stamped {dt.datetime.now(dt.UTC):%H:%M} UTC)."
    )

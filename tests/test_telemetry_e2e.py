"""The trace test: `emd demo` exports to an OTLP receiver started here, and each document is one trace.

The demo runs as a user runs it (its own broker, the emulator and every component as a process), with
``OTEL_EXPORTER_OTLP_ENDPOINT`` naming ``tests/otlp_receiver.py`` on loopback. While it runs, the workers'
``/metrics`` are scraped as Prometheus scrapes them (the OpenMetrics Accept header) for the exemplars of the
latency histogram. Then, for every document:

* its spans (every span naming its localUid) are in one trace, which the МИС library's ``publish`` span starts,
  and every other span of it has its parent in it;
* the parents lead from the status worker back through the callback service, the emulator, the sender and the
  signer to the МИС, in that order;
* the MessageID the sender used is the attribute of the SOAP call, of the emulator's span and of the callback;
* no attribute anywhere (span, resource, event) holds a СНИЛС, a name or a birth date of the samples.

And an exemplar's trace id is one of the documents' traces. What the test reads is the exported spans alone:
span names other than the ones below, topics, and spans added later are free to change.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

import pytest

from lab.dev.samples import REPOSITORY_SAMPLES
from producer import cda
from producer.xmlsafe import parse_xml
from tests.otlp_receiver import OtlpReceiver, ReceivedSpan

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = 3
#: the processes a document's trace crosses, from the МИС to the status worker
CHAIN = ["emd-mis", "emd-signer", "emd-sender", "emd-emulator", "emd-callbacks", "emd-status"]
OPENMETRICS = "application/openmetrics-text; version=1.0.0,text/plain;version=0.0.4;q=0.5"
_EXEMPLAR = re.compile(r'^emd_record_duration_seconds_bucket\{.*\} \S+ # \{[^}]*trace_id="([0-9a-f]{32})"')


def _personal_data() -> set[str]:
    """Every СНИЛС (as written and as digits), name and birth date of the samples a demo is made from."""
    found: set[str] = set()
    for path in REPOSITORY_SAMPLES.glob("*.xml"):
        meta = cda.extract(parse_xml(path.read_bytes()))
        people = [meta.patient, *meta.signers] if meta.patient else list(meta.signers)
        for person in people:
            for value in (person.snils, person.family, person.given, person.patronymic):
                if value:
                    found.add(str(value))
        if meta.patient is not None and meta.patient.birth_date is not None:
            found.add(meta.patient.birth_date.isoformat())
            found.add(meta.patient.birth_date.strftime("%Y%m%d"))
    return {v for v in found if len(v) >= 3}


class _Scraper(threading.Thread):
    """Scrapes every URL with the OpenMetrics Accept header until stopped; keeps the exemplars' trace ids."""

    def __init__(self, urls: list[str]) -> None:
        super().__init__(daemon=True)
        self.urls, self.trace_ids, self.scrapes = urls, set(), 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            for url in self.urls:
                try:
                    asked = urllib.request.Request(url, headers={"Accept": OPENMETRICS})
                    text = urllib.request.urlopen(asked, timeout=5).read().decode()
                except OSError:
                    continue  # not up yet, or already stopped
                self.scrapes += 1
                self.trace_ids.update(m.group(1) for m in map(_EXEMPLAR.match, text.splitlines()) if m)
            self.done.wait(0.2)


def _demo(receiver: OtlpReceiver, workdir: Path) -> tuple[subprocess.CompletedProcess[str], _Scraper]:
    """`emd demo` exporting to ``receiver``, its workers scraped while it runs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "EMD_", "OTEL_"))}
    env.update(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint, OTEL_BSP_SCHEDULE_DELAY="200")
    argv = [sys.executable, "-m", "services.cli", "demo", "--documents", str(DOCUMENTS)]
    argv += ["--samples", str(REPOSITORY_SAMPLES), "--workdir", str(workdir), "--timeout", "420"]
    proc = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    scraper: _Scraper | None = None
    err: list[str] = []

    def read_stderr() -> None:
        nonlocal scraper
        assert proc.stderr is not None
        for line in proc.stderr:
            err.append(line)
            if line.startswith("metrics: ") and scraper is None:
                scraper = _Scraper(re.findall(r"http://\S+/metrics", line))
                scraper.start()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    # stdout is read here and stderr by the reader alone: communicate() would read stderr too, and could take the
    # "metrics:" line from under the reader
    assert proc.stdout is not None
    out = proc.stdout.read()
    proc.wait(timeout=540)
    reader.join(30)
    assert scraper is not None, "".join(err)[-3000:]
    scraper.done.set()
    scraper.join(30)
    return subprocess.CompletedProcess(argv, proc.returncode, out, "".join(err)), scraper


def _traces(receiver: OtlpReceiver, want: int) -> dict[str, list[ReceivedSpan]]:
    """The spans by trace, once the МИС's spans and every process's spans have arrived (each flushes at exit)."""
    deadline = time.monotonic() + 60
    while True:
        spans = receiver.snapshot()
        services = {s.service for s in spans}
        roots = [s for s in spans if s.service == "emd-mis" and s.name.startswith("publish ")]
        if (len(roots) >= want and set(CHAIN) <= services) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    by_trace: dict[str, list[ReceivedSpan]] = defaultdict(list)
    for s in spans:
        by_trace[s.trace_id].append(s)
    return by_trace


def _path_to_root(span: ReceivedSpan, by_id: dict[str, ReceivedSpan]) -> list[str]:
    """The services from the root down to ``span``, each once where consecutive spans share it."""
    path = []
    while span is not None:
        if not path or path[-1] != span.service:
            path.append(span.service)
        span = by_id.get(span.parent_span_id)  # type: ignore[assignment]
    return path[::-1]


def test_a_demo_exports_one_trace_per_document_across_every_process(tmp_path):
    """Every document of an `emd demo` is one trace from the МИС through signer, sender, emulator and callbacks
    to the status worker, in parent order, with its localUid and MessageID and no personal data; the latency
    histogram's exemplars name those traces."""
    with OtlpReceiver() as receiver:
        done, scraper = _demo(receiver, tmp_path / "run")
        assert done.returncode == 0, done.stderr[-4000:]
        assert (
            done.stdout.splitlines()[-1]
            == f"acknowledged={DOCUMENTS} dead_lettered=0 unfinished=0 lost=0 duplicated=0"
        )
        traces = _traces(receiver, DOCUMENTS)

    starts = [
        s for ss in traces.values() for s in ss if s.service == "emd-mis" and s.name.startswith("publish ")
    ]
    uids = {s.attributes["emd.local_uid"] for s in starts}
    assert len(uids) == DOCUMENTS, starts
    for uid in uids:
        # one trace per document: every span that names it
        trace_ids = {
            s.trace_id for ss in traces.values() for s in ss if s.attributes.get("emd.local_uid") == uid
        }
        assert len(trace_ids) == 1, (uid, trace_ids)
        spans = traces[trace_ids.pop()]
        by_id = {s.span_id: s for s in spans}
        roots = [s for s in spans if s.parent_span_id not in by_id]
        assert [(r.service, r.name, r.parent_span_id) for r in roots] == [
            ("emd-mis", "publish emd.document.created.local-mis", "")
        ]
        assert set(CHAIN) <= {s.service for s in spans}
        # parent order: the status worker's handling of the callback descends from every process in turn
        paths = {tuple(_path_to_root(s, by_id)) for s in spans if s.service == "emd-status"}
        assert tuple(CHAIN) in paths, paths
        # the MessageID the sender used, on the SOAP call, the emulator's span and the callback
        (call,) = [s for s in spans if s.service == "emd-sender" and s.attributes.get("rpc.method")]
        message_id = call.attributes["emd.message_id"]
        assert call.attributes["emd.local_uid"] == uid
        for service in ("emd-emulator", "emd-callbacks", "emd-status"):
            assert any(
                s.attributes.get("emd.message_id") == message_id for s in spans if s.service == service
            )
        for service in ("emd-signer", "emd-sender", "emd-emulator", "emd-callbacks"):
            assert any(s.attributes.get("emd.local_uid") == uid for s in spans if s.service == service)

    # no personal data in anything exported
    personal = _personal_data()
    assert len(personal) > 10
    leaked = []
    for ss in traces.values():
        for s in ss:
            texts = [
                s.name,
                s.status_message,
                *map(str, s.attributes.values()),
                *map(str, s.resource.values()),
            ]
            texts += [str(v) for e in s.events for v in e.values()]
            leaked += [(s.service, s.name, value) for value in personal for text in texts if value in text]
    assert leaked == []

    # the exemplars scraped from the workers' /metrics name the documents' traces
    document_traces = {s.trace_id for s in starts}
    assert scraper.trace_ids, f"no exemplar in {scraper.scrapes} scrapes"
    assert scraper.trace_ids <= set(traces)
    assert scraper.trace_ids & document_traces

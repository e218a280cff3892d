"""Tracing (services/telemetry.py, services/messaging/tracing.py, producer/tracing.py): off unless the OTEL_*
variables ask, nothing done when off; when on, one trace per event across stages, the event's traceId as the
trace id, traceparent on every record produced, trace ids in the logs and as exemplars.

The stages run on the in-memory broker with an in-memory span exporter; the whole chain over the real broker,
HTTP and every process is tests/test_telemetry_e2e.py. What must hold in a fresh process (no SDK imported, the
МИС library without opentelemetry) runs in a subprocess.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import subprocess
import sys
import textwrap
import urllib.request
import uuid
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from producer.errors import ConfigurationError, PermanentError
from services import logs, metrics, telemetry
from services.messaging.app import App
from services.messaging.records import Output, Record
from services.messaging.runtime import Stage
from tests.runtime_kafka import MemoryKafka

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
OTHER = "0af7651916cd43dd8448eb211c80319c"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on in this process for one test, every span kept in memory; off again after it."""
    exporter = InMemorySpanExporter()
    assert telemetry.start("emd-test", instrument=(), exporter=exporter)
    try:
        yield exporter
    finally:
        telemetry.shutdown()


def _hex(n: int, width: int = 32) -> str:
    return format(n, f"0{width}x")


def _stage(kafka: MemoryKafka, name: str, source: str, target: str | None, dlt: str, handler=None) -> Stage:
    async def forward(record: Record) -> list[Output]:
        if target is None:
            return []
        headers = {k: v for k, v in record.headers.items() if k == "emd-trace-id"}
        return [Output(target, record.value, record.key, headers)]

    return Stage(
        name=kafka.stage_name(name),
        input_topic=source,
        handler=handler or forward,
        dead_letter_topic=dlt,
        settings=kafka.settings(),
        transport=kafka.transport,
    )


def _burst(*stages: Stage) -> None:
    app = App("t", stages[0].settings, stages, serve_metrics=False)
    asyncio.run(asyncio.wait_for(app.run(burst=True, signals=False), 60))


# ----------------------------------------------------------------------------------------------- the switch
def test_tracing_is_off_unless_the_otel_variables_ask_for_it():
    """No variable, OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none: off; an endpoint or an exporter: on."""
    assert telemetry.wanted({}) == ()
    assert telemetry.wanted({"OTEL_SERVICE_NAME": "emd-signer"}) == ()
    assert telemetry.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}) == ("otlp",)
    assert telemetry.wanted({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}) == ("otlp",)
    assert telemetry.wanted({"OTEL_TRACES_EXPORTER": "otlp,console"}) == ("otlp", "console")
    assert telemetry.wanted({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}) == ()
    assert telemetry.wanted({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}) == ()


def test_variables_this_build_cannot_follow_are_a_configuration_error():
    """An exporter it does not have, or OTLP over gRPC, stops the process at start with what to do."""
    with pytest.raises(ConfigurationError, match="jaeger is not an exporter"):
        telemetry.wanted({"OTEL_TRACES_EXPORTER": "jaeger"})
    with pytest.raises(ConfigurationError, match="http/protobuf"):
        telemetry.wanted({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})


def test_tracing_off_loads_no_sdk_and_leaves_every_record_as_it_was(tmp_path):
    """Off (no OTEL_* variable), two stages run on the memory broker: no SDK module is imported, no exporter
    thread runs, and the records carry no traceparent."""
    script = textwrap.dedent(
        f"""
        import asyncio, json, sys, threading
        from pathlib import Path
        from services import telemetry
        from services.messaging.app import App
        from services.messaging.records import Output
        from services.messaging.runtime import Stage
        from tests.runtime_kafka import MemoryKafka

        assert not telemetry.start("emd-test")
        kafka = MemoryKafka(Path({str(tmp_path)!r}))
        names = kafka.topics("in", "mid", "out", "dlt")
        kafka.send(names["in"], [("doc-1", {{"n": 1}})], headers=[("emd-trace-id", b"{TRACE}")])

        def stage(name, source, target):
            async def handle(record):
                return [Output(target, record.value, record.key, dict(record.headers))]
            return Stage(name=kafka.stage_name(name), input_topic=source, handler=handle,
                         dead_letter_topic=names["dlt"], settings=kafka.settings(), transport=kafka.transport)

        stages = [stage("a", names["in"], names["mid"]), stage("b", names["mid"], names["out"])]
        asyncio.run(App("t", stages[0].settings, stages, serve_metrics=False).run(burst=True, signals=False))
        print(json.dumps({{
            "headers": sorted(kafka.read(names["out"])[0].headers),
            "sdk": sorted(m for m in sys.modules if m.startswith("opentelemetry.sdk")),
            "threads": sorted(t.name for t in threading.enumerate()),
        }}))
        """
    )
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.splitlines()[-1])
    assert seen["headers"] == ["emd-trace-id"]
    assert seen["sdk"] == []
    assert not any("Otel" in t or "BatchSpan" in t for t in seen["threads"]), seen["threads"]


# ----------------------------------------------------------------------------------------------- the runtime
def test_a_record_without_traceparent_starts_its_events_trace_and_the_next_stage_continues_it(
    spans, tmp_path
):
    """A record with only emd-trace-id: the first stage's span is the root of that trace; its output carries the
    span's traceparent, and the next stage's span is its child, in the same trace."""
    kafka = MemoryKafka(tmp_path)
    names = kafka.topics("in", "mid", "out", "dlt")
    kafka.send(names["in"], [("doc-1", {"n": 1})], headers=[("emd-trace-id", TRACE.encode())])
    _burst(
        _stage(kafka, "a", names["in"], names["mid"], names["dlt"]),
        _stage(kafka, "b", names["mid"], names["out"], names["dlt"]),
    )
    first, second = sorted(spans.get_finished_spans(), key=lambda s: s.start_time)
    assert _hex(first.context.trace_id) == TRACE and first.parent is None
    assert first.name == f"process {names['in']}"
    assert first.attributes["emd.local_uid"] == "doc-1" and first.attributes["emd.outcome"] == "ok"
    assert _hex(second.context.trace_id) == TRACE
    assert second.parent is not None and second.parent.span_id == first.context.span_id
    out = kafka.read(names["out"])[0]
    assert out.header("traceparent") == f"00-{TRACE}-{_hex(second.context.span_id, 16)}-01"


def test_a_traceparent_of_another_trace_than_the_events_becomes_a_link(spans, tmp_path):
    """A record whose traceparent names another trace than its emd-trace-id: the span is the root of the event's
    trace, linked to the foreign span."""
    kafka = MemoryKafka(tmp_path)
    names = kafka.topics("in", "dlt")
    foreign = f"00-{OTHER}-00f067aa0ba902b7-01"
    kafka.send(
        names["in"],
        [("doc-2", {"n": 1})],
        headers=[("emd-trace-id", TRACE.encode()), ("traceparent", foreign.encode())],
    )
    _burst(_stage(kafka, "a", names["in"], None, names["dlt"]))
    (span,) = spans.get_finished_spans()
    assert _hex(span.context.trace_id) == TRACE and span.parent is None
    assert [(_hex(link.context.trace_id), _hex(link.context.span_id, 16)) for link in span.links] == [
        (OTHER, "00f067aa0ba902b7")
    ]


def test_an_output_of_another_trace_gets_a_publish_span_in_the_events_trace(spans, tmp_path):
    """A handler producing an event of another trace (a callback answered for its document): the output's
    traceparent is a publish span of the event's trace, linked to the handling span."""
    kafka = MemoryKafka(tmp_path)
    names = kafka.topics("in", "out", "dlt")
    kafka.send(names["in"], [("message-id", b"<callback/>")])

    async def answer(record: Record) -> list[Output]:
        return [Output(names["out"], b"{}", "doc-3", {"emd-trace-id": TRACE})]

    _burst(_stage(kafka, "cb", names["in"], None, names["dlt"], handler=answer))
    by_name = {s.name: s for s in spans.get_finished_spans()}
    handling, publish = by_name[f"process {names['in']}"], by_name[f"publish {names['out']}"]
    assert _hex(publish.context.trace_id) == TRACE and publish.parent is None
    assert [link.context.span_id for link in publish.links] == [handling.context.span_id]
    out = kafka.read(names["out"])[0]
    assert out.header("traceparent") == f"00-{TRACE}-{_hex(publish.context.span_id, 16)}-01"


def test_a_dead_lettered_record_span_names_its_reason_as_an_error(spans, tmp_path):
    """A PermanentError: the span's outcome is dead_letter with the reason code, and its status is an error;
    the dead letter carries the span's traceparent."""
    kafka = MemoryKafka(tmp_path)
    names = kafka.topics("in", "dlt")
    kafka.send(names["in"], [("doc-4", {"n": 1})], headers=[("emd-trace-id", TRACE.encode())])

    async def refuse(record: Record) -> list[Output]:
        raise PermanentError("not valid", reason="XSD_INVALID")

    _burst(_stage(kafka, "a", names["in"], None, names["dlt"], handler=refuse))
    (span,) = spans.get_finished_spans()
    assert span.attributes["emd.outcome"] == "dead_letter" and span.attributes["emd.reason"] == "XSD_INVALID"
    assert span.status.status_code.name == "ERROR"
    (dead,) = kafka.read(names["dlt"])
    assert dead.header("traceparent") == f"00-{TRACE}-{_hex(span.context.span_id, 16)}-01"


def test_only_the_attributes_named_in_telemetry_reach_a_span(spans):
    """Personal data offered as an attribute (a СНИЛС, a name) is dropped: only ATTRIBUTES' keys are set."""
    with telemetry.span("x", attributes={"emd.local_uid": "doc-5", "snils": "112-233-445 95"}):
        telemetry.annotate(family="Иванов", message_id="m-1", birth_date="1980-01-01")
    (span,) = spans.get_finished_spans()
    assert dict(span.attributes) == {"emd.local_uid": "doc-5", "emd.message_id": "m-1"}


# ----------------------------------------------------------------------------------------------- logs, metrics
def test_every_json_line_logged_inside_a_span_carries_its_trace_and_span_ids(spans):
    """structlog lines and the МИС library's stdlib lines alike: the span's trace_id and span_id in JSON; a
    line outside any span carries neither."""
    out = io.StringIO()
    logs.configure(fmt="json", level="info", stream=out)
    log = logs.get_logger("services.test")
    with telemetry.span("x") as span:
        log.info("inside", local_uid="doc-6")
        logging.getLogger("producer.client").info("document published", extra={"kind": "119"})
    log.info("outside")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    ids = {"trace_id": _hex(span.context.trace_id), "span_id": _hex(span.context.span_id, 16)}
    assert {k: lines[0][k] for k in ids} == ids and lines[0]["event"] == "inside"
    assert {k: lines[1][k] for k in ids} == ids
    assert lines[1]["event"] == "document published" and lines[1]["component"] == "producer.client"
    assert lines[1]["kind"] == "119" and lines[1]["level"] == "info"
    assert "trace_id" not in lines[2] and "span_id" not in lines[2]


def test_the_duration_histogram_has_the_span_as_exemplar_in_openmetrics_only(spans, tmp_path):
    """/metrics asked for OpenMetrics (as Prometheus asks) shows the handling span's trace id as the
    exemplar of emd_record_duration_seconds; the classic text format has no exemplar."""
    kafka = MemoryKafka(tmp_path)
    names = kafka.topics("in", "dlt")
    kafka.send(names["in"], [("doc-7", {"n": 1})], headers=[("emd-trace-id", OTHER.encode())])
    stage = _stage(kafka, "ex", names["in"], None, names["dlt"])
    _burst(stage)
    server = metrics.MetricsServer().start()
    try:
        asked = urllib.request.Request(server.url, headers={"Accept": "application/openmetrics-text"})
        openmetrics = urllib.request.urlopen(asked, timeout=10).read().decode()
        classic = urllib.request.urlopen(server.url, timeout=10).read().decode()
    finally:
        server.stop()
    (span,) = spans.get_finished_spans()
    lines = [
        line
        for line in openmetrics.splitlines()
        if line.startswith("emd_record_duration_seconds_bucket")
        and f'stage="{stage.name}"' in line
        and " # {" in line
    ]
    assert lines and all(f'trace_id="{OTHER}"' in line for line in lines), openmetrics[-2000:]
    assert f'span_id="{_hex(span.context.span_id, 16)}"' in lines[0]
    assert "trace_id=" not in classic


# ----------------------------------------------------------------------------------------------- the МИС library
_FAKE_KAFKA = """
import kafka, types
sent = []
class FakeProducer:
    def __init__(self, **config): pass
    def send(self, topic, key, value, headers):
        sent.append(dict(headers))
        meta = types.SimpleNamespace(topic=topic, partition=0, offset=len(sent) - 1)
        return types.SimpleNamespace(get=lambda timeout: meta)
    def flush(self, timeout=None): pass
    def close(self, timeout=None): pass
kafka.KafkaProducer = FakeProducer
from lab.dev.local_pipeline import sample_documents
from lab.dev.samples import REPOSITORY_SAMPLES
from producer.client import DocumentPublisher
(_, document), = sample_documents(REPOSITORY_SAMPLES, 1)[0]
"""


def _run(script: str) -> dict:
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_the_mis_library_publishes_as_before_without_opentelemetry():
    """With opentelemetry not importable (emd-producer without its otel extra), a document is published, its
    record carries the pipeline's headers and no traceparent."""
    script = (
        "import sys\nsys.modules['opentelemetry'] = None\n"
        + _FAKE_KAFKA
        + textwrap.dedent(
            """
        import json
        from producer import tracing
        with DocumentPublisher("unused:9092", mis_id="clinic-a") as publisher:
            published = publisher.publish(document)
        print(json.dumps({"available": tracing.available(), "headers": sorted(sent[0]), "uid": published.local_uid}))
        """
        )
    )
    seen = _run(script)
    assert seen["available"] is False
    assert seen["headers"] == ["emd-event-type", "emd-schema-version", "emd-trace-id"]


def test_the_mis_library_with_the_api_and_no_sdk_sends_no_traceparent():
    """opentelemetry-api installed but no SDK configured by the МИС: nothing to record, so no span and no
    traceparent; inside a context the МИС propagates, its traceparent is passed on with the event's trace id."""
    script = (
        _FAKE_KAFKA
        + f"OTHER = {OTHER!r}\n"
        + textwrap.dedent(
            """
        import json
        from opentelemetry import context, propagate
        with DocumentPublisher("unused:9092", mis_id="clinic-a") as publisher:
            publisher.publish(document)
            parent = propagate.extract({"traceparent": f"00-{OTHER}-00f067aa0ba902b7-01"})
            token = context.attach(parent)
            publisher.publish(document)
            context.detach(token)
        print(json.dumps([{k: v.decode() for k, v in h.items()} for h in sent]))
        """
        )
    )
    alone, propagated = _run(script)
    assert "traceparent" not in alone
    assert propagated["emd-trace-id"] == OTHER
    assert propagated["traceparent"] == f"00-{OTHER}-00f067aa0ba902b7-01"


def test_the_mis_library_starts_the_trace_whose_id_the_event_carries():
    """With the МИС's SDK configured: publish is a span (a root, or a child of the МИС's own), the event's traceId
    is its trace id, and the record's traceparent names it; a caller's trace id of another trace gets none."""
    script = (
        _FAKE_KAFKA
        + f"OTHER = {OTHER!r}\n"
        + textwrap.dedent(
            """
        import json
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        with DocumentPublisher("unused:9092", mis_id="clinic-a") as publisher:
            with trace.get_tracer("mis").start_as_current_span("mis request") as request:
                publisher.publish(document)
            publisher.publish(document, trace_id=OTHER)
        spans = {s.name: s for s in exporter.get_finished_spans()}
        publish = spans["publish emd.document.created.clinic-a"]
        print(json.dumps({
            "trace": format(publish.context.trace_id, "032x"),
            "span": format(publish.context.span_id, "016x"),
            "parent": format(publish.parent.span_id, "016x"),
            "request": format(request.get_span_context().span_id, "016x"),
            "uid": publish.attributes["emd.local_uid"],
            "headers": [{k: v.decode() for k, v in h.items()} for h in sent],
        }))
        """
        )
    )
    seen = _run(script)
    first, second = seen["headers"]
    assert first["emd-trace-id"] == seen["trace"]
    version, trace_id, span_id, flags = first["traceparent"].split("-")
    assert (version, trace_id, span_id) == ("00", seen["trace"], seen["span"]) and int(
        flags, 16
    ) & 1  # sampled
    assert seen["parent"] == seen["request"] and seen["uid"]
    assert second["emd-trace-id"] == OTHER and "traceparent" not in second


def test_the_producer_distribution_needs_only_the_opentelemetry_api_and_only_as_an_extra():
    """producer/pyproject.toml: no opentelemetry in the dependencies; the otel extra is the API alone."""
    import tomllib

    project = tomllib.loads((ROOT / "producer" / "pyproject.toml").read_text())["project"]
    assert not any("opentelemetry" in d for d in project["dependencies"])
    assert [d.split(">")[0] for d in project["optional-dependencies"]["otel"]] == ["opentelemetry-api"]
    imported = (ROOT / "producer" / "tracing.py").read_text()
    assert "opentelemetry.sdk" not in imported


def test_trace_ids_that_are_not_w3c_are_not_pinned():
    """An emd-trace-id that is not 32 lower-case hex digits, or all zeros, starts a fresh trace."""
    assert telemetry._event_trace("0" * 32) is None
    assert telemetry._event_trace("XYZ") is None
    assert telemetry._event_trace(None) is None
    assert telemetry._event_trace(TRACE) == int(TRACE, 16)
    assert uuid.UUID(TRACE).hex == TRACE

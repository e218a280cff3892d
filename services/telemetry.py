"""OpenTelemetry tracing: one trace per document, across every process, off unless asked for.

**Off by default, and free when off.** Tracing is on in a process only when the standard variables ask for it
(``wanted``): ``OTEL_TRACES_EXPORTER`` names an exporter (``otlp``, ``console``), or, with it unset, an OTLP
endpoint is given (``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``); never with
``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none``. (The OpenTelemetry default exporter is ``otlp``: a
pipeline that exported to a collector nobody runs would spend CPU on every record for nothing.) When it is off,
this module never imports the SDK: no provider, no exporter thread, no span objects; every hook below returns at
its first line, and ``emd bench`` measures that (docs/benchmarks.md).

When it is on, ``start(service)`` installs the SDK's ``TracerProvider`` (sampler, batch processor and OTLP
exporter all configured by their own ``OTEL_*`` variables) and the maintained instrumentations of httpx (the
SOAP calls, the emulator's callbacks) and aiohttp's server (the callback service), which carry W3C
``traceparent`` in HTTP headers. Kafka records carry it too, stamped and read at the runtime's seam
(``services.messaging.tracing``), so every client behind the seam carries it alike.

**The event's ``traceId`` is the trace id.** A span started from a record without ``traceparent``, or whose
``traceparent`` names another trace than the event's ``emd-trace-id``, is the root of the event's own trace (the
id generator takes the event's id; the foreign context becomes a link); an output whose event belongs to another
trace than the span producing it gets a ``publish`` span of its own in the event's trace.

**No personal data in spans.** Our spans carry only the attributes named in ``ATTRIBUTES`` (localUid, MessageID,
stage, outcome, reason codes), anything else is dropped; ``tests/test_telemetry_e2e.py`` checks every exported
attribute of a whole run against the documents' СНИЛС, names and birth dates.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from producer.errors import ConfigurationError

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

__all__ = [
    "ATTRIBUTES",
    "LOCAL_UID",
    "MESSAGE_ID",
    "annotate",
    "capture",
    "consumer_span",
    "current_ids",
    "enabled",
    "exemplar",
    "publish_traceparent",
    "resumed",
    "server_span",
    "set_outcome",
    "shutdown",
    "span",
    "start",
    "traceparent",
    "wanted",
]

log = logging.getLogger(__name__)

#: the span attributes our code sets; any other key given to ``span``/``annotate`` is dropped
LOCAL_UID = "emd.local_uid"
MESSAGE_ID = "emd.message_id"
ATTRIBUTES = frozenset(
    {
        LOCAL_UID,
        MESSAGE_ID,
        "emd.stage",
        "emd.outcome",
        "emd.reason",
        "emd.remd_code",
        "emd.transport",
        "emd.operation",
        "emd.store",
        "emd.size",
        "emd.callback_kind",
        "messaging.system",
        "messaging.operation.type",
        "messaging.destination.name",
        "messaging.destination.partition.id",
        "messaging.consumer.group.name",
        "messaging.kafka.offset",
        "rpc.system",
        "rpc.method",
        "server.address",
        "http.response.status_code",
    }
)
#: what ``start`` instruments unless told otherwise
INSTRUMENTATIONS = ("httpx", "aiohttp-server")
#: the exporters OTEL_TRACES_EXPORTER may name (a comma-separated list)
EXPORTERS = ("otlp", "console")

_TRACEPARENT = "traceparent"
_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
_NULL: contextlib.nullcontext[None] = contextlib.nullcontext()


@dataclass
class _Tracing:
    provider: TracerProvider
    tracer: Tracer
    service: str


#: set by ``start`` when tracing is on; every hook tests it first
_state: _Tracing | None = None
#: the trace id the next root span takes (the event's ``traceId``), read by the id generator
_PINNED: ContextVar[int | None] = ContextVar("emd_pinned_trace_id", default=None)


# ----------------------------------------------------------------------------------------------- set-up
def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() == "true"


def wanted(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The exporters the ``OTEL_*`` variables ask for; empty: tracing stays off (see the module docstring)."""
    env = os.environ if environ is None else environ
    if _truthy(env.get("OTEL_SDK_DISABLED")):
        return ()
    names = [n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "").split(",") if n.strip()]
    if not names:
        endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        return ("otlp",) if endpoint else ()
    if "none" in names:
        return ()
    unknown = [n for n in names if n not in EXPORTERS]
    if unknown:
        raise ConfigurationError(
            f"OTEL_TRACES_EXPORTER={','.join(names)}: {unknown[0]} is not an exporter this build has "
            f"({', '.join(EXPORTERS)} or none)"
        )
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
    if "otlp" in names and protocol and protocol != "http/protobuf":
        raise ConfigurationError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol}: this build exports OTLP over HTTP (http/protobuf) only; "
            "point OTEL_EXPORTER_OTLP_ENDPOINT at the collector's HTTP port (4318)"
        )
    return tuple(dict.fromkeys(names))


def enabled() -> bool:
    """Whether this process traces (``start`` found the variables asking for it)."""
    return _state is not None


def start(
    service: str,
    *,
    instrument: Sequence[str] = INSTRUMENTATIONS,
    environ: Mapping[str, str] | None = None,
    exporter: Any = None,
) -> bool:
    """Turn tracing on for this process when the ``OTEL_*`` variables ask for it; whether it is on.

    ``service`` is the ``service.name`` unless ``OTEL_SERVICE_NAME`` (or ``OTEL_RESOURCE_ATTRIBUTES``) names one.
    ``instrument``: which of ``INSTRUMENTATIONS`` to turn on. Once per process: a second call changes nothing
    (``shutdown`` first). ``exporter``: tests pass an in-memory one, which gets every span as it ends, whatever
    the variables say; the provider is then not made the process's global one.
    Raises ``ConfigurationError`` for variables that name what this build cannot do.
    """
    global _state
    exporters = ("test",) if exporter is not None else wanted(environ)
    if _state is not None or not exporters:
        return _state is not None
    from opentelemetry import trace
    from opentelemetry.sdk.resources import OTELResourceDetector, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    resource = Resource.create(
        {
            "service.name": service,
            "service.namespace": "emd-pipeline",
            **OTELResourceDetector().detect().attributes,
        }
    )
    provider = TracerProvider(resource=resource, id_generator=_event_trace_ids())
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        for name in exporters:
            provider.add_span_processor(BatchSpanProcessor(_exporter(name)))
        trace.set_tracer_provider(provider)
    _state = _Tracing(provider=provider, tracer=provider.get_tracer("emd-pipeline"), service=service)
    _instrument(instrument, provider)
    return True


def _exporter(name: str) -> Any:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return (
        OTLPSpanExporter()
    )  # endpoint, headers, timeout, compression: its own OTEL_EXPORTER_OTLP_* variables


def _instrument(names: Sequence[str], provider: TracerProvider) -> None:
    for name in names:
        if name == "httpx":
            from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

            HTTPXClientInstrumentor().instrument(tracer_provider=provider)
        elif name == "aiohttp-server":
            from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor

            AioHttpServerInstrumentor().instrument(tracer_provider=provider)
        else:
            raise ValueError(f"unknown instrumentation {name!r} (known: {', '.join(INSTRUMENTATIONS)})")


def _event_trace_ids() -> Any:
    """The SDK's random ids, except that a root span started by ``_root`` takes the event's trace id."""
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    class EventTraceIds(RandomIdGenerator):
        def generate_trace_id(self) -> int:
            pinned = _PINNED.get()
            return pinned if pinned is not None else super().generate_trace_id()

        def is_trace_id_random(self) -> bool:
            return False  # an event's traceId need not be (a UUID4's is not wholly): no W3C "random" flag

    return EventTraceIds()


def shutdown() -> None:
    """Export what is buffered and stop (the provider also does it at interpreter exit)."""
    global _state
    if _state is not None:
        _state.provider.shutdown()
        _state = None


# ----------------------------------------------------------------------------------------------- spans
def _attributes(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (attributes or {}).items() if k in ATTRIBUTES and v is not None and v != ""}


def _kind(kind: str) -> Any:
    from opentelemetry.trace import SpanKind

    return {
        "internal": SpanKind.INTERNAL,
        "server": SpanKind.SERVER,
        "client": SpanKind.CLIENT,
        "producer": SpanKind.PRODUCER,
        "consumer": SpanKind.CONSUMER,
    }[kind]


def span(
    name: str, *, kind: str = "internal", attributes: Mapping[str, Any] | None = None
) -> contextlib.AbstractContextManager[Span | None]:
    """A span, current while the block runs, child of the current one (``None`` when tracing is off)."""
    if _state is None:
        return _NULL
    return _state.tracer.start_as_current_span(name, kind=_kind(kind), attributes=_attributes(attributes))


def _event_trace(trace_id: str | None) -> int | None:
    return int(trace_id, 16) if trace_id and _TRACE_ID.match(trace_id) and int(trace_id, 16) else None


@contextlib.contextmanager
def _rooted(
    state: _Tracing,
    name: str,
    *,
    parent: Context | None,
    trace_id: int | None,
    kind: str,
    attributes: Mapping[str, Any] | None,
) -> Iterator[Span]:
    """A current span: child of ``parent`` when that is in trace ``trace_id`` (or no trace is asked for); else
    the root of trace ``trace_id`` (a fresh one when None), linked to ``parent``."""
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.trace import Link

    parent_span = trace.get_current_span(parent) if parent is not None else None
    found = parent_span.get_span_context() if parent_span is not None else None
    links = []
    if found is not None and found.is_valid and (trace_id is None or found.trace_id == trace_id):
        start_in = parent
    else:
        start_in = otel_context.Context()  # a root
        if found is not None and found.is_valid:
            links.append(Link(found))
    token = _PINNED.set(trace_id)
    try:
        new = state.tracer.start_span(
            name, context=start_in, kind=_kind(kind), attributes=_attributes(attributes), links=links
        )
    finally:
        _PINNED.reset(token)
    with trace.use_span(new, end_on_exit=True):
        yield new


def consumer_span(
    name: str,
    *,
    traceparent: str | None,
    trace_id: str | None,
    attributes: Mapping[str, Any] | None = None,
) -> contextlib.AbstractContextManager[Span | None]:
    """The span of one consumed record: child of its ``traceparent`` when that is in the event's trace
    (``trace_id``, the ``emd-trace-id`` header), else the root of the event's trace."""
    if _state is None:
        return _NULL
    parent = _extract({_TRACEPARENT: traceparent}) if traceparent else None
    return _rooted(
        _state, name, parent=parent, trace_id=_event_trace(trace_id), kind="consumer", attributes=attributes
    )


def server_span(
    name: str, *, headers: Any, attributes: Mapping[str, Any] | None = None
) -> contextlib.AbstractContextManager[Span | None]:
    """The span of one HTTP request served without an instrumentation (the emulator): child of its
    ``traceparent``. ``headers``: anything with ``items()`` (a mapping, ``http.server``'s message)."""
    if _state is None:
        return _NULL
    parent = _extract({k.lower(): v for k, v in headers.items() if k.lower() == _TRACEPARENT})
    return _rooted(_state, name, parent=parent, trace_id=None, kind="server", attributes=attributes)


def _extract(carrier: Mapping[str, str]) -> Context:
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator().extract(dict(carrier))


def capture() -> Context | None:
    """The current context, to continue in another thread (``resumed``); None when tracing is off."""
    if _state is None:
        return None
    from opentelemetry import context as otel_context

    return otel_context.get_current()


def resumed(
    captured: Context | None, name: str, *, attributes: Mapping[str, Any] | None = None
) -> contextlib.AbstractContextManager[Span | None]:
    """A span, child of a ``capture``\\ d context (work handed to another thread)."""
    if _state is None or captured is None:
        return _NULL
    return _state.tracer.start_as_current_span(name, context=captured, attributes=_attributes(attributes))


def annotate(**attributes: Any) -> None:
    """Set attributes on the current span: keyword ``local_uid`` means ``emd.local_uid``, and so on."""
    if _state is None:
        return
    from opentelemetry import trace

    current = trace.get_current_span()
    if current.is_recording():
        current.set_attributes(_attributes({f"emd.{k}": v for k, v in attributes.items()}))


def set_outcome(
    target: Span | None, outcome: str | None, *, reason: str | None = None, name: str | None = None
) -> None:
    """What a span's work came to (``ok``, ``retry``, ``dead_letter``…; anything but ``ok`` is an error), and its
    name once the work knows it (``callback getDocumentFile``)."""
    if target is None or not target.is_recording():
        return
    from opentelemetry.trace import Status, StatusCode

    if name:
        target.update_name(name)
    target.set_attributes(_attributes({"emd.outcome": outcome, "emd.reason": reason}))
    if outcome not in ("ok", None):
        target.set_status(Status(StatusCode.ERROR, reason or outcome))


# ----------------------------------------------------------------------------------------------- propagation
def traceparent() -> str | None:
    """The current span as a W3C ``traceparent`` value (None: no span, or tracing off)."""
    if _state is None:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return carrier.get(_TRACEPARENT)


def publish_traceparent(event_trace_id: str | None, *, topic: str) -> str | None:
    """The ``traceparent`` of an output carrying an event of trace ``event_trace_id``: the current span when it is
    in that trace (or the output carries no event), else a ``publish`` span of the event's own trace, linked to
    the current span. None when tracing is off."""
    if _state is None:
        return None
    from opentelemetry import context as otel_context
    from opentelemetry import trace

    wanted_id = _event_trace(event_trace_id)
    current = trace.get_current_span().get_span_context()
    if current.is_valid and (wanted_id is None or current.trace_id == wanted_id):
        return traceparent()
    if wanted_id is None:
        return None
    attributes = {"messaging.system": "kafka", "messaging.destination.name": topic}
    with _rooted(
        _state,
        f"publish {topic}",
        parent=otel_context.get_current() if current.is_valid else None,
        trace_id=wanted_id,
        kind="producer",
        attributes={**attributes, "messaging.operation.type": "send"},
    ):
        return traceparent()


# ----------------------------------------------------------------------------------------------- logs, metrics
def current_ids() -> tuple[str, str] | None:
    """(trace_id, span_id) of the current span, in hex; None without one (or with tracing off)."""
    if _state is None:
        return None
    from opentelemetry import trace

    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


def exemplar() -> dict[str, str] | None:
    """The exemplar labels of an observation made inside a sampled span (OpenMetrics exposition only)."""
    if _state is None:
        return None
    from opentelemetry import trace

    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid or not ctx.trace_flags.sampled:
        return None
    return {"trace_id": format(ctx.trace_id, "032x"), "span_id": format(ctx.span_id, "016x")}

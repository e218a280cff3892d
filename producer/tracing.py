"""Where a document's trace starts: the МИС library's ``publish`` span and the record's W3C ``traceparent``.

Optional: it needs only ``opentelemetry-api`` (``pip install 'emd-producer[otel]'``), and without it every
function here does nothing, at the cost of one ``None`` test. With it, the span belongs to whatever tracer
provider the МИС configured (its SDK, its exporter); with the API alone and no SDK, nothing is recorded and
nothing is sent, as OpenTelemetry's API promises.

The event's ``traceId`` is the trace's id: ``publish`` starts its span first (a child of the МИС's current span,
or a new trace) and the event takes that span's trace id, so the pipeline's spans, which continue from the
record's ``traceparent``, are in the same trace as the МИС's own request. An event built with a ``trace_id`` of the
caller's that is not the current trace gets no ``traceparent``: the pipeline then starts the trace from the
event's ``traceId`` itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

try:
    from opentelemetry import trace as _trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # the optional extra is not installed: no tracing, nothing else changes
    _TRACER: Tracer | None = None
else:
    _TRACER = _trace.get_tracer("emd-producer")

__all__ = ["TRACEPARENT", "Publishing", "available", "publishing", "step", "traceparent_for"]

TRACEPARENT = "traceparent"
#: the span attributes the МИС library sets (never a СНИЛС, a name or a birth date)
LOCAL_UID = "emd.local_uid"


def available() -> bool:
    """Whether ``opentelemetry-api`` is installed (the ``otel`` extra)."""
    return _TRACER is not None


@dataclass
class Publishing:
    """The ``publish`` span of one document, as ``publishing`` yields it."""

    #: the trace id the event is to carry (None: the event makes a new one)
    trace_id: str | None
    span: Span | None = None

    def document(self, local_uid: str) -> None:
        """Name the document the span is about, once it is known."""
        if self.span is not None and self.span.is_recording():
            self.span.set_attribute(LOCAL_UID, local_uid)


@contextlib.contextmanager
def publishing(topic: str, trace_id: str | None = None) -> Iterator[Publishing]:
    """The span of publishing one document to ``topic``, current while the block runs.

    ``trace_id``: the caller's (``publish(trace_id=…)``); when it is not the current trace, no span is made.
    """
    if _TRACER is None:
        yield Publishing(trace_id)
        return
    current = _trace.get_current_span().get_span_context()
    if trace_id is not None and not (current.is_valid and format(current.trace_id, "032x") == trace_id):
        yield Publishing(trace_id)
        return
    if not current.is_valid and isinstance(
        _trace.get_tracer_provider(), (_trace.ProxyTracerProvider, _trace.NoOpTracerProvider)
    ):  # the API without an SDK, and no context to pass on: a span would be nothing, so make none
        yield Publishing(trace_id)
        return
    with _TRACER.start_as_current_span(
        f"publish {topic}",
        kind=_trace.SpanKind.PRODUCER,
        attributes={
            "messaging.system": "kafka",
            "messaging.operation.type": "send",
            "messaging.destination.name": topic,
        },
    ) as span:
        ctx = span.get_span_context()
        yield Publishing(format(ctx.trace_id, "032x") if ctx.is_valid else trace_id, span)


def traceparent_for(event_trace_id: str) -> list[tuple[str, bytes]]:
    """The record header carrying the current span, when the span is in the event's trace; else none."""
    if _TRACER is None:
        return []
    current = _trace.get_current_span().get_span_context()
    if not current.is_valid or format(current.trace_id, "032x") != event_trace_id:
        return []
    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    value = carrier.get(TRACEPARENT)
    return [(TRACEPARENT, value.encode())] if value else []


def step(name: str) -> contextlib.AbstractContextManager[object]:
    """A child span of the current one for one step of publishing (``claimcheck put``); nothing outside a
    ``publishing`` span or without the API."""
    if _TRACER is None or not _trace.get_current_span().is_recording():
        return contextlib.nullcontext()
    return _TRACER.start_as_current_span(name, kind=_trace.SpanKind.CLIENT)

"""The runtime's two tracing hooks: a span per record handled, and ``traceparent`` on every record produced.

Both sit at the seam, above any Kafka client (``services.messaging.transport``), so aiokafka, the memory broker
and any later client carry the same context. Both return at once when tracing is off (``services.telemetry``).

* ``handling(stage, record)``: the span of one record's handling (``process <topic>``, a consumer span), child of
  the record's ``traceparent``, or the root of its event's trace (``emd-trace-id``) when it has none;
* ``stamped(outputs)``: each output with a ``traceparent`` header naming the span that produced it, or, for an
  event of another trace, a ``publish`` span of that trace (the event's ``traceId`` stays its trace id).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

from producer import events
from services import telemetry
from services.messaging.records import Output, Record

if TYPE_CHECKING:
    from opentelemetry.trace import Span

TRACEPARENT = "traceparent"

__all__ = ["TRACEPARENT", "handling", "stamped"]


def handling(stage: str, group: str, record: Record) -> contextlib.AbstractContextManager[Span | None]:
    """The span of ``stage`` handling ``record`` (``None`` when tracing is off)."""
    if not telemetry.enabled():
        return contextlib.nullcontext()
    key_attribute = telemetry.MESSAGE_ID if record.topic.startswith("emd.remd.") else telemetry.LOCAL_UID
    return telemetry.consumer_span(
        f"process {record.topic}",
        traceparent=record.header(TRACEPARENT),
        trace_id=record.header(events.HEADER_TRACE_ID),
        attributes={
            "emd.stage": stage,
            key_attribute: record.key,
            "emd.callback_kind": record.header("emd-callback-kind"),
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.destination.name": record.topic,
            "messaging.destination.partition.id": str(record.partition),
            "messaging.consumer.group.name": group,
            "messaging.kafka.offset": record.offset,
        },
    )


def stamped(outputs: Sequence[Output]) -> Sequence[Output]:
    """``outputs``, each carrying the W3C ``traceparent`` of its event's trace (unchanged when tracing is off)."""
    if not telemetry.enabled():
        return outputs
    out = []
    for output in outputs:
        trace_id = output.headers.get(events.HEADER_TRACE_ID)
        value = telemetry.publish_traceparent(
            trace_id.decode() if isinstance(trace_id, bytes) else trace_id, topic=output.topic
        )
        if value is None:
            out.append(output)
            continue
        headers = {k: v for k, v in output.headers.items() if k != TRACEPARENT}
        out.append(dataclasses.replace(output, headers={**headers, TRACEPARENT: value}))
    return out

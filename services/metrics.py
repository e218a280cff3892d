"""Prometheus metrics: one registry per process, names shared by every stage, and the HTTP endpoint.

Naming follows prometheus.io practice: an ``emd_`` prefix, base units, ``_total`` on counters,
and no high-cardinality labels (localUid, MessageID and patient ids go to logs and dead-letter
headers, never to labels). Every stage reports the same RED set, labelled by ``stage``:

* ``emd_records_total{stage,outcome}``: records handled (ok, retry, dead_letter);
* ``emd_record_duration_seconds{stage}``: handling time histogram, with the handling span's ``trace_id`` and
  ``span_id`` as exemplars when tracing is on (``services.telemetry``; the OpenMetrics exposition only, which
  ``/metrics`` serves to a scraper that asks for it, as Prometheus does);
* ``emd_dead_letters_total{stage,category}`` (the reason is in the dead letter's headers and the log: with it
  as a label the series could not be pre-initialised) and ``emd_retries_total{stage,reason}``;
* ``emd_in_flight{stage}``, ``emd_last_progress_timestamp_seconds{stage}`` (the last offset commit: progress
  is offsets committed, not loop turns), ``emd_commits_total{stage}``, ``emd_rebalances_total{stage}``;
* ``emd_consumer_lag_records{stage,topic}`` and ``emd_consumer_lag_seconds{stage,topic}``: records not yet
  processed and the age of the oldest of them, computed by the worker (``services.messaging.lag``).

Every process also exports ``emd_build_info{version}`` and the standard ``process_*``/``python_*``
collectors (a custom registry gets none of them by itself). Label values a dashboard sums over are
pre-initialised (``init_stage``): a counter's series exists only after its first increment, so without it
``increase()`` never sees the first dead letter of a stage.

Domain modules declare their own metrics on ``REGISTRY`` next to the code that updates them.
"""

from __future__ import annotations

import platform
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata

from prometheus_client import (
    GC_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.exposition import choose_encoder

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
REGISTRY.register(GC_COLLECTOR)


def _version() -> str:
    try:
        return metadata.version("emd-pipeline")
    except metadata.PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


BUILD = Info("emd_build", "The running emd-pipeline build.", registry=REGISTRY)
BUILD.info({"version": _version(), "python": platform.python_version()})
#: what a record's handling ended in (emd_records_total{outcome})
OUTCOMES = ("ok", "retry", "dead_letter")

_DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

RECORDS = Counter(
    "emd_records", "Records handled by a stage, by outcome.", ["stage", "outcome"], registry=REGISTRY
)
DURATION = Histogram(
    "emd_record_duration_seconds",
    "Time to handle one record.",
    ["stage"],
    buckets=_DURATION_BUCKETS,
    registry=REGISTRY,
)
DEAD_LETTERS = Counter(
    "emd_dead_letters",
    "Records dead-lettered, by category (data, configuration, transient, internal, unknown).",
    ["stage", "category"],
    registry=REGISTRY,
)
#: dead-letter categories (the emd-dlt-category header); "unknown" when a failure names none
CATEGORIES = ("data", "configuration", "transient", "internal", "security", "unknown")
RETRIES = Counter(
    "emd_retries", "Records sent to a retry topic, by reason code.", ["stage", "reason"], registry=REGISTRY
)
IN_FLIGHT = Gauge("emd_in_flight", "Records being handled now.", ["stage"], registry=REGISTRY)
LAST_PROGRESS = Gauge(
    "emd_last_progress_timestamp_seconds",
    "Unix time the stage last committed or polled successfully.",
    ["stage"],
    registry=REGISTRY,
)
COMMITS = Counter("emd_commits", "Offset commits made by a stage.", ["stage"], registry=REGISTRY)
REBALANCES = Counter(
    "emd_rebalances", "Partition assignments received by a stage.", ["stage"], registry=REGISTRY
)
LAG_RECORDS = Gauge(
    "emd_consumer_lag_records",
    "Records of a topic the stage has not processed yet (high watermark "
    "minus the first unprocessed offset, summed over its partitions).",
    ["stage", "topic"],
    registry=REGISTRY,
)
LAG_SECONDS = Gauge(
    "emd_consumer_lag_seconds",
    "Age of the oldest record of a topic the stage has not processed yet (0 when it is caught up).",
    ["stage", "topic"],
    registry=REGISTRY,
)


def init_stage(stage: str, topics: tuple[str, ...] = ()) -> None:
    """Create the stage's series at zero, so dashboards and ``increase()`` see them before the first event."""
    for outcome in OUTCOMES:
        RECORDS.labels(stage, outcome)
    for category in CATEGORIES:
        DEAD_LETTERS.labels(stage, category)
    DURATION.labels(stage)
    IN_FLIGHT.labels(stage)
    COMMITS.labels(stage)
    REBALANCES.labels(stage)
    for topic in topics:
        LAG_RECORDS.labels(stage, topic)
        LAG_SECONDS.labels(stage, topic)


class MetricsServer:
    """``/metrics`` (Prometheus text format) and ``/healthz`` on a small background HTTP server.

    :param host: interface to bind (loopback by default; ``0.0.0.0`` in a pod).
    :param port: 0 picks a free port; read it back from ``.port``.
    :param health: callable returning ``(ok, text)`` for ``/healthz`` (liveness: still making progress).
    :param ready: the same for ``/readyz`` (readiness: joined and able to work; default: ``health``).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        health: Callable[[], tuple[bool, str]] | None = None,
        ready: Callable[[], tuple[bool, str]] | None = None,
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        health = health or (lambda: (True, "ok\n"))
        checks = {"/healthz": health, "/readyz": ready or health}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                if self.path.startswith("/metrics"):
                    # OpenMetrics when the scraper asks for it (Prometheus does): only it carries exemplars
                    encoder, ctype = choose_encoder(self.headers.get("Accept") or "")
                    body, status = encoder(registry), 200
                elif self.path.split("?")[0] in checks:
                    ok, text = checks[self.path.split("?")[0]]()
                    body, status, ctype = text.encode(), 200 if ok else 503, "text/plain; charset=utf-8"
                else:
                    body, status, ctype = b"not found\n", 404, "text/plain"
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:  # scrapes every 15 s would flood the log
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        bound, self.port = self._server.server_address[:2]
        self.host = bound if isinstance(bound, str) else bytes(bound).decode()
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

"""Prometheus metrics: one registry per process, names shared by every stage, and the HTTP endpoint.

Naming follows prometheus.io practice: an ``emd_`` prefix, base units, ``_total`` on counters,
and no high-cardinality labels (localUid, MessageID and patient ids go to logs and dead-letter
headers, never to labels). Every stage reports the same RED set, labelled by ``stage``:

* ``emd_records_total{stage,outcome}``: records handled (ok, retry, dead_letter);
* ``emd_record_duration_seconds{stage}``: handling time histogram;
* ``emd_dead_letters_total{stage,reason}`` and ``emd_retries_total{stage,reason}``;
* ``emd_in_flight{stage}``, ``emd_last_progress_timestamp_seconds{stage}``.

Domain modules declare their own metrics on ``REGISTRY`` next to the code that updates them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

REGISTRY = CollectorRegistry(auto_describe=True)

_DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

RECORDS = Counter("emd_records", "Records handled by a stage, by outcome.", ["stage", "outcome"],
                  registry=REGISTRY)
DURATION = Histogram("emd_record_duration_seconds", "Time to handle one record.", ["stage"],
                     buckets=_DURATION_BUCKETS, registry=REGISTRY)
DEAD_LETTERS = Counter("emd_dead_letters", "Records dead-lettered, by reason code.", ["stage", "reason"],
                       registry=REGISTRY)
RETRIES = Counter("emd_retries", "Records sent to a retry topic, by reason code.", ["stage", "reason"],
                  registry=REGISTRY)
IN_FLIGHT = Gauge("emd_in_flight", "Records being handled now.", ["stage"], registry=REGISTRY)
LAST_PROGRESS = Gauge("emd_last_progress_timestamp_seconds",
                      "Unix time the stage last committed or polled successfully.", ["stage"], registry=REGISTRY)
COMMITS = Counter("emd_commits", "Offset commits made by a stage.", ["stage"], registry=REGISTRY)
REBALANCES = Counter("emd_rebalances", "Partition assignments received by a stage.", ["stage"], registry=REGISTRY)


class MetricsServer:
    """``/metrics`` (Prometheus text format) and ``/healthz`` on a small background HTTP server.

    :param host: interface to bind (loopback by default; ``0.0.0.0`` in a pod).
    :param port: 0 picks a free port; read it back from ``.port``.
    :param health: callable returning ``(ok, text)`` for ``/healthz``.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0,
                 health: Callable[[], tuple[bool, str]] | None = None,
                 registry: CollectorRegistry = REGISTRY) -> None:
        health = health or (lambda: (True, "ok"))

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                if self.path.startswith("/metrics"):
                    body, status, ctype = generate_latest(registry), 200, CONTENT_TYPE_LATEST
                elif self.path.startswith("/healthz"):
                    ok, text = health()
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
        self.host, self.port = self._server.server_address[:2]
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

"""What a process trusts to reach Kafka, as a metric: ``emd_kafka_ca_not_after_timestamp_seconds``.

A worker builds its TLS context from ``KAFKA_SSL_CA_FILE`` when its clients start and keeps it for its life. In
Kubernetes that file is Strimzi's cluster CA, copied into the namespace by trust-manager: when Strimzi renews the
CA (30 days before it expires), the file is rewritten at once, but a running pod still trusts the certificate it
loaded. So the gauge says when the CA the *process* loaded expires — the latest notAfter in the file as read at
start (a bundle may hold the old and the new CA side by side: the process can reach the brokers until the last
of them expires) — and the alert EmdKafkaCaExpiresSoon fires for pods that missed a renewal.
"""

from __future__ import annotations

from pathlib import Path

from asn1crypto import pem, x509
from prometheus_client import Gauge

from services.logs import get_logger
from services.metrics import REGISTRY

log = get_logger(__name__)

KAFKA_CA_NOT_AFTER = Gauge(
    "emd_kafka_ca_not_after_timestamp_seconds",
    "When the last certificate of the Kafka CA bundle this process loaded at start expires (Unix time).",
    registry=REGISTRY,
)


def latest_not_after(data: bytes) -> float | None:
    """The latest notAfter (Unix time) of the PEM certificates in ``data``; None when it holds none."""
    found = [
        x509.Certificate.load(der)["tbs_certificate"]["validity"]["not_after"].native.timestamp()
        for kind, _, der in pem.unarmor(data, multiple=True)
        if kind == "CERTIFICATE"
    ]
    return max(found) if found else None


def observe_kafka_ca(ca_file: str) -> None:
    """Set the gauge from ``ca_file`` (``KAFKA_SSL_CA_FILE``); nothing when there is none (plaintext, dev)."""
    if not ca_file:
        return
    try:
        not_after = latest_not_after(Path(ca_file).read_bytes())
    except (OSError, ValueError) as exc:  # the TLS context reports an unreadable file itself
        log.warning("Kafka CA not readable for its expiry gauge", file=ca_file, error=str(exc))
        return
    if not_after is not None:
        KAFKA_CA_NOT_AFTER.set(not_after)

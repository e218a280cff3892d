"""Kafka client settings, built from ``Settings`` in one place, for aiokafka (workers) and kafka-python (МИС).

Both producers are idempotent with ``acks=all``: a send is confirmed only when every in-sync replica
has it, and a retried send cannot duplicate. Consumers never auto-commit: the runtime commits only
what it has finished (``services/messaging/runtime.py``).
"""

from __future__ import annotations

from typing import Any

from services.config import Settings


def aio_producer_config(settings: Settings, *, client_id: str) -> dict[str, Any]:
    return {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "client_id": f"{settings.kafka_client_id}-{client_id}",
        "acks": "all",
        "enable_idempotence": settings.kafka_enable_idempotence,
        "linger_ms": 5,
        "max_request_size": 1024 * 1024,
        "request_timeout_ms": 30000,
    }


def aio_consumer_config(settings: Settings, *, group_id: str, client_id: str) -> dict[str, Any]:
    return {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "client_id": f"{settings.kafka_client_id}-{client_id}",
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": settings.kafka_session_timeout_ms,
        "heartbeat_interval_ms": settings.kafka_heartbeat_interval_ms,
        "max_poll_interval_ms": settings.kafka_max_poll_interval_ms,
        "isolation_level": "read_committed",
    }


def sync_producer_config(bootstrap_servers: str, *, client_id: str = "emd-mis") -> dict[str, Any]:
    """kafka-python producer settings for the МИС-side library."""
    return {
        "bootstrap_servers": bootstrap_servers,
        "client_id": client_id,
        "acks": "all",
        "enable_idempotence": True,
        "max_in_flight_requests_per_connection": 5,
        "retries": 5,
        "linger_ms": 5,
        "request_timeout_ms": 15000,
        "delivery_timeout_ms": 30000,
    }

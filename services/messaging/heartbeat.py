"""The heartbeat file a stage writes while its loop turns, and ``emd worker NAME --check`` reads (arq's
``--check``: an exec liveness probe that needs no HTTP)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from producer.files import write_private
from services.config import Settings
from services.logs import get_logger

log = get_logger(__name__)


def heartbeat_path(settings: Settings, stage: str) -> Path:
    return Path(settings.data_dir) / "health" / f"{stage}.json"


def write_heartbeat(path: Path, *, stage: str, at: float, in_flight: int, ok: bool, health: str) -> None:
    """Replace the heartbeat atomically (a reader never sees half a file); a full disk is logged, not fatal."""
    try:
        tmp = path.with_suffix(".tmp")
        write_private(
            tmp, json.dumps({"stage": stage, "time": at, "in_flight": in_flight, "ok": ok, "health": health})
        )
        tmp.replace(path)
    except OSError as exc:
        log.warning("cannot write health file", path=str(path), error=str(exc))


def check_health(settings: Settings, stage: str) -> tuple[bool, str]:
    """``emd worker NAME --check``: is the stage's heartbeat file fresh? (an exec liveness probe)"""
    path = heartbeat_path(settings, stage)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False, f"{stage}: no heartbeat at {path}"
    age = time.time() - float(data.get("time", 0))
    if age > settings.health_max_idle_seconds:
        return (
            False,
            f"{stage}: last heartbeat {age:.0f}s ago (limit {settings.health_max_idle_seconds:.0f}s)",
        )
    if data.get("ok") is False:
        return False, f"{stage}: unhealthy: " + " | ".join(str(data.get("health", "")).strip().splitlines())
    return True, f"{stage}: ok, heartbeat {age:.1f}s ago, {data.get('in_flight', 0)} in flight"

"""The emulator's durable state (``emd emulator --state DIR``): what a real РЭМД keeps across its own restarts.

Without it the emulator forgets everything when it stops, as a fresh test stand would. With it, a kill -9
and a restart (the whole-system run, ``make reliability``) lose nothing РЭМД had promised:

* ``registry.jsonl``: one line per registered document, appended (and flushed) before its success callback
  leaves, so the registry after a restart still refuses a second registration of the same localUid;
* ``pending/<n>.json``: each accepted ``registerDocument`` (the request bytes, the ИС, the arrival time),
  written before ``status=success`` is answered and removed once its result callback is done. A restart
  processes what is left, as РЭМД finishes the registrations it accepted.

A line or file cut short by a kill is skipped: its registration or acceptance never reached the МИС.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.timestamps import file_stamp

__all__ = ["PendingJob", "StateDir"]


@dataclass(frozen=True)
class PendingJob:
    """An accepted registration waiting for (or in) its asynchronous processing."""

    path: Path
    body: bytes
    client_entity_id: str
    arrival: dt.datetime


class StateDir:
    """The files of one emulator's durable state."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        self.registry_file = self.directory / "registry.jsonl"
        self.pending_dir = self.directory / "pending"
        self.pending_dir.mkdir(parents=True, exist_ok=True)

    # --- registry ----------------------------------------------------------------------------
    def records(self) -> list[dict[str, Any]]:
        """Every registration written so far (a torn last line is left out)."""
        if not self.registry_file.exists():
            return []
        out = []
        for line in self.registry_file.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def append_record(self, record: dict[str, Any]) -> None:
        with self.registry_file.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")

    def clear(self) -> None:
        self.registry_file.unlink(missing_ok=True)
        for p in self.pending_dir.glob("*.json"):
            p.unlink(missing_ok=True)

    # --- accepted, not finished ----------------------------------------------------------------
    def accept(self, body: bytes, *, client_entity_id: str, arrival: dt.datetime) -> Path:
        """Record an accepted request (write then rename, so a kill leaves it whole or absent)."""
        path = self.pending_dir / f"{file_stamp(arrival)}-{uuid.uuid4().hex[:8]}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(
            json.dumps(
                {
                    "body": base64.b64encode(body).decode(),
                    "client": client_entity_id,
                    "arrival": arrival.isoformat(),
                }
            ),
            encoding="utf-8",
        )
        tmp.replace(path)
        return path

    def pending(self) -> Iterator[PendingJob]:
        """Accepted registrations a previous run did not finish, oldest first."""
        for path in sorted(self.pending_dir.glob("*.json")):
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                yield PendingJob(
                    path=path,
                    body=base64.b64decode(data["body"]),
                    client_entity_id=data["client"],
                    arrival=dt.datetime.fromisoformat(data["arrival"]),
                )
            except (OSError, ValueError, KeyError):
                path.unlink(missing_ok=True)

    @staticmethod
    def finished(path: Path | None) -> None:
        if path is not None:
            path.unlink(missing_ok=True)

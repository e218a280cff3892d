"""Patients a regional platform already holds, per organisation: N3's PixService ``AddPatient`` is sent once per
patient and clinic, and again only when what it says about the patient changes (``docs/transports.md`` says why).

One table in the lifecycle's database (same URL, ``EMD_LIFECYCLE_STORE``), created on open when missing::

    route_patients(route, organization, patient_id, fingerprint, added_at)   key (route, organization, patient_id)

``fingerprint`` is a digest of the AddPatient content (``services.remd.n3.patient_fingerprint``): the row says
"N3 took this patient, as we describe it now". The sender asks :meth:`PatientStore.known` before an attempt,
:meth:`remember`\\ s after N3 took AddPatient, and :meth:`forget`\\ s when N3 says it does not know the patient, so
the next attempt adds it again. Keyed by organisation: one clinic's patients never stand for another's. Losing a
row costs one AddPatient more, never a document: the store is a saving, not a source of truth.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from services.lifecycle.sqlite import SqliteDatabase
from services.lifecycle.store import database_location
from services.timestamps import stored

__all__ = ["PatientStore", "open_patient_store"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS route_patients (
    route        TEXT NOT NULL,
    organization TEXT NOT NULL,
    patient_id   TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    added_at     TEXT NOT NULL,
    PRIMARY KEY (route, organization, patient_id)
);
"""
#: pg_advisory_xact_lock key serialising this schema's creation between replicas starting at once
_SCHEMA_LOCK = 7201314


class PatientStore:
    """Which patients each organisation's platform holds, as described when they were added.

    :param path: the SQLite file (default deployment: the lifecycle's ``lifecycle.sqlite3``).
    :param url: a ``postgresql://`` URL instead.
    """

    def __init__(self, path: Path | str | None = None, *, url: str = "") -> None:
        if url:
            from services.lifecycle.postgres import PostgresDatabase  # psycopg only where it is used

            self.db: Any = PostgresDatabase(url, unavailable_reason="LIFECYCLE_STORE_UNAVAILABLE")
        else:
            assert path is not None
            self.db = SqliteDatabase(path)
        self.db.ensure_schema(_SCHEMA, lock_key=_SCHEMA_LOCK)

    @contextmanager
    def _tx(self) -> Iterator[Any]:
        with self.db.transaction() as db:

            def run(sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
                cursor = db.execute(sql.replace("?", self.db.placeholder), params)
                rows = cursor.fetchall() if cursor.description else []
                return [tuple(row[k] for k in row.keys()) for row in rows]

            yield run

    def known(self, route: str, organization: str, patient_id: str, fingerprint: str) -> bool:
        """Whether the platform took this patient of this organisation, described exactly so."""
        with self._tx() as run:
            rows = run(
                "SELECT fingerprint FROM route_patients WHERE route = ? AND organization = ? AND patient_id = ?",
                (route, organization, patient_id),
            )
        return bool(rows) and rows[0][0] == fingerprint

    def remember(self, route: str, organization: str, patient_id: str, fingerprint: str) -> None:
        """The platform took the patient as ``fingerprint`` describes it (an older description is replaced)."""
        now = stored(datetime.now(UTC))
        with self._tx() as run:
            run(
                "DELETE FROM route_patients WHERE route = ? AND organization = ? AND patient_id = ?",
                (route, organization, patient_id),
            )
            run(
                "INSERT INTO route_patients (route, organization, patient_id, fingerprint, added_at) "
                "VALUES (?,?,?,?,?)",
                (route, organization, patient_id, fingerprint, now),
            )

    def forget(self, route: str, organization: str, patient_id: str) -> None:
        """The platform says it does not know the patient: the next document adds it again."""
        with self._tx() as run:
            run(
                "DELETE FROM route_patients WHERE route = ? AND organization = ? AND patient_id = ?",
                (route, organization, patient_id),
            )

    def close(self) -> None:
        self.db.close()


def open_patient_store(data_dir: Path | str, *, url: str = "") -> PatientStore:
    """The deployment's patient store, in the lifecycle store's database (``EMD_LIFECYCLE_STORE``)."""
    kind, where = database_location(data_dir, url)
    return PatientStore(where) if kind == "sqlite" else PatientStore(url=where)

"""Information systems registered at the emulated ИПС: clientEntityId → trusted WS-Security certificates.

JSON form (``emd emulator --systems systems.json``)::

    {"systems": [{"clientEntityId": "17c74e63-…", "name": "dental-mis-01",
                  "certificates": ["mis.pem", "-----BEGIN CERTIFICATE-----\\n…"]}],
     "n3": [{"token": "<N3 auth GUID>", "lpuId": "<the clinic's N3 id>"}]}      // the N3 face's clients

A certificate entry is a PEM text or a path (relative paths are relative to the JSON file).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from producer.errors import ConfigurationError
from services.crypto.certificates import Certificate, load_certificate

__all__ = ["System", "load_n3_tokens", "load_systems"]


@dataclass(frozen=True, slots=True)
class System:
    """One registered ИС: requests with this clientEntityId must be signed with one of ``certificates``."""

    client_entity_id: str
    certificates: tuple[Certificate, ...]
    name: str | None = None

    @classmethod
    def of(cls, client_entity_id: str, certificates: Iterable[Any], name: str | None = None) -> System:
        """From certificates given as ``Certificate``, DER/PEM bytes or a path."""
        certs = tuple(c if isinstance(c, Certificate) else load_certificate(c) for c in certificates)
        if not certs:
            raise ConfigurationError(f"system {client_entity_id}: no certificate", reason="EMULATOR_SYSTEMS")
        return cls(client_entity_id=client_entity_id, certificates=certs, name=name)

    def trusts(self, certificate: Certificate) -> bool:
        return any(c.der == certificate.der for c in self.certificates)


def load_systems(path: str | os.PathLike) -> list[System]:
    """Read a systems JSON file; ConfigurationError names what is wrong."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigurationError(
            f"cannot read systems file {path}: {exc}", reason="EMULATOR_SYSTEMS"
        ) from None
    entries = data.get("systems") if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise ConfigurationError(f'{path}: expected {{"systems": [...]}}', reason="EMULATOR_SYSTEMS")
    systems = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not entry.get("clientEntityId") or not entry.get("certificates"):
            raise ConfigurationError(
                f"{path}: systems[{i}] needs clientEntityId and certificates", reason="EMULATOR_SYSTEMS"
            )
        certs = []
        for c in entry["certificates"]:
            source: Any = c.encode("ascii") if "-----BEGIN" in c else path.parent / c
            try:
                certs.append(load_certificate(source))
            except Exception as exc:  # noqa: BLE001 - any failure is a configuration error with the entry named
                raise ConfigurationError(
                    f"{path}: systems[{i}]: bad certificate {c[:40]!r}: {exc}", reason="EMULATOR_SYSTEMS"
                ) from None
        systems.append(System.of(entry["clientEntityId"], certs, entry.get("name")))
    return systems


def load_n3_tokens(path: str | os.PathLike) -> dict[str, str]:
    """The N3 face's clients of a systems file: ``{token: lpuId}`` (none when the file has no ``n3`` list)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigurationError(
            f"cannot read systems file {path}: {exc}", reason="EMULATOR_SYSTEMS"
        ) from None
    entries = data.get("n3", []) if isinstance(data, dict) else []
    if not isinstance(entries, list) or not all(
        isinstance(e, dict) and e.get("token") and e.get("lpuId") for e in entries
    ):
        raise ConfigurationError(
            f'{path}: n3 must be a list of {{"token", "lpuId"}}', reason="EMULATOR_SYSTEMS"
        )
    return {e["token"]: e["lpuId"] for e in entries}

"""N3's dictionary 195 («Виды электронных медицинских документов»): the ``IdMedDocumentType`` of a РЭМД kind.

N3 expects its own code in ``AddMedRecord``, not the НСИ 1.2.643.5.1.13.13.11.1520 kind (N3's support: «передаётся
198, не 119»; ``docs/n3-contract.md``). The dictionary is data: the version shipped with the code is
``services/data/n3/nsi-195-v374.json``; an operator with a newer export names it in the organisations file
(``n3_dictionary``) and :class:`DictionaryFile` re-reads it when it changes, without a release.

:meth:`KindDictionary.code_for` picks the code of a kind, or raises ``PermanentError`` naming the kind and the
dictionary's version:

* ``N3_KIND_UNMAPPED``: no row of the dictionary carries the kind;
* ``N3_KIND_NOT_EXPORTED``: the rows that do are not marked ``allowRemdExport`` = true: N3 would keep the document
  in its ИЭМК and never forward it to РЭМД, so the pipeline refuses it before signing rather than wait for a
  registration that cannot come.

Several exportable rows for one kind (kind 54 in v374: codes 5 and 54) are resolved by the type we send: the row
whose ``iemkObject`` lists ``MedDocument`` wins (54; code 5 is bound to the ``DispensaryOne`` subtype). A tie that
rule does not break is ``N3_KIND_AMBIGUOUS``.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from producer.errors import ConfigurationError, PermanentError
from services.logs import get_logger

__all__ = ["DICTIONARY_OID", "DictionaryFile", "KindDictionary", "N3Kind", "load_dictionary", "packaged"]

#: N3's dictionary of document types (its OID in N3's НСИ)
DICTIONARY_OID = "1.2.643.2.69.1.1.1.195"
PACKAGED = "nsi-195-v374.json"
#: the type the N3 route sends every document as (``medRecord`` xsi:type)
SENT_TYPE = "meddocument"


@dataclass(frozen=True, slots=True)
class N3Kind:
    """One row of dictionary 195 that carries a РЭМД kind."""

    code: int  #: IdMedDocumentType
    name: str
    remd_kind: str  #: НСИ 1520 kind
    export: str | None  #: allowRemdExport as the export says it ("true", "false" or absent)
    iemk_objects: tuple[str, ...]  #: the MedDocument subtypes N3 maps the row to, lower case

    @property
    def exported(self) -> bool:
        return self.export == "true"


@dataclass(frozen=True)
class KindDictionary:
    """The rows of one export of dictionary 195 that carry a РЭМД kind, by kind."""

    version: str
    source: str
    by_kind: Mapping[str, tuple[N3Kind, ...]]

    def _refuse(self, reason: str, kind: str, message: str) -> PermanentError:
        return PermanentError(
            message,
            reason=reason,
            kind=kind,
            dictionary=DICTIONARY_OID,
            dictionary_version=self.version,
        )

    def code_for(self, kind: str) -> N3Kind:
        """The row whose code N3 expects for the НСИ 1520 ``kind`` (module docstring for the rules)."""
        where = f"N3's dictionary {DICTIONARY_OID} version {self.version}"
        rows = self.by_kind.get(kind, ())
        if not rows:
            raise self._refuse(
                "N3_KIND_UNMAPPED",
                kind,
                f"document kind {kind} (НСИ 1.2.643.5.1.13.13.11.1520) has no code in {where}: "
                "N3 cannot take it; register it through ИПС, or give the organisations file a newer dictionary",
            )
        exported = [r for r in rows if r.exported]
        if not exported:
            flags = ", ".join(f"code {r.code}: allowRemdExport={r.export or 'not set'}" for r in rows)
            raise self._refuse(
                "N3_KIND_NOT_EXPORTED",
                kind,
                f"document kind {kind} (НСИ 1.2.643.5.1.13.13.11.1520) is not forwarded to РЭМД by N3 ({flags} "
                f"in {where}): it would stay in N3's ИЭМК unregistered",
            )
        if len(exported) > 1:
            exported = [r for r in exported if SENT_TYPE in r.iemk_objects] or exported
        if len(exported) > 1:
            codes = ", ".join(str(r.code) for r in exported)
            raise self._refuse(
                "N3_KIND_AMBIGUOUS",
                kind,
                f"document kind {kind} (НСИ 1.2.643.5.1.13.13.11.1520) has several codes in {where} ({codes}) "
                "and none is the only one for MedDocument",
            )
        return exported[0]


def _parse(raw: Any, source: str) -> KindDictionary:
    if (
        not isinstance(raw, dict)
        or raw.get("oid") != DICTIONARY_OID
        or not isinstance(raw.get("items"), list)
    ):
        raise ValueError(f"not an export of dictionary {DICTIONARY_OID} (oid, version, items)")
    version = str(raw.get("version") or "").strip()
    if not version:
        raise ValueError("the export has no version")
    by_kind: dict[str, list[N3Kind]] = {}
    for n, item in enumerate(raw["items"]):
        if not isinstance(item, dict) or not str(item.get("code", "")).isdigit():
            raise ValueError(f"items[{n}]: no numeric code")
        kind = str(item.get("remd_code") or "").strip()
        if not kind:
            continue  # an N3 type with no РЭМД kind: never sent to РЭМД
        objects = str(item.get("iemkObject") or "")
        export = item.get("allowRemdExport")
        by_kind.setdefault(kind, []).append(
            N3Kind(
                code=int(item["code"]),
                name=str(item.get("name") or "").strip(),
                remd_kind=kind,
                export=str(export).strip().lower() if export not in (None, "") else None,
                iemk_objects=tuple(o.strip().lower() for o in objects.split(",") if o.strip()),
            )
        )
    return KindDictionary(
        version=version,
        source=source,
        by_kind={k: tuple(sorted(v, key=lambda r: r.code)) for k, v in by_kind.items()},
    )


def load_dictionary(path: str | os.PathLike[str]) -> KindDictionary:
    """An export of dictionary 195 (JSON: ``oid``, ``version``, ``items`` of ``code``, ``remd_code``,
    ``allowRemdExport``, ``iemkObject``); ``ConfigurationError`` naming the file when it is not one."""
    file = Path(path)
    try:
        return _parse(json.loads(file.read_text(encoding="utf-8")), str(file))
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"{file}: N3 dictionary 195: {exc}") from None


def packaged() -> KindDictionary:
    """The version shipped with the code (``services/data/n3``)."""
    text = resources.files("services").joinpath("data", "n3", PACKAGED).read_text(encoding="utf-8")
    return _parse(json.loads(text), f"services/data/n3/{PACKAGED}")


class DictionaryFile:
    """The dictionary an operator names (``path``), re-read when the file changes; the packaged one without a path.

    A file that becomes unreadable or malformed keeps the last good version in use and raises nothing here: the
    error was reported when it was named (at start) and the pipeline must not stop over an edit in progress.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: float | None = None
        self._current = load_dictionary(path) if path is not None else packaged()
        if path is not None:
            self._stamp = path.stat().st_mtime

    def current(self) -> KindDictionary:
        if self.path is None:
            return self._current
        try:
            stamp = self.path.stat().st_mtime
        except OSError:
            return self._current
        with self._lock:
            if stamp != self._stamp:
                try:
                    self._current = load_dictionary(self.path)
                except ConfigurationError as exc:
                    get_logger(__name__).error(
                        "N3 dictionary 195 unreadable: the previous version stays in use",
                        path=str(self.path),
                        version=self._current.version,
                        error=exc.message,
                    )
                    self._stamp = stamp  # said once per change of the file, not once per document
                    return self._current
                self._stamp = stamp
            return self._current

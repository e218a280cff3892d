"""НСИ 1.2.643.5.1.13.13.11.1520 «Электронные медицинские документы»: the document kinds РЭМД registers.

Two files in ``producer/data/nsi/`` (their provenance and why: ``producer/data/nsi/README.md``):

* the official ФНСИ JSON dump **v12.14** (181 rows, published 2023-09-21), every column: it is what a row says
  wherever it has the row;
* a **supplement** of the 120 kinds added since (``…1520_supplement.csv``, up to ID 344, registrable from as late
  as 2026), transcribed from a third-party copy of a newer version: ID, TYPE, NAME, FORMAT, the registration
  dates and GIT_LINK only. Its rows' patient and signature rules (PATIENT_INFO, MO_SIGN) are unknown (None).

Column meanings come from the passport: ``TYPE`` is the kind in НСИ 1522 (Виды медицинских документов),
``GIT_LINK`` the templateId of the implementation guide, ``PATIENT_INFO`` whether patient data (and СНИЛС) are
mandatory, ``MO_SIGN`` whether the organisation must sign, ``START_DATE`` … ``END_DATE`` the creation dates a
document of the kind is registered for (РЭМД: ``NO_DOCUMENT_KIND_ON_DATE``; ``producer.contract``).

A СЭМД names its kind in one of three ways; ``kind_for_document`` tries them in this order:

1. ``in_doc``: ClinicalDocument/code has codeSystem 1.2.643.5.1.13.13.11.1520 — the code *is* the kind;
2. ``template_id``: a ClinicalDocument/templateId equals a row's ``GIT_LINK``;
3. ``derived``: a templateId of the form ``1.2.643.5.1.13.13.14.<type>.9.<edition>`` (or the older
   ``1.2.643.5.1.13.2.7.5.1.<type>.9.<edition>``) gives the 1522 type and the edition; the row with that
   ``TYPE`` whose name ends in «Редакция <edition>» is the kind.

Where two rows share a GIT_LINK or a TYPE+edition (the birth certificate and its "paper form"
twin, for instance), the row whose name starts with the document's own ``code/@displayName``
wins; otherwise the match is ambiguous and nothing is guessed. Old third-level templates
(``…<type>.3``) have no 1520 row at all: ``kind_for_document`` returns ``None`` and
:func:`explain_no_kind` says why.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from datetime import date, datetime
from functools import cache
from importlib import resources
from typing import Any

__all__ = [
    "NSI_1520_OID",
    "NSI_1520_VERSION",
    "DocumentKind",
    "KindMatch",
    "all_kinds",
    "describe_version",
    "kind_by_code",
    "kind_for_document",
    "explain_no_kind",
]

NSI_1520_OID = "1.2.643.5.1.13.13.11.1520"
NSI_1522_OID = "1.2.643.5.1.13.13.11.1522"
NSI_1520_VERSION = "12.14"
_DUMP = f"{NSI_1520_OID}_{NSI_1520_VERSION}_part1"
_SUPPLEMENT = f"{NSI_1520_OID}_supplement.csv"
#: where a row came from: the official dump, or the supplement (producer/data/nsi/README.md)
SOURCE_OFFICIAL, SOURCE_SUPPLEMENT = "official", "supplement"
#: what messages call the shipped dictionary
SHIPPED = f"НСИ 1520 v{NSI_1520_VERSION} with its supplement"

_DERIVED = re.compile(r"^(?:1\.2\.643\.5\.1\.13\.13\.14|1\.2\.643\.5\.1\.13\.2\.7\.5\.1)\.(\d+)\.9\.(\d+)$")
_LEGACY = re.compile(r"^(?:1\.2\.643\.5\.1\.13\.13\.14|1\.2\.643\.5\.1\.13\.2\.7\.5\.1)\.(\d+)\.3$")
_EDITION = re.compile(r"Редакция\s+(\d+)\s*$")


@dataclass(frozen=True, slots=True)
class DocumentKind:
    """One row of НСИ 1520."""

    code: str  #: 1520 ID, e.g. "227"
    name: str  #: «Протокол консультации (CDA) Редакция 5»
    type_code: str  #: 1522 kind (TYPE)
    edition: int | None  #: from «Редакция N»; None for PDF/A kinds
    template_id: str | None  #: GIT_LINK
    patient_info: str | None  #: PATIENT_INFO as published; None: unknown (a supplement row)
    organization_signature: bool | None  #: MO_SIGN = «Да»; None: unknown (a supplement row)
    is_cda: bool  #: FORMAT 2 (CDA); 1 is PDF/A-1
    start_date: str | None
    end_date: str | None  #: registration of this kind ends (dd.mm.yyyy); None = open
    source: str = SOURCE_OFFICIAL  #: SOURCE_OFFICIAL or SOURCE_SUPPLEMENT

    def registrable_on(self, day: date) -> bool:
        """РЭМД registers documents of this kind created on ``day`` (within START_DATE … END_DATE)."""
        start = datetime.strptime(self.start_date, "%d.%m.%Y").date() if self.start_date else None
        end = datetime.strptime(self.end_date, "%d.%m.%Y").date() if self.end_date else None
        return (start is None or day >= start) and (end is None or day <= end)

    @property
    def requires_patient(self) -> bool | None:
        """Patient data are mandatory («Обязательны…»); None when the row does not say (a supplement row)."""
        return None if self.patient_info is None else self.patient_info.startswith("Обязательны")

    @property
    def requires_patient_snils(self) -> bool | None:
        """The patient's СНИЛС is mandatory («Обязательны с указанием СНИЛС»); None when unknown."""
        if self.patient_info is None:
            return None
        return "СНИЛС" in self.patient_info and self.patient_info.startswith("Обязательны")


@dataclass(frozen=True, slots=True)
class KindMatch:
    """The kind of one document and how it was found (``in_doc``, ``template_id``, ``derived``)."""

    code: str
    method: str
    kind: DocumentKind | None  #: None when the code came from the document but is newer than what is shipped


def _row(raw: list[dict[str, Any]]) -> DocumentKind:
    r = {c["column"]: c["value"] for c in raw}
    m = _EDITION.search(r["NAME"] or "")
    return DocumentKind(
        code=str(r["ID"]),
        name=r["NAME"],
        type_code=str(r["TYPE"]),
        edition=int(m.group(1)) if m else None,
        template_id=r.get("GIT_LINK") or None,
        patient_info=r.get("PATIENT_INFO") or "",
        organization_signature=(r.get("MO_SIGN") == "Да"),
        is_cda=str(r.get("FORMAT")) == "2",
        start_date=r.get("START_DATE"),
        end_date=r.get("END_DATE"),
    )


def _supplement_row(r: dict[str, str]) -> DocumentKind:
    m = _EDITION.search(r["NAME"])
    return DocumentKind(
        code=r["ID"],
        name=r["NAME"],
        type_code=r["TYPE"],
        edition=int(m.group(1)) if m else None,
        template_id=r["GIT_LINK"] or None,
        patient_info=None,
        organization_signature=None,
        is_cda=r["FORMAT"] == "2",
        start_date=r["START_DATE"] or None,
        end_date=r["END_DATE"] or None,
        source=SOURCE_SUPPLEMENT,
    )


@cache
def all_kinds() -> dict[str, DocumentKind]:
    """Every 1520 row by code: the official dump's, then the supplement's kinds it does not have."""
    folder = resources.files("producer").joinpath("data", "nsi")
    kinds = {
        k.code: k for k in map(_row, json.loads(folder.joinpath(_DUMP).read_text(encoding="utf-8"))["list"])
    }
    supplement = csv.DictReader(io.StringIO(folder.joinpath(_SUPPLEMENT).read_text(encoding="utf-8")))
    for row in map(_supplement_row, supplement):
        kinds.setdefault(row.code, row)
    return kinds


def describe_version(kind: DocumentKind) -> str:
    """Where the row of ``kind`` comes from, for messages: the official version, or the supplement."""
    if kind.source == SOURCE_SUPPLEMENT:
        return f"the supplement to v{NSI_1520_VERSION} (producer/data/nsi/README.md)"
    return f"v{NSI_1520_VERSION}"


def kind_by_code(code: str) -> DocumentKind | None:
    """The 1520 row with this code, or None."""
    return all_kinds().get(str(code).strip())


def _pick(candidates: list[DocumentKind], display_name: str | None) -> DocumentKind | None:
    if len(candidates) == 1:
        return candidates[0]
    if display_name:
        want = display_name.strip().casefold()
        named = [k for k in candidates if k.name.casefold().startswith(want)]
        if len(named) == 1:
            return named[0]
    return None


def kind_for_document(
    code: str | None,
    code_system: str | None,
    template_ids: list[str] | tuple[str, ...],
    *,
    display_name: str | None = None,
) -> KindMatch | None:
    """The 1520 kind of a СЭМД from its ClinicalDocument/code and templateIds (rules in the module doc)."""
    if code and code_system == NSI_1520_OID:
        return KindMatch(code=code.strip(), method="in_doc", kind=kind_by_code(code))
    kinds = all_kinds().values()
    for tid in template_ids:
        found = _pick([k for k in kinds if k.template_id == tid], display_name)
        if found:
            return KindMatch(code=found.code, method="template_id", kind=found)
    for tid in template_ids:
        m = _DERIVED.match(tid)
        if not m:
            continue
        type_code, edition = m.group(1), int(m.group(2))
        found = _pick(
            [k for k in kinds if k.type_code == type_code and k.edition == edition and k.is_cda], display_name
        )
        if found:
            return KindMatch(code=found.code, method="derived", kind=found)
    return None


def explain_no_kind(
    code: str | None, code_system: str | None, template_ids: list[str] | tuple[str, ...]
) -> str:
    """Why ``kind_for_document`` found nothing, in one sentence naming the templateId or code."""
    for tid in template_ids:
        if _LEGACY.match(tid):
            return (
                f"templateId {tid} is a legacy third-level template with no НСИ 1520 kind; "
                f"give the kind explicitly"
            )
    for tid in template_ids:
        m = _DERIVED.match(tid)
        if m:
            return (
                f"templateId {tid} names 1522 type {m.group(1)} edition {m.group(2)}, which has no single "
                f"row in {SHIPPED}"
            )
    return (
        f"ClinicalDocument/code {code!r} (codeSystem {code_system!r}) and templateIds {list(template_ids)} "
        f"match no kind of {SHIPPED}"
    )

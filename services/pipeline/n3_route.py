"""What the N3.Health route needs of a document beyond what РЭМД needs, checked before anything is signed.

N3 takes a document only with codes of its own (``docs/transports.md``): the dictionary-195 code of the kind
(``IdMedDocumentType``) and, for every doctor who signs, N3's speciality and position codes (``IdSpeciality``,
``IdPosition``, kept per doctor in the organisations file, ``remd.n3.doctors``); and AddPatient needs the patient's
СНИЛС, names, birth date and sex. :func:`n3_codes` resolves them or raises ``PermanentError``:

    N3_KIND_UNMAPPED, N3_KIND_NOT_EXPORTED, N3_KIND_AMBIGUOUS   the kind (``services.remd.n3_kinds``), naming it and
                                                               the dictionary's version
    N3_DOCTOR_UNMAPPED     a signer has no N3 codes in the organisations file (named by role and id in the МИС)
    N3_PERSON_INCOMPLETE   the patient or a signer lacks what N3's minimal requests carry

The signer calls it for an organisation on the n3 route before it signs (``services.pipeline.signing``), so such
a document is dead-lettered with its reason and the МИС told, and no qualified signature is spent on it; the
sender calls it again to build the request (the dictionary may have changed in between), and so does
``emd request``. Messages name no СНИЛС and no name: only roles, ids in the МИС and what is missing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from producer.errors import PermanentError
from producer.text import digits
from services.pipeline.organizations import Organization, OrganizationsConfig
from services.remd import n3, soap
from services.remd.n3_kinds import DictionaryFile, KindDictionary, N3Kind

__all__ = ["dictionary_of", "n3_carries", "n3_codes", "on_n3_route"]


def on_n3_route(org: Organization) -> bool:
    return org.remd is not None and org.remd.transport == "n3"


def dictionary_of(config: OrganizationsConfig) -> KindDictionary:
    """The dictionary in force: the organisations file's ``n3_dictionary``, else the one shipped."""
    if config.n3_dictionary is None:
        config.n3_dictionary = DictionaryFile()
    return config.n3_dictionary.current()


def patient_of(data: Mapping[str, Any]) -> soap.Patient:
    """The patient of an event's ``data``, as the SOAP builders of both routes take it."""
    p = data.get("patient") or {}
    return soap.Patient(
        snils=p.get("snils"),
        local_id=p.get("localId"),
        family=p.get("family"),
        given=p.get("given"),
        patronymic=p.get("patronymic"),
        gender=p.get("gender"),
        birth_date=p.get("birthDate"),
    )


def _signer(s: Mapping[str, Any]) -> soap.Signer:
    return soap.Signer(
        role=soap.Coded(s.get("roleCode") or "", None),
        snils=s.get("snils"),
        local_id=s.get("localId"),
        family=s.get("family"),
        given=s.get("given"),
        patronymic=s.get("patronymic"),
    )


def n3_carries(data: Mapping[str, Any], dictionary: KindDictionary) -> N3Kind:
    """The dictionary row of the document's kind, when N3 can carry the document whoever signs it; else
    ``PermanentError`` (N3_KIND_*, N3_PERSON_INCOMPLETE)."""
    kind = str(data["kind"])
    row = dictionary.code_for(kind)
    problems = n3.patient_problems(patient_of(data))
    for s in data.get("signers") or ():
        problems += [p for p in n3.staff_problems(_signer(s)) if p not in problems]
    if problems:
        raise PermanentError(
            f"the N3 route needs {', '.join(problems)}: missing in the document",
            reason="N3_PERSON_INCOMPLETE",
            kind=kind,
        )
    return row


def n3_codes(data: Mapping[str, Any], org: Organization, dictionary: KindDictionary) -> n3.N3Codes:
    """The N3 codes of a created (or signed) event's document for ``org``; ``PermanentError`` (module docstring)."""
    kind = str(data["kind"])
    row = n3_carries(data, dictionary)
    known = org.remd.n3.doctors if org.remd is not None and org.remd.n3 is not None else {}
    staff: dict[str, n3.StaffCodes] = {}
    for s in data.get("signers") or ():
        snils = digits(s.get("snils"))
        codes = known.get(snils)
        if codes is None:
            raise PermanentError(
                f"the {s.get('role', 'signer')} (id in the МИС {s.get('localId') or '?'}) has no N3 codes "
                f"(IdSpeciality, IdPosition) in remd.n3.doctors of organisation {org.oid}",
                reason="N3_DOCTOR_UNMAPPED",
                kind=kind,
                role=s.get("role"),
            )
        staff[snils] = codes
    return n3.N3Codes(
        document_type=row.code, title=row.name, staff=staff, dictionary_version=dictionary.version
    )

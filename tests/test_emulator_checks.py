"""The emulator's cross-checks between a registerDocument request and the СЭМД it pulled (РЭМД's header checks)."""

from __future__ import annotations

import datetime as dt

from lab.dev.samples import REPOSITORY_SAMPLES
from lab.emulator.checks import cross_check
from producer import nsi
from producer.cda import extract
from producer.xmlsafe import parse_xml
from services.remd.soap import Coded, Patient, PersonalSignature, Registration, Signer

# the Ministry example uses one СНИЛС for its author (Сидоров) and its legal authenticator (Николаев)
SHARED_SNILS = REPOSITORY_SAMPLES / "Instrumentalv3.xml"


def _registration(meta, *, role: str, family: str, given: str, patronymic: str) -> Registration:
    signer = next(s for s in meta.signers if s.role == role)
    p = meta.patient
    return Registration(
        kind=meta.kind_code,
        system="mis",
        organization=meta.organization_oid,
        department=None,
        local_uid=meta.local_uid,
        document_number=meta.document_number,
        creation_date_time=meta.creation_time.isoformat(),
        patient=Patient(
            snils=p.snils,
            local_id=p.local_id,
            family=p.family,
            given=p.given,
            patronymic=p.patronymic,
            gender=p.gender,
            birth_date=p.birth_date.isoformat() if p.birth_date else None,
        ),
        personal_signatures=(
            PersonalSignature(
                signer=Signer(
                    role=Coded("DOCTOR", "2.4"),
                    snils=signer.snils,
                    local_id=signer.local_id,
                    family=family,
                    given=given,
                    patronymic=patronymic,
                    position=Coded(signer.position_code, signer.position_version),
                ),
                signature=b"",
            ),
        ),
    )


def _doctor_codes(errors) -> list[str]:
    return [e.code for e in errors if e.code.startswith(("INVALID_DOCTOR", "LEGAL_AUTHENTICATOR"))]


def test_a_signer_is_compared_with_the_participant_of_the_same_position():
    """Two people sharing a СНИЛС (author and legal authenticator) are each checked against the participant
    holding the position the request names: the request carries no CDA role, only the coded РЭМД one."""
    meta = extract(parse_xml(SHARED_SNILS.read_bytes()))
    for role, names in (
        ("author", ("Сидоров", "Сергей", "Сергеевич")),
        ("legalAuthenticator", ("Николаев", "Николай", "Николаевич")),
    ):
        reg = _registration(meta, role=role, family=names[0], given=names[1], patronymic=names[2])
        codes = _doctor_codes(cross_check(reg, meta, meta.creation_time))
        assert [c for c in codes if c.startswith("INVALID_DOCTOR")] == [], role


def test_names_of_another_participant_are_a_mismatch():
    """The author's names sent with the legal authenticator's position are refused as INVALID_DOCTOR_*."""
    meta = extract(parse_xml(SHARED_SNILS.read_bytes()))
    reg = _registration(
        meta, role="legalAuthenticator", family="Сидоров", given="Сергей", patronymic="Сергеевич"
    )
    assert set(_doctor_codes(cross_check(reg, meta, meta.creation_time))) == {
        "INVALID_DOCTOR_FAMILY",
        "INVALID_DOCTOR_NAME",
        "INVALID_DOCTOR_PATRONYMIC",
    }


def test_a_kind_is_registrable_only_between_its_start_and_end_dates():
    """НСИ 1520 dates bound registration: before START_DATE and after END_DATE a kind is not registrable."""
    ended = next(k for k in nsi.all_kinds().values() if k.end_date and k.start_date)
    start = dt.datetime.strptime(ended.start_date, "%d.%m.%Y").date()
    end = dt.datetime.strptime(ended.end_date, "%d.%m.%Y").date()
    assert ended.registrable_on(start) and ended.registrable_on(end)
    assert not ended.registrable_on(start - dt.timedelta(days=1))
    assert not ended.registrable_on(end + dt.timedelta(days=1))


def test_position_and_recipient_are_cross_checked():
    """A position the СЭМД does not give the signer is a header mismatch, and a recipient the СЭМД does not name
    is RECIPIENT_INFO_MISMATCH (РЭМД's spelling of the classifier's RECEPIENT_*)."""
    import dataclasses

    from services.remd import names as n
    from services.remd.soap import Recipient

    meta = extract(parse_xml(SHARED_SNILS.read_bytes()))
    reg = _registration(meta, role="author", family="Сидоров", given="Сергей", patronymic="Сергеевич")
    wrong = dataclasses.replace(reg.personal_signatures[0].signer, position=Coded("999", "7.5"))
    moved = dataclasses.replace(
        reg, personal_signatures=(dataclasses.replace(reg.personal_signatures[0], signer=wrong),)
    )
    messages = [
        e.message for e in cross_check(moved, meta, meta.creation_time) if e.code == "VALIDATION_ERROR"
    ]
    assert any("Должность" in m and "[999]" in m for m in messages)
    addressed = dataclasses.replace(
        reg,
        recipient=Recipient(
            kind=n.RECIPIENT_MEDICAL_ORGANIZATION, organization="1.2.643.5.1.13.13.12.2.77.1"
        ),
    )
    codes = [e.code for e in cross_check(addressed, meta, meta.creation_time)]
    assert "RECIPIENT_INFO_MISMATCH" in codes and "VALIDATION_ERROR" not in codes

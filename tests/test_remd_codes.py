"""The РЭМД message-code table: complete against docs/protocol.md#message-codes, classified, with aliases."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from services.remd import codes as remd_codes
from services.remd.codes import CODES, classify

# The classifier v3.18 as docs/protocol.md#message-codes lists it, written out by hand (id → mnemonic).
EXPECTED: dict[int, str] = {
    1: "ACCESS_DENIED",
    2: "ATTRIBUTE_MISMATCH",
    3: "CAN_NOT_ASSOCIATE",
    4: "CANT_BUILD_CERT_CHAIN_TO_ACCREDITED_CA_CERT",
    5: "CANT_REG_VERSION",
    6: "DIGEST_MISMATCH",
    7: "DISABLED_RMIS",
    8: "DOC_DATE_MISMATCH_CERT_NOT_AFTER",
    9: "DOC_DATE_MISMATCH_CERT_NOT_BEFORE",
    10: "INCONSISTENT_DIGESTS",
    11: "INTERNAL_ERROR",
    12: "INVALID_CERT_KEY_USAGE",
    13: "INVALID_CONTENT",
    14: "INVALID_PLUGGABLE_ATTRS",
    15: "MIS_ERROR",
    16: "MIS_NOT_AVAILABLE",
    17: "NO_DOCUMENT_KIND_ON_DATE",
    18: "NO_END_ENTITY_CERTIFICATE",
    19: "NO_RMIS",
    20: "NO_ROLE_POLICY_ON_DATE",
    21: "NO_SIGNATURE",
    22: "NO_SNILS",
    23: "NO_SPECIALITY",
    24: "NOT_UNIQUE_ASSOCIATION",
    25: "NOT_UNIQUE_PROVIDED_ID",
    26: "OBJECT_NOT_FOUND",
    27: "ORG_NOT_FOUND_IN_FRMO",
    28: "ORG_SIGNATURE_OCCURRENCE_MISMATCH",
    29: "PATIENT_CREATION_ERROR",
    30: "PATIENT_MPI_MISMATCH",
    31: "PATIENT_OCCURRENCE_MISMATCH",
    32: "PERSON_CARD_NOT_FOUND",
    33: "PERSON_NOT_FOUND",
    34: "PERSON_POST_IN_FRMR_MISMATCH",
    35: "PLUGGABLE_ATTRS_OCCURRENCE_MISMATCH",
    36: "POSITION_TO_ROLE_MISMATCH",
    37: "REGISTRY_ITEM_NOT_FOUND",
    38: "RMIS_REGION_MISMATCH",
    39: "ROLE_OCCURRENCE_MISMATCH",
    40: "RUNTIME_ERROR",
    41: "SIGNATURE_DECODING_ERROR",
    42: "SIGNATURE_VERIFICATION_ERROR",
    43: "SIGNER_ORG_MISMATCH",
    44: "UNKNOWN_ALGORITHM",
    45: "VALUE_MISMATCH_METADATA_AND_CERTIFICATE",
    46: "VALUE_MISMATCH_METADATA_AND_FRMR",
    47: "WRONG_CREATION_DATE",
    48: "WRONG_MESSAGE_ID",
    49: "VALIDATION_ERROR",
    50: "NO_ORG_ON_DATE",
    51: "SIGNATURE_DUPLICATION",
    52: "MULTIPLE_SIGNERS",
    53: "WRONG_SIGNATURE_FORMAT",
    54: "NO_DEPARTMENT",
    55: "INVALID_DOC_CONTENT_TYPE",
    56: "FILE_WAS_NOT_SENT",
    57: "SERIES_REQUIRED_WRONG_SERVICE_VERSION",
    58: "SERIES_REQUIRED",
    59: "RMIS_ERROR",
    60: "PATIENT_ALREADY_REGISTERED",
    61: "GET_DOCUMENT_FILE_ERROR",
    62: "CA_INACCESSIBILITY",
    63: "PATIENT_NOT_FOUND",
    64: "ADDITIONAL_INFO_REQUIRED",
    65: "NOT_UNIQUE_ITEM",
    66: "AOGUID_NOT_FOUND",
    67: "REGION_CODE_DIFFERENT",
    68: "HOUSEGUID_NOT_FOUND",
    69: "AOGUID_DIFFERENT",
    70: "RESTRICT_NEW_VERSION",
    71: "FRLLO_VALIDATION_ERROR",
    72: "FRLLO_DIC_ERROR",
    73: "FRLLO_REQUIRED_CITIZEN_ERROR",
    74: "FRLLO_REQUIRED_IDENTIFY_ERROR",
    75: "FRLLO_CITIZEN_IDENTIFY_ERROR",
    76: "FRLLO_CITIZEN_SEARCH_ERROR",
    77: "FRLLO_RECIPE_POSITION_ERROR",
    78: "FRLLO_BENEFIT_SOURCE_ERROR",
    79: "FRLLO_ORGANIZATION_ERROR",
    80: "FRLLO_CITIZEN_BENEFIT_ERROR",
    81: "FRLLO_CITIZEN_REGION_ERROR",
    82: "FRLLO_COMISSION_INFO_ERROR",
    83: "FRLLO_RECIPE_DATE_ERROR",
    84: "FRLLO_EXPIRE_DATE_ERROR",
    85: "FRLLO_RELISE_POSITION_ERROR",
    86: "FRLLO_RECIPE_IDENTIFY_ERROR",
    87: "FRLLO_RELEASE_ORGANIZATION_ERROR",
    89: "FRLLO_RELISE_DATE_ERROR",
    90: "FRLLO_RELISE_QTY_ERROR",
    91: "FRLLO_TRANSPORT_ERROR",
    92: "FRLLO_SEMD_FLK_ERROR",
    93: "FRLLO_NOT_CORRECT_TYPE",
    94: "FRLLO_UNKNOWN_SYSTEM",
    95: "RATE_LIMIT",
    96: "VALSYS_REJECT",
    97: "ASYNC_RESPONSE_TIMEOUT",
    98: "PATIENT_NAME_NOT_FOUND",
    99: "PATIENT_SURNAME_NOT_FOUND",
    100: "DUPLICATE_PATIENT_FOUND",
    101: "IPS_VALIDATION_WARNING",
    102: "XML_VALIDATOR_ERROR",
    103: "SCHEMA_PROCESSING_ERROR",
    104: "XML_VALIDATION_ERROR",
    105: "PERSONAL_SIG_CERT_NOT_ACTUAL_ON_DOC_CREATION_DT",
    106: "INVALID_DOCTOR_FAMILY",
    107: "INVALID_DOCTOR_NAME",
    108: "INVALID_DOCTOR_PATRONYMIC",
    109: "LEGAL_AUTHENTICATOR_NOT_FOUND",
    110: "INVALID_DOCTOR_INFO",
    111: "INVALID_DOCTOR_ID",
    112: "INVALID_DOCTOR_SNILS",
    113: "INVALID_DICTIONARY_MAPPING",
    114: "INVALID_DICTIONARY",
    115: "INVALID_DICTIONARY_OID",
    116: "INVALID_DICTIONARY_VERSION",
    117: "INVALID_ELEMENT_VALUE_CODE",
    118: "INVALID_ELEMENT_VALUE_NAME",
    119: "VALSYS_INTERNAL_ERROR",
    120: "RECEPIENT_INFO_MISMATCH",
    121: "RECEPIENT_SNILS_MISMATCH",
    122: "RECEPIENT_FAMILY_MISMATCH",
    123: "RECEPIENT_NAME_MISMATCH",
    124: "RECEPIENT_PATRONYMIC_MISMATCH",
    125: "PERSONAL_SIG_CERT_NOT_ACTUAL_ON_CHECK_DT",
    126: "TIME_EXPIRED_ERROR",
    127: "ORDER_ALREADY_PROCESSED",
    128: "ORDER_NOT_FOUND",
}

# The "retry" column of docs/protocol.md#message-codes: codes where a retry may help.
EXPECTED_TRANSIENT = {11, 15, 16, 29, 40, 56, 59, 60, 61, 62, 95, 96, 97, 102, 103, 119}

PROTOCOL = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"


def documented_codes(text: str) -> tuple[dict[int, str], set[int]]:
    """(id → mnemonic, the ids marked for retry) from the table of the "Message codes" section of the page."""
    section = text.split("\n## Message codes\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (\d+) \| ([A-Z_]+) \| ([^|]*) \|", section, re.M)
    assert len(rows) == len({int(i) for i, _, _ in rows}), "an id listed twice"
    return {int(i): code for i, code, _ in rows}, {int(i) for i, _, retry in rows if retry.startswith("yes")}


def test_explicit_list_is_the_127_codes():
    """The hand-written expected list has 127 codes, ids 1–128 without 88."""
    assert len(EXPECTED) == 127
    assert set(EXPECTED) == set(range(1, 129)) - {88}


def test_table_matches_explicit_list():
    """Every code of the classifier is in the table with its id, and nothing else is."""
    assert {info.id: code for code, info in CODES.items()} == EXPECTED


def test_table_matches_the_documented_list():
    """The table, and the hand-written list, equal the codes docs/protocol.md lists with their ids."""
    documented, _ = documented_codes(PROTOCOL.read_text(encoding="utf-8"))
    assert documented == EXPECTED
    assert {info.id: code for code, info in CODES.items()} == documented


def test_every_entry_is_complete():
    """Each entry has a Russian meaning, a hint and one of the three categories."""
    for code, info in CODES.items():
        assert info.code == code
        assert info.category in remd_codes.CATEGORIES
        assert re.search("[А-Яа-яЁё]", info.meaning), code
        assert info.hint.strip(), code
        assert not info.unknown


def test_transient_codes_are_the_retryable_ones():
    """Exactly the codes docs/protocol.md marks for retry are classified transient."""
    _, retryable = documented_codes(PROTOCOL.read_text(encoding="utf-8"))
    assert retryable == EXPECTED_TRANSIENT
    assert {info.id for info in CODES.values() if info.transient} == EXPECTED_TRANSIENT


def test_rate_limit_asks_for_a_minute():
    """RATE_LIMIT is transient and carries a retry delay of at least a minute."""
    info = classify("RATE_LIMIT")
    assert info.transient and info.retry_after >= 60


def test_recipient_spelling_is_an_alias():
    """RECIPIENT_* as РЭМД emits it resolves to the classifier's RECEPIENT_* entry."""
    info = classify("RECIPIENT_SNILS_MISMATCH")
    assert info is CODES["RECEPIENT_SNILS_MISMATCH"]
    assert info.id == 121 and not info.unknown


def test_classify_normalises_case_and_space():
    """Codes are matched case-insensitively and without surrounding whitespace."""
    assert classify("  no_snils\n").id == 22


def test_classify_by_numeric_id():
    """A numeric classifier id (int or digits) resolves to its entry."""
    assert classify(95).code == "RATE_LIMIT"
    assert classify("25").code == "NOT_UNIQUE_PROVIDED_ID"


@pytest.mark.parametrize("code", ["SOMETHING_NEW", "", None, 88, "ORGANIZATION_NOT_FOUND"])
def test_unknown_codes_are_conservative(code):
    """Unknown codes (incl. the duplicate 88 and invented ones) are flagged and never retried blindly."""
    info = classify(code)
    assert info.unknown
    assert info.category == "configuration"
    assert not info.transient


def test_categories_of_representative_codes():
    """Data problems go back to the МИС, setup problems to the administrator."""
    assert classify("NO_SNILS").category == "data"
    assert classify("NO_RMIS").category == "configuration"
    assert classify("PERSON_NOT_FOUND").category == "configuration"
    assert classify("DIGEST_MISMATCH").category == "data"

"""services.reasons: every reason code raised in the pipeline is catalogued with who must act and what to do."""

from __future__ import annotations

import re
from pathlib import Path

from services.reasons import REASONS, reason_info

ROOT = Path(__file__).resolve().parent.parent
#: reason="X" (a raise or a class attribute), and cades' _fail("X", ...)
#: outcome codes that are not failures (SubmitOutcome reason of an accepted registration)
NOT_FAILURES = {"ACCEPTED"}
RAISED = re.compile(r"""\breason\s*=\s*"([A-Z][A-Z0-9_]+)"|\b_fail\("([A-Z][A-Z0-9_]+)\"""")


def raised_reasons() -> dict[str, str]:
    """Every literal reason code in the production code (the dev tooling and the emulator excepted)."""
    found: dict[str, str] = {}
    paths = [*ROOT.glob("services/**/*.py"), *ROOT.glob("workers/**/*.py"), *ROOT.glob("producer/**/*.py")]
    for path in paths:
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(("lab/dev/", "lab/emulator/")):
            continue
        for match in RAISED.finditer(path.read_text(encoding="utf-8")):
            found.setdefault(match.group(1) or match.group(2), rel)
    return found


def test_every_reason_raised_in_the_code_is_catalogued():
    """A new reason code cannot reach a dead letter without a category and a hint for support."""
    missing = {
        code: where
        for code, where in raised_reasons().items()
        if reason_info(code) is None and code not in NOT_FAILURES
    }
    assert missing == {}


def test_every_entry_has_a_known_category_and_a_hint():
    """Categories are the five the dead-letter format documents; every hint says something."""
    assert {r.category for r in REASONS.values()} <= {
        "transient",
        "data",
        "configuration",
        "internal",
        "security",
    }
    assert [code for code, r in REASONS.items() if len(r.hint) < 10] == []


def test_http_statuses_are_classified_by_their_class():
    """HTTP_503 and HTTP_429 are transient; HTTP_404 is the deployment's to fix."""
    assert reason_info("HTTP_503").category == "transient" and reason_info("HTTP_429").category == "transient"
    assert reason_info("HTTP_404").category == "configuration"
    assert reason_info("NO_SUCH_REASON") is None and reason_info(None) is None


def test_the_signers_configuration_reasons_stay_configuration():
    """What the deployment must fix (keys, МЧД, organisations) is category configuration, as before the catalogue."""
    for code in (
        "ORGANIZATION_UNKNOWN",
        "ORGANIZATION_KEY_MISSING",
        "DOCTOR_KEY_UNKNOWN",
        "KEY_PASSWORD_INVALID",
        "KEY_PASSWORD_MISSING",
        "MCHD_REVOKED",
        "MCHD_EXPIRED",
        "MCHD_NOT_YET_VALID",
        "MCHD_WRONG_ORGANIZATION",
        "MCHD_WRONG_EMPLOYEE",
        "MCHD_POWERS_MISSING",
        "MCHD_SIGNATURE_INVALID",
    ):
        assert REASONS[code].category == "configuration", code
    assert REASONS["XSD_INVALID"].category == "data" and REASONS["UNEXPECTED_ERROR"].category == "internal"


def test_a_publication_outside_a_grant_goes_to_security():
    """ORGANIZATION_NOT_ALLOWED is category security (support and the security officer), not a data error."""
    assert REASONS["ORGANIZATION_NOT_ALLOWED"].category == "security"
    assert REASONS["KIND_NOT_VALIDATED"].category == "configuration"

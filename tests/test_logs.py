"""Logs carry no patient data and no key material, whatever a caller passes them."""

from __future__ import annotations

import io
import json

from services.logs import configure, get_logger, mask_text, redact_value


def _line(**kw) -> str:
    stream = io.StringIO()
    configure(fmt="json", stream=stream)
    get_logger("test").info("event received", **kw)
    return stream.getvalue()


def test_event_with_snils_and_full_name_logs_neither():
    """A created event carrying a СНИЛС and a full name is logged without either."""
    event = {
        "data": {
            "localUid": "144632",
            "patient": {
                "snils": "254-636-254 26",
                "family": "Иванов",
                "given": "Иван",
                "patronymic": "Иванович",
                "birthDate": "1980-05-17",
            },
            "note": "Пациент Иванов Иван Иванович, СНИЛС 25463625426",
        }
    }
    line = _line(created=event)
    for secret in ("254-636-254", "25463625426", "Иванов", "Иванович", "1980-05-17"):
        assert secret not in line
    assert "144632" in line  # the document id is not personal data and support needs it
    assert json.loads(line)["created"]["data"]["patient"]["snils"] == "***"


def test_key_material_and_passwords_are_dropped():
    """PEM blocks are removed and password fields vanish from the event."""
    line = _line(password="s3cret", detail="-----BEGIN PRIVATE KEY-----\nMIGhAgEA\n-----END PRIVATE KEY-----")
    assert "s3cret" not in line and "MIGhAgEA" not in line and "password" not in line


def test_snils_in_free_text_keeps_only_its_control_digits():
    """A СНИЛС inside a message is masked to its last two digits."""
    assert mask_text("СНИЛС 123-456-789 01 не найден") == "СНИЛС ***-***-*** 01 не найден"


def test_a_hex_identifier_with_eleven_digits_in_a_row_stays_searchable():
    """A localUid like 056e12345678901a38eb is not taken for a СНИЛС, while a bare СНИЛС still is."""
    assert mask_text("localUid 056e12345678901a38eb") == "localUid 056e12345678901a38eb"
    assert mask_text("snils=12345678901") == "snils=***-***-*** 01"


def test_nested_lists_are_masked_too():
    """Signers in a list are masked like any mapping."""
    out = redact_value({"signers": [{"snils": "12345678901", "role": "author"}]})
    assert out == {"signers": [{"snils": "***", "role": "author"}]}


def test_a_logger_made_at_import_follows_a_later_configure():
    """Module-level loggers pick up the configuration made at start-up."""
    log = get_logger("made-early")
    stream = io.StringIO()
    configure(fmt="json", stream=stream)
    log.info("hello", snils="12345678901")
    assert json.loads(stream.getvalue())["snils"] == "***"

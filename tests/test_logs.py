"""Logs carry no patient data and no key material, whatever a caller passes them."""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

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


@pytest.mark.parametrize(
    "spelling",
    [
        "Иванов Иван Иванович",
        "ИВАНОВ ИВАН ИВАНОВИЧ",
        "Иван Иванович Иванов",
        "Иванов Иван",
        "ИВАНОВ ИВАН",
        "Иван Иванов",
        "Иванов И.И.",
        "Иванов И. И.",
        "И.И. Иванов",
        "Иванов И.",
        "Иван Иванович",
        "Энс Анастасия",
        "Синица Ирина",
        "Спасских Мария",
        "Добровольская Вера",
    ],
)
def test_every_spelling_of_a_name_is_reduced_to_initials(spelling):
    """A person's name in free text, in capitals, without a patronymic or already initialled, loses its words."""
    line = _line(detail=f"пациент {spelling}, отделение 3", title=f"Пациент {spelling}")
    words = re.findall(r"[А-ЯЁа-яё]{2,}", spelling)
    assert words and not any(w in line for w in words), line
    assert "пациент" in line and "отделение 3" in line


@pytest.mark.parametrize("date", ["1980-05-17", "17.05.1980", "19800517"])
def test_a_birth_date_in_free_text_is_masked_in_each_spelling(date):
    """A bare calendar date (ISO, Russian, HL7) is masked wherever it appears in a message."""
    line = _line(error=f"Element 'birthTime', attribute 'value': '{date}' is not valid", note=f"д.р. {date}.")
    assert date not in line


def test_timestamps_identifiers_and_acronyms_stay_readable():
    """What support needs (timestamps, localUids, emdrIds, ИПС ЕГИСЗ) is not taken for personal data."""
    text = (
        "2026-11-22T10:00:00.123Z localUid 056e19800517a38eb emdrId 16.62.23.09.000014523 "
        "HL7 20260101100000+0300 ИПС ЕГИСЗ не ответил; Сервис предоставляющей системы недоступен"
    )
    assert mask_text(text) == text


@pytest.mark.parametrize(
    "key",
    [
        "s3_secret_key",
        "key_password",
        "sasl_password",
        "kafka_ssl_key_password",
        "n3_token",
        "access_token",
        "EMD_S3_SECRET_KEY",
        "clientSecret",
        "system_password_file_contents",
    ],
)
def test_secret_settings_are_dropped_by_name(key):
    """Any field whose name says password, secret or token is dropped with its value."""
    line = _line(**{key: "hunter2-value"})
    assert "hunter2-value" not in line and key not in line


def test_secret_settings_inside_text_lose_their_value():
    """A settings object's text (key=value, key: value) keeps the names and loses the secret values."""
    text = mask_text(
        "Settings(s3_secret_key='AKIA/x', key_password=\"p w\", sasl_password: pw1, region='ru')"
    )
    assert "AKIA" not in text and "p w" not in text and "pw1" not in text
    assert "region='ru'" in text


@dataclass
class _Config:
    endpoint: str
    s3_secret_key: str
    doctor: str


def test_values_that_are_not_strings_are_redacted_too():
    """An int СНИЛС, a dataclass with a secret and a name, an exception and a path are masked, not passed through."""
    line = _line(
        snils_number=25463625426,
        config=_Config("https://s3", "AKIA-SECRET", "Петров Пётр Петрович"),
        error=ValueError("СНИЛС 254-636-254 26 of Иванов Иван не найден"),
        where=Path("/srv/Иванов Иван Иванович/1980-05-17.xml"),
        count=3,
    )
    for leaked in ("25463625426", "254-636-254", "AKIA-SECRET", "Петров", "Иванов", "1980-05-17"):
        assert leaked not in line, leaked
    assert json.loads(line)["count"] == 3

"""structlog set-up: readable console for people, JSON for production, and no patient data.

The ``redact`` processor runs last before rendering, on every event from every module:

* values under keys that name personal data (``snils``, ``family``, ``birth_date``...) are masked;
* СНИЛС-shaped numbers anywhere in a string are masked (``***-***-*** 45``: the control digits
  stay so support can still tell two documents apart);
* a run of three capitalised Cyrillic words (a full name, Фамилия Имя Отчество) becomes ``Ф. И. О.``
  initials;
* anything that looks like key material (PEM blocks, keys named ``password``/``private_key``/``pin``)
  is dropped entirely, not masked.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog

#: keys whose values are personal data (compared case-insensitively, without "_" and "-")
PERSONAL_KEYS = frozenset(
    k.replace("_", "")
    for k in (
        "snils",
        "family",
        "given",
        "patronymic",
        "surname",
        "first_name",
        "last_name",
        "middle_name",
        "fio",
        "full_name",
        "birth_date",
        "birthdate",
        "birth_time",
        "birthtime",
        "patient_name",
        "given_name",
        "family_name",
        "name_family",
        "name_given",
        "dob",
    )
)
#: keys whose values are secrets: the key and its value are dropped from the event
SECRET_KEYS = frozenset(
    k.replace("_", "")
    for k in (
        "password",
        "passwd",
        "pin",
        "private_key",
        "privatekey",
        "secret",
        "secret_key",
        "key_material",
        "pfx",
        "pkcs12",
        "pkcs8",
        "token",
    )
)

# not inside a run of hex digits: localUids and MessageIDs are hex, and must stay searchable in the logs
_SNILS = re.compile(r"(?<![0-9A-Fa-f])(\d{3})[- ]?(\d{3})[- ]?(\d{3})[- ]?(\d{2})(?![0-9A-Fa-f])")
_FULL_NAME = re.compile(
    r"\b([А-ЯЁ])[а-яё]+(?:-[А-ЯЁ][а-яё]+)?\s+([А-ЯЁ])[а-яё]+\s+([А-ЯЁ])[а-яё]+(вич|вна|ична|чна|оглы|кызы)\b"
)
_PEM = re.compile(r"-----BEGIN [A-Z0-9 ]+-----.*?(-----END [A-Z0-9 ]+-----|$)", re.S)
_MASK = "***"


def _norm(key: str) -> str:
    return key.lower().replace("_", "").replace("-", "")


def mask_text(text: str) -> str:
    """Mask СНИЛС numbers, full Russian names and PEM blocks inside free text."""
    text = _PEM.sub("[key material removed]", text)
    text = _SNILS.sub(lambda m: f"***-***-*** {m.group(4)}", text)
    return _FULL_NAME.sub(lambda m: f"{m.group(1)}. {m.group(2)}. {m.group(3)}.", text)


def redact_value(value: Any) -> Any:
    """Recursively mask personal data and drop secrets in a logged value."""
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            nk = _norm(str(k))
            if nk in SECRET_KEYS:
                continue
            out[k] = _MASK if nk in PERSONAL_KEYS and v not in (None, "") else redact_value(v)
        return out
    if isinstance(value, (list, tuple)):
        return type(value)(redact_value(v) for v in value)
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    return value


def redact(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> dict[str, Any]:
    """structlog processor: see the module docstring."""
    redacted: dict[str, Any] = redact_value(event_dict)
    return redacted


def configure(*, fmt: str = "console", level: str = "info", stream: Any = None) -> None:
    """Configure structlog (and route stdlib logging through it) once per process."""
    stream = stream or sys.stderr
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer(ensure_ascii=False)
    else:
        renderer = structlog.dev.ConsoleRenderer(
            colors=stream.isatty() if hasattr(stream, "isatty") else False
        )
    numeric = logging.getLevelName(level.upper())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            numeric if isinstance(numeric, int) else logging.INFO
        ),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    # Libraries (aiokafka, kafka-python, httpx) log through stdlib: keep them quiet and masked.
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_MaskingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    # kafka-python logs every refused connection and retried metadata request as ERROR; the pipeline
    # reports (and raises on) the failures that matter itself, with context.
    logging.getLogger("kafka").setLevel(logging.CRITICAL)


class _MaskingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return mask_text(super().format(record))


def get_logger(name: str | None = None, **context: Any) -> Any:
    """A structlog logger bound to ``component=name`` and ``context``.

    It stays lazy (initial values, not ``.bind()``), so a module-level logger created at import
    still follows a ``configure()`` made later, at start-up.
    """
    if name:
        context = {"component": name, **context}
    return structlog.get_logger(**context)

"""structlog set-up: readable console for people, JSON for production, and no patient data or secrets.

The ``redact`` processor runs last before rendering, on every event from every module:

* values under keys that name personal data (``snils``, ``family``, ``birth_date``...) are masked;
* keys that name a secret are dropped with their value: the exact names of ``SECRET_KEYS`` and every key
  that contains ``password``, ``passwd``, ``secret``, ``token``, ``private_key`` or ``api_key``
  (``s3_secret_key``, ``key_password``, ``sasl_password``, ``n3_token``…);
* in free text (``mask_text``):

  - СНИЛС-shaped numbers are masked (``***-***-*** 45``: the control digits stay so support can still
    tell two documents apart);
  - a Russian person's name becomes initials, in every spelling a log could carry: Фамилия Имя Отчество,
    Имя Отчество Фамилия, ФАМИЛИЯ ИМЯ ОТЧЕСТВО, Фамилия Имя (a known given name, or a surname-shaped
    word), Имя Фамилия, Имя Отчество, and the initialled forms «Фамилия И. О.», «И.О. Фамилия», whose
    surname goes;
  - a calendar date that is not part of a timestamp (``1980-05-17``, ``17.05.1980``, ``19800517``) is
    masked: a birth date is one, and a log has no other reason to carry a bare date of birth;
  - ``name=value`` settings whose name says secret (``s3_secret_key='…'``, ``password: …``) lose the
    value; PEM blocks are removed;

* values that are not strings are not let through unseen: numbers are masked like text when they read as
  a СНИЛС or a date, and any other object (a dataclass, an exception, a path) is logged as its masked
  ``repr``, so a ``Settings`` or an organisation object never carries a secret or a name out.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog

from services import telemetry

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
        "birthday",
        "date_of_birth",
        "patient_name",
        "given_name",
        "family_name",
        "name_family",
        "name_given",
        "dob",
        "person",
        "doctor_name",
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
        "authorization",
        "cookie",
        "api_key",
    )
)
#: a key containing one of these (normalised) is a secret whatever else it says: s3_secret_key, sasl_password
SECRET_PARTS = ("password", "passwd", "secret", "token", "privatekey", "apikey")

# not inside a run of hex digits: localUids and MessageIDs are hex, and must stay searchable in the logs
_SNILS = re.compile(r"(?<![0-9A-Fa-f])(\d{3})[- ]?(\d{3})[- ]?(\d{3})[- ]?(\d{2})(?![0-9A-Fa-f])")
_PEM = re.compile(r"-----BEGIN [A-Z0-9 ]+-----.*?(-----END [A-Z0-9 ]+-----|$)", re.S)
_MASK = "***"

# --- names --------------------------------------------------------------------------------------------
#: common Russian given names: a word beside one of these is taken for a surname
GIVEN_NAMES = frozenset(
    """
    Александр Алексей Анатолий Андрей Антон Антонин Аркадий Арсений Артём Артем Борис Вадим Валентин Валерий
    Василий Виктор Виталий Владимир Владислав Всеволод Вячеслав Геннадий Георгий Глеб Григорий Даниил Денис
    Дмитрий Евгений Егор Иван Игорь Илья Кирилл Константин Лев Леонид Максим Марк Матвей Михаил Никита Николай
    Олег Павел Пётр Петр Роман Руслан Семён Семен Сергей Станислав Степан Тимофей Тимур Фёдор Федор Филипп
    Юрий Ярослав Эдуард Эльдар Рустам Ринат Айдар Азат Марат
    Александра Алина Алиса Алла Анастасия Анжела Анна Антонина Анфиса Валентина Валерия Вера Вероника Виктория
    Галина Дарья Диана Ева Евгения Екатерина Елена Елизавета Жанна Зинаида Зоя Инна Ирина Карина Кира Клавдия
    Кристина Ксения Лариса Любовь Людмила Маргарита Марина Мария Милана Надежда Наталья Наталия Нина Оксана
    Ольга Полина Раиса Светлана София Софья Таисия Тамара Татьяна Ульяна Юлия Яна Эльвира Гульнара Лилия
    """.upper().split()
)
#: a patronymic in any case (Иванович, Ивановича, Ивановной, Ильич, Кузьминична), or оглы / кызы
_PATRONYMIC = re.compile(r"(?:ОВИЧ|ЕВИЧ|ВИЧ|ИЧ|ОВН|ЕВН|ИЧН|ИНИЧ)[А-ЯЁ]{0,3}$|^(?:ОГЛЫ|КЫЗЫ)$")
#: a word shaped like a Russian surname (Петров, Петрова, Гражданский, Добровольская, Спасских, Шевченко)
_SURNAME = re.compile(
    r"(?:ОВ|ЕВ|ЁВ|ИН|ЫН|ОВА|ЕВА|ЁВА|ИНА|ЫНА|СКИЙ|СКАЯ|ЦКИЙ|ЦКАЯ|СКОЙ|ЦКОЙ|ЫХ|ИХ|ЕНКО|КО|УК|ЮК|ЯН|ДЗЕ|ШВИЛИ)$"
)
#: a run of words that may hold a name: capitalised or capital Cyrillic words and initials, side by side
_TOKEN = r"(?:[А-ЯЁ]\.|[А-ЯЁ][а-яё]+(?:-[А-ЯЁ][а-яё]+)?|[А-ЯЁ]{2,}(?:-[А-ЯЁ]{2,})?)"
_RUN = re.compile(rf"(?<![\w-]){_TOKEN}(?:(?:\s+|(?<=\.)){_TOKEN})+(?![\w-])")
_RUN_TOKEN = re.compile(_TOKEN)


def _kind(word: str) -> str:
    """initial | given | patronymic | surname (surname-shaped) | word."""
    u = word.upper()
    if word.endswith("."):
        return "initial"
    if u in GIVEN_NAMES:
        return "given"
    if len(u) > 3 and _PATRONYMIC.search(u):
        return "patronymic"
    if len(u) > 3 and _SURNAME.search(u):
        return "surname"
    return "word"


def _given_block(kinds: list[str], i: int, name: set[int]) -> int:
    """Имя [Отчество] at ``i``, with its surname before or after it, into ``name``; the index after it."""
    n, j = len(kinds), i
    while j + 1 < n and kinds[j + 1] == "patronymic":
        j += 1
    name.update(range(i, j + 1))
    after = j + 1 < n and kinds[j + 1] in ("surname", "word", "given")
    before = i > 0 and kinds[i - 1] in ("surname", "word") and i - 1 not in name
    if after and (kinds[j + 1] == "surname" or not before or kinds[i - 1] != "surname"):
        name.add(j + 1)
        j += 1
    elif before:
        name.add(i - 1)
    return j + 1


def _initials_block(kinds: list[str], i: int, name: set[int]) -> int:
    """Initials at ``i`` (Фамилия И. О. or И. О. Фамилия): their surname-shaped neighbour into ``name``, or
    both neighbours when neither is (a word too many rather than a surname shown); the index after them."""
    n, j = len(kinds), i
    while j + 1 < n and kinds[j + 1] == "initial":
        j += 1
    before = i > 0 and kinds[i - 1] != "initial" and i - 1 not in name
    if j + 1 < n and (kinds[j + 1] == "surname" or not before or kinds[i - 1] != "surname"):
        name.add(j + 1)
        j += 1
    if before and (kinds[i - 1] == "surname" or j == i or kinds[j] != "surname"):
        name.add(i - 1)
    return j + 1


def _name_words(words: list[str]) -> set[int]:
    """Which words of a run of capitalised words belong to a person's name."""
    kinds = [_kind(w) for w in words]
    name: set[int] = set()
    i = 0
    while i < len(kinds):
        if kinds[i] in ("given", "patronymic"):
            i = _given_block(kinds, i, name)
        elif kinds[i] == "initial":
            i = _initials_block(kinds, i, name)
        elif kinds[i] == "surname" and i + 1 < len(kinds) and kinds[i + 1] in ("word", "surname"):
            name.update((i, i + 1))  # Фамилия Имя, the given name not one we know
            i += 2
        else:
            i += 1
    return name


def _mask_names(match: re.Match[str]) -> str:
    text = match.group(0)
    tokens = list(_RUN_TOKEN.finditer(text))
    hide = _name_words([t.group(0) for t in tokens])
    if not hide:
        return text
    out, last = [], 0
    for k, t in enumerate(tokens):
        out.append(text[last : t.start()])
        out.append(f"{t.group(0)[0]}." if k in hide else t.group(0))
        last = t.end()
    out.append(text[last:])
    return "".join(out)


# --- dates --------------------------------------------------------------------------------------------
_YEAR = r"(?:19|20)\d\d"
_MONTH = r"(?:0[1-9]|1[0-2])"
_DAY = r"(?:0[1-9]|[12]\d|3[01])"
#: a calendar date that is not part of a timestamp or of a longer number / identifier: 1980-05-17,
#: 17.05.1980, 19800517 (an HL7 TS date)
_DATE = re.compile(
    rf"(?<![\w.:-])(?:{_YEAR}-{_MONTH}-{_DAY}(?![\w:]|[.+]\d|T|\s\d\d?:\d)"
    rf"|{_DAY}\.{_MONTH}\.{_YEAR}(?!\w|[.:]\d|\s\d\d?:\d))"
    rf"|(?<![0-9A-Fa-f.:-]){_YEAR}{_MONTH}{_DAY}(?![0-9A-Fa-f])"
)

# --- secrets in text ----------------------------------------------------------------------------------
_SECRET_WORD = re.compile(r"(?i)password|passwd|secret|token|private_?key|api_?key")
_SECRET_SETTING = re.compile(
    r"(?i)\b([\w.-]*(?:password|passwd|secret|token|private_?key|api_?key)[\w.-]*)"
    r"(\s*[=:]\s*)(?!\*\*\*)('[^']*'|\"[^\"]*\"|[^\s,;)}\]]+)"
)


def _norm(key: str) -> str:
    return key.lower().replace("_", "").replace("-", "")


def is_secret_key(key: str) -> bool:
    """Whether a field of this name holds a secret (its value is never shown)."""
    nk = _norm(key)
    return nk in SECRET_KEYS or any(part in nk for part in SECRET_PARTS)


def mask_text(text: str) -> str:
    """Mask СНИЛС numbers, Russian names (every spelling), bare dates, secret settings and PEM blocks in text."""
    text = _PEM.sub("[key material removed]", text)
    if _SECRET_WORD.search(text):  # the full pattern is slow: run it only where a secret's name occurs
        text = _SECRET_SETTING.sub(lambda m: f"{m.group(1)}{m.group(2)}{_MASK}", text)
    text = _SNILS.sub(lambda m: f"***-***-*** {m.group(4)}", text)
    text = _DATE.sub("****-**-**", text)
    return _RUN.sub(_mask_names, text)


def redact_value(value: Any) -> Any:
    """Recursively mask personal data and drop secrets in a logged value, whatever its type."""
    if isinstance(value, str):
        return mask_text(value)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if is_secret_key(str(k)):
                continue
            nk = _norm(str(k))
            out[k] = _MASK if nk in PERSONAL_KEYS and v not in (None, "") else redact_value(v)
        return out
    if isinstance(value, (list, tuple)):
        return type(value)(redact_value(v) for v in value)
    if isinstance(value, (set, frozenset)):
        return [redact_value(v) for v in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(value)} bytes>"
    if isinstance(value, (int, float)):
        text = str(value)
        masked = mask_text(text)
        return value if masked == text else masked
    # anything else (a dataclass, an exception, a path…) is rendered by repr: mask that text
    return mask_text(repr(value))


def redact(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> dict[str, Any]:
    """structlog processor: see the module docstring."""
    redacted: dict[str, Any] = redact_value(event_dict)
    return redacted


def add_trace_ids(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: ``trace_id`` and ``span_id`` of the span the line is logged in (tracing on,
    ``services.telemetry``), so a log line leads to its document's trace and back."""
    ids = telemetry.current_ids()
    if ids is not None:
        event_dict["trace_id"], event_dict["span_id"] = ids
    return event_dict


def _stdlib_component(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A stdlib record's logger name as ``component``, the key our own lines carry it under."""
    record = event_dict.get("_record")
    if record is not None:
        event_dict.setdefault("component", record.name)
    return event_dict


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
            add_trace_ids,
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
    # Libraries (aiokafka, kafka-python, httpx) log through stdlib: keep them quiet and masked. In JSON, every
    # stdlib record (the МИС library's producer.* among them) is a JSON line like ours: the same keys, trace ids
    # and redaction.
    handler = logging.StreamHandler(stream)
    if fmt == "json":
        handler.setFormatter(
            structlog.stdlib.ProcessorFormatter(
                foreign_pre_chain=[
                    structlog.stdlib.ExtraAdder(),
                    _stdlib_component,
                    structlog.processors.add_log_level,
                    structlog.processors.TimeStamper(fmt="iso", utc=True),
                    add_trace_ids,
                ],
                processors=[
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info,
                    redact,
                    renderer,
                ],
            )
        )
    else:
        handler.setFormatter(_MaskingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    # the МИС library's own lines follow the level of ours (it logs through stdlib: it has no structlog)
    logging.getLogger("producer").setLevel(numeric if isinstance(numeric, int) else logging.INFO)
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

"""The text of a request to СТП ЕГИСЗ about one dead letter, in Russian, ready to paste into the ticket form.

СТП asks for: the information system, the medical organisation (ФРМО OID), the subject of the Federation,
what happened step by step, and the request's MessageID from the SOAP Header with its time (or the request
itself: ``emd dlq show`` prints it). The steps come from the lifecycle store's attempts when it is at hand
(time, MessageID and outcome of every registerDocument), else from the dead letter's own headers. Times are
given in Moscow time with UTC beside them. No patient data: the text names the document by its localUid.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from producer.nsi import kind_by_code
from services.desk.deadletters import MOSCOW, DeadLetter, region_of
from services.logs import mask_text
from services.outcome import Outcome
from services.timestamps import for_people

_STAGE_WORDS = {
    "signer": "подписание документа в МИС (до отправки в РЭМД)",
    "sender": "отправка в РЭМД (registerDocument через ИПС ЕГИСЗ)",
    "acknowledger": "обработка результата регистрации (registerDocumentResult от РЭМД)",
}
_OUTCOME_WORDS = {
    Outcome.ACCEPTED: "принят ИПС (status=success), ожидался результат регистрации",
    Outcome.TRANSIENT: "временная ошибка",
    Outcome.PERMANENT: "отклонён",
    Outcome.REJECTED: "отклонён РЭМД",
    Outcome.REGISTERED: "зарегистрирован",
    Outcome.DUPLICATE: "повторная регистрация",
    None: "ответ не получен",
}


def _when(t: Any) -> str:
    return f"{for_people(t, MOSCOW)} МСК ({for_people(t)})" if t is not None else "время неизвестно"


def ticket_text(
    d: DeadLetter,
    *,
    attempts: Sequence[Any] = (),
    organization_name: str | None = None,
    client_entity_id: str | None = None,
) -> str:
    """The ticket for dead letter ``d``; ``attempts``: its lifecycle ``Attempt`` rows, oldest first."""
    kind = kind_by_code(d.kind) if d.kind else None
    code = d.code or d.reason or "—"
    region = region_of(d.organization)
    lines = [
        f"Тема: РЭМД — ошибка регистрации СЭМД, код {code}, MessageID {d.message_id or '—'}",
        "",
        "Здравствуйте! Просим помочь разобраться с ошибкой при регистрации электронного медицинского "
        "документа в РЭМД.",
        "",
        f"Информационная система: {d.system or '—'}"
        + (f" (clientEntityId {client_entity_id})" if client_entity_id else ""),
        f"Медицинская организация: {organization_name or '—'}, OID ФРМО {d.organization or '—'}",
        f"Субъект Российской Федерации: код {region}" if region else "Субъект Российской Федерации: —",
        f"Вид документа: {d.kind or '—'}" + (f" ({kind.name})" if kind else ""),
        f"Локальный идентификатор документа (localUid): {d.local_uid or '—'}",
        "",
        "Что произошло:",
    ]
    step = 0
    for a in attempts:
        step += 1
        outcome = _OUTCOME_WORDS.get(a.outcome, a.outcome or "ответ не получен")
        lines.append(
            f"{step}. {_when(a.sent_at)}: отправлен запрос registerDocument, MessageID {a.message_id}, "
            f"попытка {a.attempt}: {outcome}" + (f", код {a.code}" if a.code else "")
        )
    if not attempts:
        for mid in d.message_ids:
            step += 1
            lines.append(f"{step}. Отправлен запрос registerDocument, MessageID {mid}.")
    step += 1
    lines.append(
        f"{step}. {_when(d.failed_at)}: этап «{_STAGE_WORDS.get(d.stage, d.stage)}» завершился ошибкой "
        f"{code}: {mask_text(d.message) or 'без текста'}."
    )
    lines += [
        "",
        f"MessageID запроса (из заголовка SOAP): {d.message_id or '— (запрос в РЭМД не отправлялся)'}",
        f"Время: {_when(d.failed_at)}",
    ]
    if len(d.message_ids) > 1:
        lines.append(f"MessageID всех попыток: {', '.join(d.message_ids)}")
    lines += [
        f"Код ошибки: {code}",
        f"Текст ошибки: {mask_text(d.message) or '—'}",
        "",
        "Просим сообщить причину ошибки и что нужно исправить. Подписанный запрос можем приложить по запросу.",
    ]
    return "\n".join(lines) + "\n"

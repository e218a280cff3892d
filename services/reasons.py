"""Every reason code the pipeline raises, with who must act on it and what they should do.

A reason (``PermanentError(..., reason="XSD_INVALID")``) is a stable machine code for dashboards and
support; this catalogue is the one place that says, for each, its **category** — who must act — and a
**hint** for the support person reading the dead letter (``emd-dlt-category`` / ``emd-dlt-hint``,
docs/dead-letters.md):

* ``transient``: it may pass by itself (network, a РЭМД outage, a store restarting): wait, or replay;
* ``data``: the document or event is wrong: the МИС must send a corrected document (under the same localUid, which
  РЭМД has not registered: docs/dead-letters.md, "A corrected document");
* ``configuration``: the deployment is wrong (keys, МЧД, endpoints): fix the organisations file, replay;
* ``internal``: a bug or a broken invariant of ours: escalate to the developers;
* ``security``: a МИС tried to publish outside its grant (docs/security.md): support and the security officer
  look at it, and the МИС's operator explains it; replayed only once the grant is found to be the mistake.

РЭМД's own codes (НСИ 1.2.643.5.1.13.13.99.2.305) have their category and a Russian hint in
``services.remd.codes``; a failure that carries one (``remd_code``) takes its category and hint from
there, and the reason here (``REMD_REJECTED``, ``SOAP_FAULT``…) is only the fallback.
``tests/test_reasons.py`` checks that every reason raised anywhere in the code is in this table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

__all__ = ["Category", "Reason", "REASONS", "reason_info"]

Category = Literal["transient", "data", "configuration", "internal", "security"]


@dataclass(frozen=True)
class Reason:
    code: str
    category: Category
    hint: str


# table shorthands
T: Final = "transient"
D: Final = "data"
C: Final = "configuration"
I: Final = "internal"  # noqa: E741
S: Final = "security"

_FIX_DOCUMENT = (
    "МИС должна исправить документ и отправить его заново (под тем же localUid: он не зарегистрирован)"
)
_FIX_SIGNATURE = "Подпись врача, переданная МИС, не проверяется: МИС должна подписать документ заново"
_FIX_KEYS = (
    "Исправить ключи, сертификаты или МЧД организации в файле организаций, затем повторить (emd dlq replay)"
)
_WAIT = "Проходящий сбой: дождаться восстановления и повторить (emd dlq replay)"
_BAD_ANSWER = "Ответ ИПС/РЭМД не разобран: сохранить MessageID и при повторении обратиться в СТП ЕГИСЗ"
_BUG = "Внутренняя ошибка конвейера: передать запись разработчикам"

_TABLE: tuple[tuple[str, Category, str], ...] = (
    # --- the event contract and the document (signer, producer) ------------------------------------
    ("EVENT_INVALID", D, "Событие не соответствует контракту docs/schemas: исправить МИС-публикатор"),
    (
        "EVENT_DOCUMENT_MISMATCH",
        D,
        "Поля события расходятся с самим СЭМД: МИС должна передать согласованные данные",
    ),
    ("INVALID_DOCUMENT", D, _FIX_DOCUMENT),
    (
        "KEY_NOT_LOCAL_UID",
        D,
        "Ключ записи Kafka не равен localUid документа: исправить МИС-публикатор (docs/integration.md)",
    ),
    (
        "HEADER_MISSING",
        D,
        "В записи нет обязательного заголовка emd-event-type / emd-trace-id / emd-schema-version: исправить "
        "МИС-публикатор (docs/integration.md)",
    ),
    (
        "HEADER_MISMATCH",
        D,
        "Заголовок записи расходится с полем события (type, traceId, schemaVersion): исправить МИС-публикатор",
    ),
    (
        "KIND_NOT_VALID_ON_DATE",
        D,
        "Вид документа (НСИ 1520) не действует на дату создания документа: МИС должна датировать документ "
        "моментом его создания или выбрать действующую редакцию вида",
    ),
    (
        "ORGANIZATION_NOT_ALLOWED",
        S,
        "МИС опубликовала документ для организации или systemId вне своего допуска (mis в файле "
        "организаций): сообщить ответственному за безопасность и оператору МИС. Если МИС действительно "
        "обслуживает организацию, добавить её в допуск и повторить (emd dlq replay); иначе не повторять",
    ),
    (
        "KIND_NOT_VALIDATED",
        C,
        "Для этого вида СЭМД в поставке нет XSD и Schematron: документ не проверен и не подписан. Добавить "
        "схему вида или разрешить организации такие виды (allow_unvalidated_kinds), затем emd dlq replay",
    ),
    ("NOT_XML", D, _FIX_DOCUMENT),
    ("NOT_CDA", D, _FIX_DOCUMENT),
    ("DTD_FORBIDDEN", D, "Документ содержит DOCTYPE: МИС должна отправить СЭМД без DTD"),
    ("ENTITY_FORBIDDEN", D, "Документ содержит сущности XML: МИС должна отправить СЭМД без них"),
    ("ENTITY_EXPANSION_FORBIDDEN", D, "Документ содержит сущности XML: МИС должна отправить СЭМД без них"),
    ("XXE_FORBIDDEN", D, "Документ ссылается на внешние ресурсы (XXE): МИС должна отправить СЭМД без них"),
    ("TOO_LARGE", D, "Документ больше допустимого размера (EMD_MAX_DOCUMENT_BYTES)"),
    ("DOCUMENT_TOO_LARGE", D, "Документ больше допустимого размера (EMD_MAX_DOCUMENT_BYTES)"),
    ("XSD_INVALID", D, _FIX_DOCUMENT),
    ("SCHEMATRON_INVALID", D, _FIX_DOCUMENT),
    ("DOCUMENT_CORRUPT", D, "Байты документа в хранилище не совпадают с хешем события: опубликовать заново"),
    ("DOCUMENT_MISSING", D, "Документа нет в хранилище claim-check: МИС должна опубликовать его заново"),
    ("DOCUMENT_REF_INVALID", D, "Ссылка claim-check в событии неверна: исправить МИС-публикатор"),
    ("SIGNER_SNILS_MISSING", D, "У подписанта в СЭМД нет СНИЛС: МИС должна указать его"),
    ("SIGNER_SNILS_MISMATCH", D, "СНИЛС подписанта не совпадает с сертификатом подписи"),
    ("SIGNING_TIME_IN_FUTURE", D, "Время подписи позже текущего: проверить часы на рабочем месте врача"),
    (
        "LOCAL_UID_REUSED",
        D,
        "Под этим localUid РЭМД уже принял или зарегистрировал другой документ: изменённый СЭМД — только с "
        "новым localUid",
    ),
    ("DOCTOR_SIGNATURE_MISSING", D, "МИС не приложила подпись врача (режим подписи mis)"),
    ("NO_PERSONAL_SIGNATURE", D, "В событии нет ни одной подписи врача"),
    # --- signatures (CAdES) --------------------------------------------------------------------------
    ("SIGNATURE_DECODING_ERROR", D, _FIX_SIGNATURE),
    ("SIGNATURE_INVALID", D, _FIX_SIGNATURE),
    (
        "DIGEST_MISMATCH",
        D,
        "Подпись сделана над другими байтами документа: МИС должна подписать именно этот документ",
    ),
    ("MULTIPLE_SIGNERS", D, _FIX_SIGNATURE),
    ("NO_END_ENTITY_CERTIFICATE", D, _FIX_SIGNATURE),
    ("NO_SIGNED_ATTRIBUTES", D, _FIX_SIGNATURE),
    ("NO_SIGNING_TIME", D, _FIX_SIGNATURE),
    ("ESS_CERT_MISSING", D, _FIX_SIGNATURE),
    ("ESS_CERT_MISMATCH", D, _FIX_SIGNATURE),
    ("UNKNOWN_ALGORITHM", D, "Подпись не ГОСТ Р 34.10-2012: нужна УКЭП по ГОСТ"),
    ("INVALID_CERT_KEY_USAGE", D, "Сертификат не разрешает подпись: нужен сертификат УКЭП"),
    ("CERT_EXPIRED", D, "Сертификат подписанта истёк на момент подписи: выпустить новый и подписать заново"),
    ("CERT_NOT_YET_VALID", D, "Сертификат подписанта ещё не действовал на момент подписи"),
    ("CERT_INVALID", C, "Сертификат не читается: проверить файл сертификата в файле организаций"),
    # --- keys, МЧД, organisations (the deployment) ------------------------------------------------------
    ("ORGANIZATION_UNKNOWN", C, "Организации нет в файле организаций: подключить клинику (emd clinic)"),
    ("ORGANIZATION_KEY_MISSING", C, _FIX_KEYS),
    (
        "DOCTOR_KEY_UNKNOWN",
        C,
        "Нет ключа врача с этим СНИЛС (режим подписи server): добавить в файл организаций",
    ),
    (
        "SERVER_SIGNING_NOT_CONSENTED",
        C,
        "Согласие врача на подпись его ключом на сервере не записано (server_signing_consent в файле "
        "организаций): получить согласие или перевести врача на подпись в МИС, затем emd dlq replay",
    ),
    (
        "KEY_NOT_HELD",
        C,
        "Ключ нужен процессу, роль которого его не держит: ключи врачей и организации — только у signer, ключи ИС "
        "— у sender, status и callbacks (docs/security.md, «Keys per pod»); проверить роль и Secrets пода",
    ),
    ("KEY_PASSWORD_INVALID", C, _FIX_KEYS),
    ("KEY_PASSWORD_MISSING", C, _FIX_KEYS),
    ("KEY_INVALID", C, _FIX_KEYS),
    ("KEY_UNSUPPORTED", C, _FIX_KEYS),
    ("KEY_CERT_MISMATCH", C, _FIX_KEYS),
    ("CIPHER_UNAVAILABLE", C, "В OpenSSL нет шифра контейнера ключа: установить libengine-gost-openssl"),
    ("MCHD_INVALID", C, _FIX_KEYS),
    ("MCHD_REVOKED", C, "МЧД отозвана: оформить новую МЧД и указать её в файле организаций"),
    ("MCHD_EXPIRED", C, "Срок МЧД истёк: оформить новую МЧД"),
    ("MCHD_NOT_YET_VALID", C, "МЧД ещё не действует"),
    ("MCHD_WRONG_ORGANIZATION", C, "МЧД выдана другой организацией"),
    ("MCHD_WRONG_EMPLOYEE", C, "МЧД выдана не тому сотруднику, чей сертификат подписывает"),
    ("MCHD_POWERS_MISSING", C, "В МЧД нет полномочия на подпись ЭМД"),
    ("MCHD_SIGNATURE_INVALID", C, "Подпись руководителя на МЧД не проверяется"),
    ("MCHD_REVOCATION_UNAVAILABLE", T, "Список отозванных МЧД недоступен: проверить файл, затем повторить"),
    (
        "CLINIC_NOT_PROMOTED",
        C,
        "Клиника не переведена в промышленный контур: проверить её (emd clinic test), "
        "перевести (emd clinic promote), затем emd dlq replay --reason CLINIC_NOT_PROMOTED",
    ),
    (
        "ONBOARDING_REFUSED",
        C,
        "Переход клиники не разрешён: сначала успешная проверка на тестовом контуре "
        "(emd clinic test), затем emd clinic promote",
    ),
    (
        "NO_SAMPLE",
        C,
        "Нет документа для проверочной отправки: указать его (emd clinic test OID --document F)",
    ),
    (
        "REMD_NOT_CONFIGURED",
        C,
        "У организации нет настроек РЭМД (endpoint, ключ ИС, clientEntityId, callback_url)",
    ),
    ("CONFIGURATION_ERROR", C, "Ошибка конфигурации: см. сообщение"),
    (
        "MIS_ID_INVALID",
        C,
        "Идентификатор МИС (mis.id) недопустим: строчные латинские буквы, цифры и дефис; не dlt и не retry",
    ),
    ("LIFECYCLE_BACKEND_UNKNOWN", C, "Неизвестная схема EMD_LIFECYCLE_STORE"),
    ("SCHEMA_BROKEN", C, "Схема СЭМД в поставке повреждена: переустановить"),
    ("SCHEMATRON_ENGINE_ERROR", C, "Правила Schematron не выполняются: проверить поставку (saxonche)"),
    ("SCHEMATRON_UNSUPPORTED", C, "Правила Schematron этого вида не поддерживаются"),
    # --- the N3.Health route: N3's own codes, checked at the signer before signing (services.pipeline.n3_route)
    (
        "N3_KIND_UNMAPPED",
        C,
        "У вида документа нет кода в справочнике N3 1.2.643.2.69.1.1.1.195: направить документ через ИПС "
        "или указать более новую выгрузку справочника (n3_dictionary в файле организаций), затем emd dlq replay",
    ),
    (
        "N3_KIND_NOT_EXPORTED",
        C,
        "N3 не передаёт документы этого типа в РЭМД (allowRemdExport в справочнике 195): направить через ИПС "
        "или уточнить у Нетрики; после обновления справочника — emd dlq replay",
    ),
    (
        "N3_KIND_AMBIGUOUS",
        C,
        "Виду документа соответствует несколько кодов справочника 195: уточнить у Нетрики, какой передавать",
    ),
    (
        "N3_DOCTOR_UNMAPPED",
        C,
        "У врача нет кодов N3 (IdSpeciality, IdPosition): добавить их в remd.n3.doctors файла организаций, "
        "затем emd dlq replay",
    ),
    (
        "N3_PERSON_INCOMPLETE",
        D,
        "В документе нет сведений, обязательных для N3 (СНИЛС, ФИО, дата рождения, пол пациента; СНИЛС, ФИО, "
        "идентификатор врача): МИС должна дополнить документ",
    ),
    (
        "N3_REQUEST_REFUSED",
        D,
        "N3 отклонил запрос (RequestFault): см. PropertyName и сообщение; при неясности — в поддержку Нетрики "
        "с X-Request-ID и localUid",
    ),
    ("N3_SERVER_FAULT", T, "Сбой на стороне N3: дождаться восстановления и повторить (emd dlq replay)"),
    (
        "N3_PATIENT_UNKNOWN",
        T,
        "N3 не знает пациента: следующая попытка сначала отправит PixService.AddPatient",
    ),
    # --- talking to ИПС / РЭМД (sender, status) ---------------------------------------------------------
    ("CONNECT_ERROR", T, _WAIT),
    ("TIMEOUT", T, _WAIT),
    ("CONNECTION_RESET", T, _WAIT),
    ("HTTP_CLIENT_ERROR", T, _WAIT),
    ("CIRCUIT_OPEN", T, _WAIT),
    ("RATE_LIMIT", T, "ИПС ограничила частоту запросов: повтор не раньше чем через минуту"),
    ("REMD_TRANSIENT", T, _WAIT),
    ("MALFORMED_ANSWER", T, _BAD_ANSWER),
    ("REMD_ERROR_WITHOUT_CODE", D, _BAD_ANSWER),
    ("REMD_REJECTED", D, "РЭМД отклонил документ: см. код и сообщение РЭМД"),
    ("SOAP_FAULT", D, "ИПС ответила SOAP Fault: см. код; при повторении обратиться в СТП ЕГИСЗ с MessageID"),
    ("REQUEST_BUILD_FAILED", D, "Запрос registerDocument не собран из события: проверить данные документа"),
    (
        "RETRIES_EXHAUSTED",
        T,
        "Попытки исчерпаны: проверить доступность ИПС; с MessageID обратиться в СТП ЕГИСЗ",
    ),
    ("REGISTRY_LOOKUP_FAILED", T, _WAIT),
    ("REGISTRATION_UNCONFIRMED", T, "РЭМД ещё не показывает регистрацию документа: ждать"),
    ("CALLBACK_UNCORRELATED", T, "Обратный вызов не сопоставлен ни с одним документом: проверить MessageID"),
    (
        "NO_ACKNOWLEDGMENT",
        T,
        "Нет ответа РЭМД: документ не найден поиском или его регистрационная запись не получена (getRegistryItem): "
        "передать MessageID в СТП ЕГИСЗ",
    ),
    ("SOAP_NOT_ENVELOPE", D, _BAD_ANSWER),
    ("SOAP_EMPTY_BODY", D, _BAD_ANSWER),
    ("SOAP_UNEXPECTED", D, _BAD_ANSWER),
    ("SOAP_MISSING_ELEMENT", D, _BAD_ANSWER),
    ("SOAP_UNEXPECTED_ELEMENT", D, _BAD_ANSWER),
    ("SOAP_BAD_BASE64", D, _BAD_ANSWER),
    ("SOAP_CHECKSUM_MISMATCH", D, _BAD_ANSWER),
    ("WSS_MISSING", D, "Сообщение не подписано WS-Security"),
    ("WSS_MALFORMED", D, "Подпись WS-Security не разобрана"),
    ("WSS_SIGNATURE_INVALID", D, "Подпись WS-Security не проверяется: возможно, подделка"),
    ("WSS_DIGEST_MISMATCH", D, "Подписанные части сообщения изменены: возможно, подделка"),
    ("WSS_NOT_COVERED", D, "Подпись WS-Security не покрывает тело или заголовки"),
    ("WSS_EXPIRED", D, "Метка времени WS-Security устарела: возможно, повтор старого сообщения"),
    ("WSS_UNTRUSTED_CERTIFICATE", C, "Сертификат ИПС не из закреплённых (EMD_IPS_CERTIFICATES)"),
    # --- our own state and stores ---------------------------------------------------------------------
    ("LIFECYCLE_STORE_UNAVAILABLE", T, "База жизненного цикла недоступна: проверить PostgreSQL"),
    (
        "LIFECYCLE_SCHEMA_MISSING",
        C,
        "Схема базы жизненного цикла не создана: выполнить emd lifecycle migrate (Job миграций)",
    ),
    (
        "DESK_STORE_UNAVAILABLE",
        T,
        "База службы поддержки (состояния клиник) недоступна: проверить PostgreSQL",
    ),
    ("DOCUMENT_STORE_UNAVAILABLE", T, "Хранилище документов (claim-check) недоступно: проверить S3/диск"),
    ("PUBLISH_FAILED", T, "Брокер Kafka не подтвердил запись: повторить публикацию"),
    (
        "SIGNING_PROCESS_LOST",
        T,
        "Процесс подписи завершился во время работы: документ будет подписан повторно",
    ),
    ("LIFECYCLE_CONFLICT", I, "Переход состояния запрещён: документ уже обработан другой репликой"),
    ("SIGNED_EVENT_MISSING", I, _BUG),
    ("UNEXPECTED_ERROR", I, _BUG),
    # the base classes' own reasons (raised without a specific one)
    ("TRANSIENT_ERROR", T, _WAIT),
    ("PERMANENT_ERROR", D, "См. сообщение"),
)

REASONS: dict[str, Reason] = {code: Reason(code, category, hint) for code, category, hint in _TABLE}


def reason_info(code: str | None) -> Reason | None:
    """The catalogue entry of ``code`` (``HTTP_503``, ``HTTP_404``… by their status class), or ``None``."""
    if not code:
        return None
    if code in REASONS:
        return REASONS[code]
    if code.startswith("HTTP_") and code[5:].isdigit():
        status = int(code[5:])
        if status >= 500 or status in (408, 429):
            return Reason(code, "transient", _WAIT)
        return Reason(code, "configuration", "Проверить remd.endpoint организации и доступ ИС к ИПС")
    return None

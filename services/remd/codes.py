"""НСИ 1.2.643.5.1.13.13.99.2.305 «РЭМД. Классификатор кодов сообщений» (v3.18): 127 codes, classified.

РЭМД reports every failure as a mnemonic ``code`` (``NO_SNILS``) plus a free text with bracketed
parameters; logic keys on the code only. Each code gets one category, which decides what the
pipeline does with it:

* ``transient``      — may pass on its own: retry with backoff (``RATE_LIMIT``: not before a minute);
* ``data``           — the document or its registration data are wrong: fix in the МИС, send again;
* ``configuration``  — the ИС, organisation, certificate or registry records (ФРМО/ФРМР/ГИП) are set up
  wrong: escalate to the administrator or to СТП ЕГИСЗ; resending the same thing will not help.

Categories are ours (the "retry" column of ``docs/protocol.md#message-codes`` plus judgement); ids,
mnemonics and meanings follow the classifier, meanings condensed. Id 88 (a duplicate
``FRLLO_RELISE_POSITION_ERROR``) is left out, as the peer source does. РЭМД emits ``RECIPIENT_*`` where the
classifier spells ``RECEPIENT_*``; both are accepted. A code not in the table is classified ``configuration``
and flagged ``unknown``: it means the classifier has a newer version than this table, which a person must
look at.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Literal

__all__ = ["CATEGORIES", "CODES", "CodeInfo", "NSI_OID", "NSI_VERSION", "by_id", "classify"]

NSI_OID = "1.2.643.5.1.13.13.99.2.305"
NSI_VERSION = "3.18"

Category = Literal["transient", "data", "configuration"]
CATEGORIES: tuple[Category, ...] = ("transient", "data", "configuration")

#: RATE_LIMIT says "retry in a minute or later"
RATE_LIMIT_DEFER_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class CodeInfo:
    """One classifier entry. ``unknown`` is True for codes this table does not know."""

    id: int | None
    code: str
    meaning: str
    category: Category
    hint: str
    group: str = "registration"  # registration | online_orders | frllo
    unknown: bool = False
    #: minimum delay before a retry, when the code itself asks for one
    retry_after: float | None = None

    @property
    def transient(self) -> bool:
        return self.category == "transient"


T: Final = "transient"
D: Final = "data"
C: Final = "configuration"

# (id, code, category, meaning in Russian, hint for support staff)
_REGISTRATION: tuple[tuple[int, str, Category, str, str], ...] = (
    (
        1,
        "ACCESS_DENIED",
        C,
        "У запрашивающей ИС нет права на получение документа",
        "Проверить права ИС в РЭМД; при необходимости обратиться в СТП ЕГИСЗ",
    ),
    (
        2,
        "ATTRIBUTE_MISMATCH",
        D,
        "Метаданные документа, переданного предоставляющей ИС, не совпадают с зарегистрированными",
        "МИС отдала по getDocumentFile не тот документ или изменённую версию",
    ),
    (
        3,
        "CAN_NOT_ASSOCIATE",
        D,
        "Недопустимая связь между документами",
        "Проверить ссылки на связанные документы в запросе",
    ),
    (
        4,
        "CANT_BUILD_CERT_CHAIN_TO_ACCREDITED_CA_CERT",
        C,
        "Не удалось построить цепочку сертификатов до аккредитованного УЦ",
        "Сертификат подписанта выпущен неаккредитованным УЦ или звено цепочки недействительно: перевыпустить сертификат",
    ),
    (
        5,
        "CANT_REG_VERSION",
        D,
        "Регистрация новой версии документа невозможна",
        "Проверить, что предыдущая версия зарегистрирована и связь версий указана верно",
    ),
    (
        6,
        "DIGEST_MISMATCH",
        D,
        "Хеш документа, полученного из предоставляющей системы, не совпадает с зарегистрированным",
        "МИС отдала по getDocumentFile не те байты, что были подписаны",
    ),
    (
        7,
        "DISABLED_RMIS",
        C,
        "ИС зарегистрирована в РЭМД, но не активна",
        "Активировать ИС в РЭМД через СТП ЕГИСЗ",
    ),
    (
        8,
        "DOC_DATE_MISMATCH_CERT_NOT_AFTER",
        D,
        "Документ создан позже окончания срока действия сертификата ЭП",
        "Подписать документ действующим сертификатом",
    ),
    (
        9,
        "DOC_DATE_MISMATCH_CERT_NOT_BEFORE",
        D,
        "Документ создан раньше начала срока действия сертификата ЭП",
        "Проверить дату создания документа и сертификат подписанта",
    ),
    (
        10,
        "INCONSISTENT_DIGESTS",
        D,
        "Подписи с одинаковым алгоритмом хеширования содержат разные хеши документа",
        "Подписи сделаны над разными версиями файла: переподписать одни и те же байты",
    ),
    (
        11,
        "INTERNAL_ERROR",
        T,
        "Внутренняя ошибка РЭМД",
        "Повторить позже; при повторении обратиться в СТП ЕГИСЗ",
    ),
    (
        12,
        "INVALID_CERT_KEY_USAGE",
        C,
        "Назначение ключа сертификата ЭП не соответствует требованиям",
        "Перевыпустить сертификат с нужным назначением ключа",
    ),
    (
        13,
        "INVALID_CONTENT",
        D,
        "Формат файла документа не соответствует виду документа",
        "Проверить формат СЭМД для указанного вида",
    ),
    (
        14,
        "INVALID_PLUGGABLE_ATTRS",
        D,
        "Дополнительные атрибуты не соответствуют схеме вида документа",
        "Исправить дополнительные атрибуты в запросе",
    ),
    (
        15,
        "MIS_ERROR",
        T,
        "Ошибка сервиса системы, предоставляющей документ",
        "Проверить, что наш getDocumentFile отвечает без ошибок; повторить",
    ),
    (
        16,
        "MIS_NOT_AVAILABLE",
        T,
        "Сервис системы, предоставляющей документ, недоступен",
        "Проверить доступность нашего адреса обратного вызова через ИПС; повторить",
    ),
    (
        17,
        "NO_DOCUMENT_KIND_ON_DATE",
        D,
        "Дата создания документа вне периода действия вида документа",
        "Проверить код вида документа и дату создания",
    ),
    (
        18,
        "NO_END_ENTITY_CERTIFICATE",
        D,
        "В подписи нет сертификата подписанта",
        "Подпись должна содержать сертификат подписанта",
    ),
    (
        19,
        "NO_RMIS",
        C,
        "ИС не зарегистрирована в РЭМД",
        "Зарегистрировать ИС в РЭМД; проверить clientEntityId",
    ),
    (
        20,
        "NO_ROLE_POLICY_ON_DATE",
        D,
        "На эту дату роль не может подписывать документы этого вида",
        "Проверить роль подписанта и вид документа",
    ),
    (21, "NO_SIGNATURE", D, "У документа нет подписей", "Передать подписи в запросе на регистрацию"),
    (
        22,
        "NO_SNILS",
        D,
        "Наличие СНИЛС пациента не соответствует требованиям вида документа",
        "Указать СНИЛС пациента (или убрать, если вид его не допускает)",
    ),
    (
        23,
        "NO_SPECIALITY",
        D,
        "Наличие специальности подписанта не соответствует требованиям вида документа",
        "Указать специальность подписанта",
    ),
    (
        24,
        "NOT_UNIQUE_ASSOCIATION",
        D,
        "Такая связь документов уже зарегистрирована",
        "Не регистрировать связь повторно",
    ),
    (
        25,
        "NOT_UNIQUE_PROVIDED_ID",
        D,
        "Документ с таким идентификатором МИС уже зарегистрирован",
        "Не отправлять повторно: найти регистрацию через searchRegistryItem по localUid; изменённый СЭМД "
        "регистрируется только под новым localUid",
    ),
    (26, "OBJECT_NOT_FOUND", D, "Не найдена запись справочника", "Проверить коды НСИ в запросе"),
    (
        27,
        "ORG_NOT_FOUND_IN_FRMO",
        C,
        "Организация не найдена в ФРМО",
        "Проверить OID организации и её запись в ФРМО",
    ),
    (
        28,
        "ORG_SIGNATURE_OCCURRENCE_MISMATCH",
        D,
        "Наличие подписи МО не соответствует требованиям вида документа",
        "Добавить подпись МО (или убрать, если вид её не допускает)",
    ),
    (
        29,
        "PATIENT_CREATION_ERROR",
        T,
        "Ошибка создания пациента в ГИП",
        "Повторить позже; при повторении обратиться в СТП ЕГИСЗ",
    ),
    (
        30,
        "PATIENT_MPI_MISMATCH",
        D,
        "Данные пациента отличаются от записи в ГИП с тем же локальным идентификатором",
        "Сверить данные пациента и его локальный идентификатор",
    ),
    (
        31,
        "PATIENT_OCCURRENCE_MISMATCH",
        D,
        "Наличие сведений о пациенте не соответствует требованиям вида документа",
        "Проверить блок сведений о пациенте",
    ),
    (
        32,
        "PERSON_CARD_NOT_FOUND",
        C,
        "Личное дело сотрудника отсутствует в ФРМР",
        "Кадровой службе завести личное дело в ФРМР",
    ),
    (33, "PERSON_NOT_FOUND", C, "Сотрудник не найден в ФРМР", "Кадровой службе внести сотрудника в ФРМР"),
    (
        34,
        "PERSON_POST_IN_FRMR_MISMATCH",
        D,
        "Должность сотрудника не совпадает с должностью в ФРМР",
        "Сверить код должности в МИС с ФРМР",
    ),
    (
        35,
        "PLUGGABLE_ATTRS_OCCURRENCE_MISMATCH",
        D,
        "Наличие дополнительных атрибутов не соответствует требованиям вида документа",
        "Добавить или убрать дополнительные атрибуты",
    ),
    (
        36,
        "POSITION_TO_ROLE_MISMATCH",
        D,
        "Должность подписанта несовместима с его ролью",
        "Проверить роль и должность подписанта",
    ),
    (
        37,
        "REGISTRY_ITEM_NOT_FOUND",
        D,
        "Запись регистра не найдена",
        "Проверить регистрационный номер (emdrId)",
    ),
    (
        38,
        "RMIS_REGION_MISMATCH",
        C,
        "Регион организации не совпадает с регионом ИС",
        "Проверить регистрацию ИС и организации; обратиться в СТП ЕГИСЗ",
    ),
    (
        39,
        "ROLE_OCCURRENCE_MISMATCH",
        D,
        "Число подписей сотрудников с требуемой ролью не соответствует требованиям вида",
        "Проверить состав подписантов и их роли",
    ),
    (
        40,
        "RUNTIME_ERROR",
        T,
        "Непредвиденная ошибка РЭМД",
        "Повторить позже; при повторении обратиться в СТП ЕГИСЗ",
    ),
    (
        41,
        "SIGNATURE_DECODING_ERROR",
        D,
        "Подпись не удаётся декодировать",
        "Проверить кодировку подписи (base64 DER CMS)",
    ),
    (
        42,
        "SIGNATURE_VERIFICATION_ERROR",
        D,
        "Подпись неверна",
        "Переподписать документ; проверить, что подписаны те же байты",
    ),
    (
        43,
        "SIGNER_ORG_MISMATCH",
        C,
        "Организация подписанта отличается от регистрирующей, и у ИС нет разрешения",
        "Проверить сертификат подписанта или получить разрешение для ИС",
    ),
    (44, "UNKNOWN_ALGORITHM", C, "Неподдерживаемый алгоритм подписи", "Подписывать ГОСТ Р 34.10-2012"),
    (
        45,
        "VALUE_MISMATCH_METADATA_AND_CERTIFICATE",
        D,
        "Данные сотрудника или МО в запросе не совпадают с сертификатом",
        "Сверить СНИЛС/ФИО/ОГРН в запросе с сертификатом",
    ),
    (
        46,
        "VALUE_MISMATCH_METADATA_AND_FRMR",
        D,
        "Данные сотрудника не совпадают с ФРМР",
        "Сверить данные сотрудника в МИС с ФРМР",
    ),
    (
        47,
        "WRONG_CREATION_DATE",
        D,
        "Дата создания документа позже даты регистрации",
        "Проверить дату создания и часовой пояс",
    ),
    (
        48,
        "WRONG_MESSAGE_ID",
        D,
        "Асинхронный запрос файла с указанным messageID не найден",
        "Ответ на запрос файла должен ссылаться на MessageID запроса",
    ),
    (
        49,
        "VALIDATION_ERROR",
        D,
        "Ошибка проверки значения (подробности XSD/Schematron в тексте)",
        "Исправить СЭМД или запрос по тексту сообщения",
    ),
    (
        50,
        "NO_ORG_ON_DATE",
        C,
        "Организация недействительна на дату создания документа",
        "Проверить период действия записи организации в ФРМО",
    ),
    (51, "SIGNATURE_DUPLICATION", D, "Подпись передана дважды", "Убрать повторяющуюся подпись"),
    (
        52,
        "MULTIPLE_SIGNERS",
        D,
        "В контейнере подписи больше одного подписанта",
        "Каждая подпись — отдельный контейнер с одним подписантом",
    ),
    (
        53,
        "WRONG_SIGNATURE_FORMAT",
        D,
        "Неподдерживаемый формат электронной подписи",
        "Отсоединённая CMS (CAdES-BES) по ГОСТ Р 34.10-2012",
    ),
    (54, "NO_DEPARTMENT", D, "Нет сведений о подразделении организации", "Указать подразделение"),
    (
        55,
        "INVALID_DOC_CONTENT_TYPE",
        D,
        "Формат документа недопустим для вида документа",
        "Проверить формат файла для вида",
    ),
    (
        56,
        "FILE_WAS_NOT_SENT",
        T,
        "ИС не передала файл ЭМД",
        "Проверить обработку getDocumentFile на нашей стороне; повторить",
    ),
    (
        57,
        "SERIES_REQUIRED_WRONG_SERVICE_VERSION",
        C,
        "Вид требует серию документа, а версия сервиса 3.0 её не передаёт",
        "Перейти на новую версию сервиса РЭМД",
    ),
    (58, "SERIES_REQUIRED", D, "Необходимо указать серию документа", "Указать серию документа"),
    (
        59,
        "RMIS_ERROR",
        T,
        "Ошибка в ответе getDocumentFileResponse предоставляющей системы",
        "Проверить наш ответ на getDocumentFile; повторить",
    ),
    (60, "PATIENT_ALREADY_REGISTERED", T, "Внутренняя ошибка ГИП при создании пациента", "Повторить позже"),
    (
        61,
        "GET_DOCUMENT_FILE_ERROR",
        T,
        "Ошибка получения файла документа из предоставляющей системы",
        "Проверить доступность getDocumentFile; повторить",
    ),
    (
        62,
        "CA_INACCESSIBILITY",
        T,
        "Служба OCSP не указана или недоступна, и список отзыва недоступен",
        "Недоступен УЦ; повторить позже",
    ),
    (
        66,
        "AOGUID_NOT_FOUND",
        D,
        "Идентификатор адресного объекта (AOGUID) не найден в ФИАС",
        "Исправить адрес в СЭМД",
    ),
    (
        67,
        "REGION_CODE_DIFFERENT",
        D,
        "Регион адреса не совпадает с регионом по ФИАС",
        "Исправить адрес в СЭМД",
    ),
    (
        68,
        "HOUSEGUID_NOT_FOUND",
        D,
        "Идентификатор дома (HOUSEGUID) не найден в ФИАС",
        "Исправить адрес в СЭМД",
    ),
    (
        69,
        "AOGUID_DIFFERENT",
        D,
        "AOGUID не совпадает с адресом, найденным по HOUSEGUID",
        "Исправить адрес в СЭМД",
    ),
    (
        70,
        "RESTRICT_NEW_VERSION",
        D,
        "Для вида документа запрещена регистрация новых версий",
        "Не отправлять новую версию; оформить новый документ",
    ),
    (
        95,
        "RATE_LIMIT",
        T,
        "Достигнут защитный лимит запросов, повторить через минуту или позже",
        "Снизить частоту запросов; повтор не раньше чем через минуту",
    ),
    (96, "VALSYS_REJECT", T, "Ошибка отправки запроса в проверяющую систему", "Повторить позже"),
    (
        97,
        "ASYNC_RESPONSE_TIMEOUT",
        T,
        "Превышено ожидание асинхронного ответа проверяющей системы",
        "Повторить позже",
    ),
    (98, "PATIENT_NAME_NOT_FOUND", D, "Имя пациента обязательно", "Указать имя пациента"),
    (99, "PATIENT_SURNAME_NOT_FOUND", D, "Фамилия пациента обязательна", "Указать фамилию пациента"),
    (
        100,
        "DUPLICATE_PATIENT_FOUND",
        C,
        "По локальному идентификатору в ГИП найдено больше одной записи",
        "Дубли пациента в ГИП: обратиться в СТП ЕГИСЗ",
    ),
    (
        101,
        "IPS_VALIDATION_WARNING",
        D,
        "Замечание ИПС по проверке данных запроса",
        "Замечание, а не отказ: исправить запрос при следующей отправке",
    ),
    (102, "XML_VALIDATOR_ERROR", T, "Внутренняя ошибка проверки СЭМД", "Повторить позже"),
    (103, "SCHEMA_PROCESSING_ERROR", T, "Внутренняя ошибка шаблона проверки", "Повторить позже"),
    (
        104,
        "XML_VALIDATION_ERROR",
        D,
        "Ошибка преобразования СЭМД для проверки Schematron",
        "Проверить СЭМД на соответствие схеме",
    ),
    (
        105,
        "PERSONAL_SIG_CERT_NOT_ACTUAL_ON_DOC_CREATION_DT",
        D,
        "Сертификат сотрудника недействителен на дату создания документа",
        "Подписать действующим на дату создания сертификатом",
    ),
    (
        106,
        "INVALID_DOCTOR_FAMILY",
        D,
        "Фамилия медработника в запросе отличается от СЭМД",
        "Сверить ФИО медработника в запросе и в СЭМД",
    ),
    (
        107,
        "INVALID_DOCTOR_NAME",
        D,
        "Имя медработника в запросе отличается от СЭМД",
        "Сверить ФИО медработника в запросе и в СЭМД",
    ),
    (
        108,
        "INVALID_DOCTOR_PATRONYMIC",
        D,
        "Отчество медработника в запросе отличается от СЭМД",
        "Сверить ФИО медработника в запросе и в СЭМД",
    ),
    (
        109,
        "LEGAL_AUTHENTICATOR_NOT_FOUND",
        D,
        "Медработник, придавший документу юридическую силу, не найден в запросе",
        "Добавить подпись legalAuthenticator в запрос",
    ),
    (
        110,
        "INVALID_DOCTOR_INFO",
        D,
        "Медработник из запроса не найден в СЭМД",
        "Сверить подписантов запроса с авторами СЭМД",
    ),
    (
        111,
        "INVALID_DOCTOR_ID",
        D,
        "Локальный идентификатор медработника в запросе отличается от СЭМД",
        "Сверить localId медработника с СЭМД",
    ),
    (
        112,
        "INVALID_DOCTOR_SNILS",
        D,
        "Медработник не найден в СЭМД или в запросе",
        "Сверить СНИЛС медработника в запросе и в СЭМД",
    ),
    (
        113,
        "INVALID_DICTIONARY_MAPPING",
        D,
        "В справочнике не найдено поле кода",
        "Проверить OID и версию справочника в СЭМД",
    ),
    (
        114,
        "INVALID_DICTIONARY",
        D,
        "Справочник недопустим для этого вида документа",
        "Проверить справочники в СЭМД",
    ),
    (115, "INVALID_DICTIONARY_OID", D, "Справочника с таким OID нет", "Проверить OID справочника в СЭМД"),
    (
        116,
        "INVALID_DICTIONARY_VERSION",
        D,
        "Версия справочника недопустима для этого вида документа",
        "Проверить версию справочника в СЭМД",
    ),
    (
        117,
        "INVALID_ELEMENT_VALUE_CODE",
        D,
        "В справочнике нет значения с таким кодом",
        "Проверить код по НСИ",
    ),
    (
        118,
        "INVALID_ELEMENT_VALUE_NAME",
        D,
        "Наименование значения не совпадает с НСИ",
        "Проверить displayName по НСИ",
    ),
    (119, "VALSYS_INTERNAL_ERROR", T, "Внутренняя ошибка проверяющей системы", "Повторить позже"),
    (
        120,
        "RECEPIENT_INFO_MISMATCH",
        D,
        "Получатель из запроса не найден в СЭМД",
        "Сверить получателя в запросе и в СЭМД",
    ),
    (
        121,
        "RECEPIENT_SNILS_MISMATCH",
        D,
        "СНИЛС получателя в запросе отличается от СЭМД",
        "Сверить получателя в запросе и в СЭМД",
    ),
    (
        122,
        "RECEPIENT_FAMILY_MISMATCH",
        D,
        "Фамилия получателя в запросе отличается от СЭМД",
        "Сверить получателя в запросе и в СЭМД",
    ),
    (
        123,
        "RECEPIENT_NAME_MISMATCH",
        D,
        "Имя получателя в запросе отличается от СЭМД",
        "Сверить получателя в запросе и в СЭМД",
    ),
    (
        124,
        "RECEPIENT_PATRONYMIC_MISMATCH",
        D,
        "Отчество получателя в запросе отличается от СЭМД",
        "Сверить получателя в запросе и в СЭМД",
    ),
    (
        125,
        "PERSONAL_SIG_CERT_NOT_ACTUAL_ON_CHECK_DT",
        D,
        "Сертификат сотрудника недействителен на дату проверки",
        "Сертификат отозван или истёк: переподписать действующим",
    ),
)

# ЕПГУ «заказ справок онлайн»
_ONLINE_ORDERS: tuple[tuple[int, str, Category, str, str], ...] = (
    (
        63,
        "PATIENT_NOT_FOUND",
        D,
        "МО не может идентифицировать пациента из заказа справки онлайн",
        "Пациенту обратиться в МО лично",
    ),
    (
        64,
        "ADDITIONAL_INFO_REQUIRED",
        D,
        "Для заказанной справки недостаточно сведений, нужен личный визит",
        "Пациенту обратиться в МО лично",
    ),
    (
        65,
        "NOT_UNIQUE_ITEM",
        D,
        "В listDocKindSendRequest конфликтующие записи по виду документа и датам",
        "Убрать пересечение периодов доступности",
    ),
    (126, "TIME_EXPIRED_ERROR", D, "Истекло время выполнения заказа справки онлайн", "Заказ просрочен"),
    (
        127,
        "ORDER_ALREADY_PROCESSED",
        D,
        "По заказу уже отправлен другой статус",
        "Не менять статус обработанного заказа",
    ),
    (128, "ORDER_NOT_FOUND", D, "Заказ с таким идентификатором не найден", "Проверить идентификатор заказа"),
)

# ФРЛЛО (льготное лекарственное обеспечение); 88 (duplicate of 85) left out
_FRLLO: tuple[tuple[int, str, Category, str, str], ...] = (
    (
        71,
        "FRLLO_VALIDATION_ERROR",
        D,
        "ФРЛЛО: неверный формат значения (дата, маска, длина строки)",
        "Исправить значение в СЭМД",
    ),
    (72, "FRLLO_DIC_ERROR", D, "ФРЛЛО: неверный код термина справочника", "Проверить код по НСИ"),
    (
        73,
        "FRLLO_REQUIRED_CITIZEN_ERROR",
        D,
        "ФРЛЛО: не переданы обязательные ФИО, пол или дата рождения гражданина",
        "Дополнить сведения о гражданине",
    ),
    (
        74,
        "FRLLO_REQUIRED_IDENTIFY_ERROR",
        D,
        "ФРЛЛО: не передан ни один идентификатор гражданина",
        "Указать СНИЛС или документ гражданина",
    ),
    (
        75,
        "FRLLO_CITIZEN_IDENTIFY_ERROR",
        D,
        "ФРЛЛО: некорректные идентификаторы документов гражданина",
        "Проверить документы гражданина",
    ),
    (
        76,
        "FRLLO_CITIZEN_SEARCH_ERROR",
        D,
        "ФРЛЛО: гражданин не найден в регистре",
        "Проверить данные гражданина",
    ),
    (
        77,
        "FRLLO_RECIPE_POSITION_ERROR",
        D,
        "ФРЛЛО: нет или неоднозначен код назначенной медицинской продукции",
        "Проверить код назначенного препарата",
    ),
    (
        78,
        "FRLLO_BENEFIT_SOURCE_ERROR",
        C,
        "ФРЛЛО: ИС не владеет сведениями о назначении для этой категории льготы",
        "Проверить полномочия ИС в ФРЛЛО",
    ),
    (
        79,
        "FRLLO_ORGANIZATION_ERROR",
        D,
        "ФРЛЛО: нет или противоречивы сведения о назначившей организации",
        "Проверить сведения об организации",
    ),
    (
        80,
        "FRLLO_CITIZEN_BENEFIT_ERROR",
        D,
        "ФРЛЛО: у гражданина нет льготы с этим кодом",
        "Проверить код льготы",
    ),
    (
        81,
        "FRLLO_CITIZEN_REGION_ERROR",
        D,
        "ФРЛЛО: у гражданина нет льгот в указанном субъекте РФ",
        "Проверить субъект РФ в СЭМД",
    ),
    (
        82,
        "FRLLO_COMISSION_INFO_ERROR",
        D,
        "ФРЛЛО: нет сведений о врачебной комиссии при назначении по торговому наименованию",
        "Добавить сведения о врачебной комиссии",
    ),
    (83, "FRLLO_RECIPE_DATE_ERROR", D, "ФРЛЛО: некорректная дата назначения", "Проверить дату назначения"),
    (
        84,
        "FRLLO_EXPIRE_DATE_ERROR",
        D,
        "ФРЛЛО: срок действия не согласуется со справочником 1.2.643.5.1.13.13.99.2.608",
        "Проверить срок действия рецепта",
    ),
    (
        85,
        "FRLLO_RELISE_POSITION_ERROR",
        D,
        "ФРЛЛО: нет или неоднозначен код отпущенной медицинской продукции",
        "Проверить код отпущенного препарата",
    ),
    (
        86,
        "FRLLO_RECIPE_IDENTIFY_ERROR",
        D,
        "ФРЛЛО: нет сведений о переданном назначении",
        "Проверить ссылку на назначение",
    ),
    (
        87,
        "FRLLO_RELEASE_ORGANIZATION_ERROR",
        D,
        "ФРЛЛО: нет или противоречивы сведения об отпустившей организации",
        "Проверить сведения об аптечной организации",
    ),
    (89, "FRLLO_RELISE_DATE_ERROR", D, "ФРЛЛО: некорректная дата отпуска", "Проверить дату отпуска"),
    (
        90,
        "FRLLO_RELISE_QTY_ERROR",
        D,
        "ФРЛЛО: число отпущенных упаковок не согласуется с числом единиц",
        "Проверить количество",
    ),
    (
        91,
        "FRLLO_TRANSPORT_ERROR",
        C,
        "ФРЛЛО: некорректный механизм передачи сведений",
        "Проверить настройку канала передачи в ФРЛЛО",
    ),
    (
        92,
        "FRLLO_SEMD_FLK_ERROR",
        D,
        "ФРЛЛО: СЭМД не прошёл форматно-логический контроль или не направлялся на него",
        "Исправить СЭМД по замечаниям ФЛК",
    ),
    (
        93,
        "FRLLO_NOT_CORRECT_TYPE",
        D,
        "ФРЛЛО: для этого типа СЭМД проверка в ФРЛЛО не предусмотрена",
        "Проверить вид документа",
    ),
    (
        94,
        "FRLLO_UNKNOWN_SYSTEM",
        C,
        "ФРЛЛО: не удалось определить ИС по справочнику 1.2.643.5.1.13.13.99.2.622",
        "Зарегистрировать ИС в справочнике 1.2.643.5.1.13.13.99.2.622",
    ),
)


def _build() -> dict[str, CodeInfo]:
    table: dict[str, CodeInfo] = {}
    for group, rows in (
        ("registration", _REGISTRATION),
        ("online_orders", _ONLINE_ORDERS),
        ("frllo", _FRLLO),
    ):
        for id_, code, category, meaning, hint in rows:
            if code in table:
                raise AssertionError(f"duplicate code {code}")
            table[code] = CodeInfo(
                id=id_,
                code=code,
                meaning=meaning,
                category=category,
                hint=hint,
                group=group,
                retry_after=RATE_LIMIT_DEFER_SECONDS if code == "RATE_LIMIT" else None,
            )
    return table


#: mnemonic → entry, exactly as the classifier spells it
CODES: MappingProxyType[str, CodeInfo] = MappingProxyType(_build())
_BY_ID = {info.id: info for info in CODES.values()}


def by_id(id_: int) -> CodeInfo | None:
    """The entry with classifier id ``id_``, or None."""
    return _BY_ID.get(id_)


def _canonical(code: str) -> str:
    code = code.strip().upper()
    # РЭМД emits RECIPIENT_*, the classifier spells RECEPIENT_*
    if code.startswith("RECIPIENT_"):
        code = "RECEPIENT_" + code[len("RECIPIENT_") :]
    return code


def classify(code: str | int | None) -> CodeInfo:
    """Classify a РЭМД message code (mnemonic, or the numeric classifier id).

    Unknown or empty codes come back as ``configuration`` with ``unknown=True``: never retried
    blindly, always shown to a person.
    """
    if isinstance(code, int) or (isinstance(code, str) and code.strip().isdigit()):
        found = _BY_ID.get(int(code))
        if found is not None:
            return found
    elif code is not None:
        found = CODES.get(_canonical(code))
        if found is not None:
            return found
    text = "" if code is None else str(code).strip()
    return CodeInfo(
        id=None,
        code=text,
        meaning="Код отсутствует в классификаторе 1.2.643.5.1.13.13.99.2.305 v3.18",
        category="configuration",
        group="unknown",
        unknown=True,
        hint="Неизвестный код: проверить новую версию классификатора; при необходимости обратиться в СТП ЕГИСЗ",
    )

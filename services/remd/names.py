"""Every РЭМД / ИПС element name, action value and namespace the SOAP code uses, in one place.

The official РЭМД integration profile (WSDL/XSD) is still not public. Each name carries its evidence tag
and a source key (the table below), as the project's protocol brief (``remd-protocol.md``, section §n)
and its second-pass addendum (``remd-protocol-addendum.md``, kept with it in the team's shared docs):

* ``[C]`` confirmed literally in a public file, ``[P]`` a peer project's reading of the live system,
* ``[A]`` confirmed for a neighbouring service (regional КРЭМД, ВИМИС, ИЭМК behind ИПС), ``[G]`` a guess.

When the official XSD arrives, correct the names here: ``services.remd.soap``, ``envelope`` and ``wssec``
never spell a РЭМД name themselves. Values are local names; the namespace a name lives in is the one of
the message it belongs to (``NS_EMDR_SERVICE`` for МИС → РЭМД operations, ``NS_EMDR_CALLBACK`` for
РЭМД → МИС callbacks). ``tests/test_remd_names.py`` checks that every name below has a tag and a source.

The ``registerDocument`` body follows the КРЭМД ``documentDto`` ("the body of the request to РЭМД", [A]),
which medflex's REST mirror agrees with [P]: ``personalSignatures/…/signer`` + ``signature{data,
checksum}``, ``orgSignature``, ``surname/name/patrName``, coded role/position/speciality with their
code-system version, a department per signer, ``recipient`` and ``associations``. JSON arrays become
``<list><item>…</item></list>``, the shape РЭМД's own answers use (``errors/item``, ``matches/item`` [C]).
"""

from __future__ import annotations

from producer import events

#: source key → where the evidence is (repository paths are inside the named repository)
SOURCES = {
    "brief": "remd-protocol.md, the protocol brief (§ = its section)",
    "addendum": "remd-protocol-addendum.md, the second research pass",
    "kremd-signer": "Timurchik57/Test src/test/java/api/Access_1619Test.java (КРЭМД documentDto.personalSignatures)",
    "kremd-dto": "Timurchik57/KomtekNew src/test/java/api/After/SeparateMethods.java (КРЭМД documentDto)",
    "kremd-recipient": "Timurchik57/KomtekNew src/test/java/api/REMD/Access_1097Test.java (documentDto.recipient)",
    "kremd-input": "Timurchik57/Test src/test/java/api/Access_1484Test.java (platform input "
    "PersonalSignatures/OrgSignature, Role {$, @version}; documentDto.associations[{target, type}], "
    "targets being РЭМД ids of related documents)",
    "medflex": "help.medflex.me /az/registerDocument (REST mirror of registerDocument)",
    "medflex-registry-item": "help.medflex.ru «Метод getRegistryItem» (REST mirror of getRegistryItem: the request "
    "is answered with a request id only; the result reaches the callback address later, naming the request it "
    "answers, with status, emdr_id, registration_date_time, store_till_date)",
    "egisz-proxy": "asaf1n/EGISZ-Proxy-Reports-Airflow README.md, db/04_views.sql (gateway journal)",
    "vimis-callback": "ВИМИС callback through ИПС in the КРЭМД/ВИМИС autotests (addendum, 'Envelopes as ИПС sends them')",
}

# --- namespaces -----------------------------------------------------------------------------------
NS_SOAP12 = "http://www.w3.org/2003/05/soap-envelope"  # [C] brief §2.2: the remd-dev stand uses SOAP 1.2
NS_SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"  # [C] brief §2.2: callbacks in peer samples
NS_WSA = "http://www.w3.org/2005/08/addressing"  # [C] brief §2.2
#: [C] brief §2.2
NS_WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
#: [C] brief §2.2
NS_WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
NS_DS = "http://www.w3.org/2000/09/xmldsig#"  # [C] brief §2.2
NS_EGISZ = "http://egisz.rosminzdrav.ru"  # [C] brief §2.2: transportHeader
NS_EMDR_SERVICE = "http://egisz.rosminzdrav.ru/iehr/emdr/service/"  # [C] brief §2.2
NS_EMDR_CALLBACK = "http://egisz.rosminzdrav.ru/iehr/emdr/callback/"  # [C] brief §2.2

# --- transport header -----------------------------------------------------------------------------
TRANSPORT_HEADER = "transportHeader"  # [C] brief §2.3: in NS_EGISZ
AUTH_INFO = "authInfo"  # [C] brief §2.3: in NS_EGISZ
CLIENT_ENTITY_ID = "clientEntityId"  # [C] brief §2.3: in NS_EGISZ
WSA_ANONYMOUS = "http://www.w3.org/2005/08/addressing/anonymous"  # [C] brief §2.3 item 4
#: the 2004/08 anonymous URI an ИПС callback still puts in ReplyTo/Address     [A] vimis-callback
WSA_ANONYMOUS_2004 = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous"
#: every spelling of "no address": replies go back on the same HTTP exchange      [C] brief §2.3, [A] vimis-callback
ANONYMOUS_ADDRESSES = (WSA_ANONYMOUS, WSA_ANONYMOUS_2004)

# --- wsa:Action values ----------------------------------------------------------------------------
ACTION_REGISTER_DOCUMENT = "registerDocument"  # [G] brief §2.3 item 6 (pattern [C], value guessed)
ACTION_REGISTER_DOCUMENT_RESPONSE = "registerDocumentResponse"  # [G] brief §8.2
ACTION_REGISTER_DOCUMENT_RESULT = "sendRegisterDocumentResult"  # [P] brief §2.1, §8.4
ACTION_REGISTER_DOCUMENT_RESULT_RESPONSE = "sendRegisterDocumentResultResponse"  # [G] brief §8.4 (our ack)
ACTION_GET_DOCUMENT_FILE = "getDocumentFile"  # [P] egisz-proxy (addendum: "its Action is getDocumentFile")
ACTION_GET_DOCUMENT_FILE_RESPONSE = "getDocumentFileResponse"  # [G] brief §8.3
ACTION_SEARCH_REGISTRY_ITEM = "searchRegistryItem"  # [G] brief §2.1 (operation [C], action value guessed)
ACTION_SEARCH_REGISTRY_ITEM_RESPONSE = "searchRegistryItemResponse"  # [G] brief §2.1
ACTION_GET_REGISTRY_ITEM = "getRegistryItem"  # [G] brief §2.1 (operation [P])
ACTION_GET_REGISTRY_ITEM_RESPONSE = "getRegistryItemResponse"  # [G] brief §2.1
#: [G] medflex-registry-item: getRegistryItem's result on the callback, by analogy with sendRegisterDocumentResult
ACTION_GET_REGISTRY_ITEM_RESULT = "sendGetRegistryItemResult"
#: [G] medflex-registry-item (our ack)
ACTION_GET_REGISTRY_ITEM_RESULT_RESPONSE = "sendGetRegistryItemResultResponse"
ACTION_FAULT = "fault"  # [G] brief §8.5: Action on a fault reply

# --- shared building blocks -----------------------------------------------------------------------
ITEM = "item"  # [C] brief §8.4 (errors/item, matches/item); [G] for request lists
CODE = "code"  # [C] brief §8.4 (errors/item/code); [A] kremd-signer for coded values
CODE_SYSTEM = "codeSystem"  # [A] kremd-dto (kind.codeSystem)
CODE_SYSTEM_VERSION = "codeSystemVersion"  # [A] kremd-signer (position/speciality.codeSystemVersion)
DISPLAY_NAME = "displayName"  # [A] kremd-dto (kind.displayName)
DATA = "data"  # [A] kremd-dto, kremd-input (signature.data); brief §8.3 file data
#: believed CRC32 of the decoded data; the name recurs, the algorithm is not visible   [G] brief §2.5, addendum
CHECKSUM = "checksum"

# --- registerDocument request body ----------------------------------------------------------------
#: [G] brief §8.1 (by analogy with searchRegistryItemRequest [C])
REGISTER_DOCUMENT_REQUEST = "registerDocumentRequest"
KIND = "kind"  # [A] kremd-dto (kind.code); [P] brief §2.4
SYSTEM = "system"  # [G] brief §2.4
ORGANIZATION = "organization"  # [P] brief §2.4
DEPARTMENT = "department"  # [A] kremd-signer (per signer); [P] medflex (also top level)
LOCAL_ID = "localId"  # [A] kremd-signer (signer.localId, department.localId); [G] for the patient
LOCAL_UID = "localUid"  # [A] kremd-dto; [C] brief §2.4 (echoed in callbacks)
DOCUMENT_NUMBER = "documentNumber"  # [A] addendum; [P] brief §2.4
CREATION_DATE_TIME = "creationDateTime"  # [A] addendum; [P] brief §2.4
PATIENT = "patient"  # [A] kremd-dto (patient.surname)
SNILS = "snils"  # [A] kremd-dto, kremd-signer (patient.snils, signer.snils)
SURNAME = "surname"  # [A] kremd-dto, kremd-signer; [P] medflex
NAME = "name"  # [A] kremd-dto, kremd-signer; [P] medflex
PATR_NAME = "patrName"  # [A] kremd-dto, kremd-signer; [P] medflex (patr_name)
GENDER = "gender"  # [P] medflex
BIRTH_DATE = "birthDate"  # [A] addendum (signer.birthDate); [P] medflex (birth_date)
PERSONAL_SIGNATURES = "personalSignatures"  # [A] kremd-signer, kremd-input (two sources)
SIGNER = "signer"  # [A] kremd-signer
ROLE = "role"  # [A] kremd-signer (role.code), kremd-input (Role {$, @version})
POSITION = "position"  # [A] kremd-signer (position.code + codeSystemVersion)
SPECIALITY = "speciality"  # [A] kremd-signer (speciality.code + codeSystemVersion)
SIGNATURE = "signature"  # [A] kremd-signer, kremd-input (signature{data, checksum})
ORG_SIGNATURE = "orgSignature"  # [A] kremd-dto, kremd-input
RECIPIENT = "recipient"  # [A] kremd-recipient
RECIPIENT_KIND_PERSON = "recipientKindPerson"  # [A] kremd-recipient (…/snils)
RECIPIENT_KIND_ORGANIZATION = "recipientKindMedicalOrganization"  # [A] kremd-recipient (…/organization/code)
#: [A] kremd-recipient (recipient.kind.code)
RECIPIENT_MEDICAL_ORGANIZATION = events.RECIPIENT_MEDICAL_ORGANIZATION
#: [A] kremd-recipient (recipient.kind.code)
RECIPIENT_PATIENT_REPRESENTATIVE = events.RECIPIENT_PATIENT_REPRESENTATIVE
ASSOCIATIONS = "associations"  # [A] kremd-input (documentDto.associations); [P] egisz-proxy
TARGET = "target"  # [A] kremd-input (the related ЭМД's РЭМД id)
TYPE = "type"  # [A] kremd-input; link types of НСИ 1.2.643.5.1.13.13.99.2.122 [P] addendum
#: the signer role a doctor signs in when the МИС names none (КРЭМД's doctor: role.code DOCTOR)  [A] kremd-signer
DEFAULT_SIGNER_ROLE = events.DEFAULT_SIGNER_ROLE
#: the role dictionary version the platform input writes as Role/@version                       [A] kremd-input
DEFAULT_SIGNER_ROLE_VERSION = events.DEFAULT_SIGNER_ROLE_VERSION
# МЧД block on a signature: nothing public on how РЭМД receives it (brief §6, addendum); shaped per the brief.
POWER_OF_ATTORNEY = "powerOfAttorney"  # [G] brief §6
POA_NUMBER = "number"  # [G] brief §6 (НомДовер GUID)
POA_PRINCIPAL_INN = "principalInn"  # [G] brief §6
POA_PRINCIPAL_OGRN = "principalOgrn"  # [G] brief §6
POA_DOCUMENT = "document"  # [G] brief §6 (base64 МЧД XML)
POA_SIGNATURE = "signature"  # [G] brief §6 (base64 detached signature of the МЧД)

# --- answers: status and errors -------------------------------------------------------------------
REGISTER_DOCUMENT_RESPONSE = "registerDocumentResponse"  # [P] brief §8.2
STATUS = "status"  # [C] brief §8.4; [P] brief §8.2
ERRORS = "errors"  # [C] brief §8.4
MESSAGE = "message"  # [C] brief §8.4
STATUS_SUCCESS = "success"  # [C] brief §2.7
STATUS_ERROR = "error"  # [C] brief §2.7
STATUS_OK = "OK"  # [P] brief §2.7 ("some payloads carry status = OK")

# --- registerDocumentResult callback --------------------------------------------------------------
REGISTER_DOCUMENT_RESULT = "registerDocumentResult"  # [C] brief §8.4
RELATES_TO_MESSAGE = "relatesToMessage"  # [C] brief §8.4
REGISTRY_ITEM = "registryItem"  # [C] brief §8.4
EMDR_ID = "emdrId"  # [C] brief §8.4
REGISTRATION_DATE_TIME = "registrationDateTime"  # [C] brief §8.4
REGISTRATION_DATE = "registrationDate"  # [P] addendum (peer tests); [C] brief §8.4 (older payloads)
STORE_TILL_DATE = "storeTillDate"  # [P] brief §8.4
DOCUMENT_VERSION = "documentVersion"  # [A] brief §8.4
#: [A] addendum (registryItem/registrationWarnings[{code, message}])
REGISTRATION_WARNINGS = "registrationWarnings"
DOCUMENT_STATUS = "documentStatus"  # [P] addendum ("Зарегистрировано")
DOCUMENT_STATUS_REGISTERED = "Зарегистрировано"  # [P] addendum
REGISTER_DOCUMENT_RESULT_RESPONSE = "registerDocumentResultResponse"  # [G] brief §8.4 (our acknowledgement)

# --- getDocumentFile ------------------------------------------------------------------------------
GET_DOCUMENT_FILE = "getDocumentFile"  # [P] brief §8.3 (operation), egisz-proxy; element [G]
GET_DOCUMENT_FILE_RESPONSE = "getDocumentFileResponse"  # [G] brief §8.3
# keyed by localUid (our own registration) or by emdrId (another ИС asks for it later)   [P] egisz-proxy

# --- related-ЭМД notices (РЭМД → МИС; we refuse them, docs/transports.md says why) ---------------
SEND_NOTICE = "sendNotice"  # [P] egisz-proxy (addendum)
SEND_DOCUMENT_FILE = "sendDocumentFile"  # [P] egisz-proxy (addendum)
#: the operations this МИС answers with a refusal fault, not an acknowledgement           [P] addendum
REFUSED_NOTICES = (SEND_NOTICE, SEND_DOCUMENT_FILE)

# --- searchRegistryItem / getRegistryItem ---------------------------------------------------------
SEARCH_REGISTRY_ITEM_REQUEST = "searchRegistryItemRequest"  # [C] brief §2.1
SEARCH_REGISTRY_ITEM_RESPONSE = "searchRegistryItemResponse"  # [C] brief §2.1
REGISTER_DATE_BEGIN = "registerDateBegin"  # [C] brief §2.1 (remd-dev pytest)
REGISTER_DATE_END = "registerDateEnd"  # [C] brief §2.1 (remd-dev pytest)
PATIENT_SNILS = "patientSnils"  # [C] brief §2.1 (remd-dev pytest)
MATCHES = "matches"  # [C] brief §2.1
GET_REGISTRY_ITEM_REQUEST = "getRegistryItemRequest"  # [G] brief §2.1 (operation [P])
#: the synchronous answer: only an acknowledgement (status, errors), the record comes later   [P] medflex-registry-item
GET_REGISTRY_ITEM_RESPONSE = "getRegistryItemResponse"
#: the result on the callback: relatesToMessage, status, registryItem, errors, as registerDocumentResult [C] has
#: them; the element name is by analogy                                                       [G] medflex-registry-item
GET_REGISTRY_ITEM_RESULT = "getRegistryItemResult"
GET_REGISTRY_ITEM_RESULT_RESPONSE = "getRegistryItemResultResponse"  # [G] medflex-registry-item (our ack)

# --- SOAP Fault detail ----------------------------------------------------------------------------
FAULT_ERROR_CODE = "errorCode"  # [P] brief §2.7 (peer reads code → errorCode → faultcode)
#: ИПС typed faults, each with a ``message`` child                              [A] brief §2.7
IPS_FAULTS = ("ValidationFault", "AuthorizationFault", "SystemFault")

# --- the registerDocument request's shape ---------------------------------------------------------
_CODED = {CODE: None, CODE_SYSTEM_VERSION: None}
_SIGNED_DATA = {DATA: None, CHECKSUM: None}
_POA = {
    POA_NUMBER: None,
    POA_PRINCIPAL_INN: None,
    POA_PRINCIPAL_OGRN: None,
    POA_DOCUMENT: None,
    POA_SIGNATURE: None,
}
_DEPARTMENT = {LOCAL_ID: {CODE: None}}
#: element → its allowed children (None: a text leaf). What a schema-validating service accepts: any other
#: element is refused with an unmarshalling fault, as a JAXB/WCF endpoint does                  [G] brief §2.4
REGISTER_DOCUMENT_SHAPE = {
    KIND: {CODE: None, CODE_SYSTEM: None, CODE_SYSTEM_VERSION: None, DISPLAY_NAME: None},
    SYSTEM: None,
    ORGANIZATION: None,
    DEPARTMENT: _DEPARTMENT,
    LOCAL_UID: None,
    DOCUMENT_NUMBER: None,
    CREATION_DATE_TIME: None,
    PATIENT: {
        SNILS: None,
        LOCAL_ID: None,
        SURNAME: None,
        NAME: None,
        PATR_NAME: None,
        GENDER: None,
        BIRTH_DATE: None,
    },
    RECIPIENT: {
        KIND: {CODE: None},
        RECIPIENT_KIND_PERSON: {SNILS: None},
        RECIPIENT_KIND_ORGANIZATION: {ORGANIZATION: {CODE: None}},
    },
    ASSOCIATIONS: {ITEM: {TARGET: None, TYPE: None}},
    PERSONAL_SIGNATURES: {
        ITEM: {
            SIGNER: {
                LOCAL_ID: None,
                ROLE: _CODED,
                SURNAME: None,
                NAME: None,
                PATR_NAME: None,
                SNILS: None,
                BIRTH_DATE: None,
                POSITION: _CODED,
                SPECIALITY: _CODED,
                DEPARTMENT: _DEPARTMENT,
            },
            SIGNATURE: _SIGNED_DATA,
            POWER_OF_ATTORNEY: _POA,
        }
    },
    ORG_SIGNATURE: {**_SIGNED_DATA, POWER_OF_ATTORNEY: _POA},
}

"""Every РЭМД / ИПС element name, action value and namespace the SOAP code uses, in one place.

The official РЭМД integration profile (WSDL/XSD) is still not public. Each name carries its evidence tag
and a source key (the table below); ``docs/protocol.md`` holds the evidence in our words, and a name cites the
section it comes from (``docs/protocol.md#namespaces``):

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
    "docs/protocol.md": "the protocol evidence in our words, with its public sources; #anchor = its section",
    "kremd-signer": "Timurchik57/Test src/test/java/api/Access_1619Test.java (КРЭМД documentDto.personalSignatures)",
    "kremd-dto": "Timurchik57/KomtekNew src/test/java/api/After/SeparateMethods.java (КРЭМД documentDto)",
    "kremd-recipient": "Timurchik57/KomtekNew src/test/java/api/REMD/Access_1097Test.java (documentDto.recipient)",
    "kremd-input": "Timurchik57/Test src/test/java/api/Access_1484Test.java (platform input "
    "PersonalSignatures/OrgSignature, Role {$, @version}; documentDto.associations[{target, type}], "
    "targets being РЭМД ids of related documents)",
    "medflex": "help.medflex.me /az/registerDocument (REST mirror of registerDocument)",
    "egisz-proxy": "asaf1n/EGISZ-Proxy-Reports-Airflow README.md, db/04_views.sql (gateway journal)",
    "vimis-callback": "a ВИМИС callback through ИПС in the КРЭМД/ВИМИС autotests",
}

# --- namespaces -----------------------------------------------------------------------------------
#: SOAP 1.2, as the remd-dev stand speaks it                                  [C] docs/protocol.md#namespaces
NS_SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
#: SOAP 1.1, as the callbacks in peer samples                                  [C] docs/protocol.md#namespaces
NS_SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
NS_WSA = "http://www.w3.org/2005/08/addressing"  # [C] docs/protocol.md#namespaces
#: WS-Security                                                                [C] docs/protocol.md#namespaces
NS_WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
#: WS-Security utility (wsu:Id, wsu:Timestamp)                               [C] docs/protocol.md#namespaces
NS_WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
NS_DS = "http://www.w3.org/2000/09/xmldsig#"  # [C] docs/protocol.md#namespaces
NS_EGISZ = "http://egisz.rosminzdrav.ru"  # [C] docs/protocol.md#namespaces: transportHeader
NS_EMDR_SERVICE = "http://egisz.rosminzdrav.ru/iehr/emdr/service/"  # [C] docs/protocol.md#namespaces
NS_EMDR_CALLBACK = "http://egisz.rosminzdrav.ru/iehr/emdr/callback/"  # [C] docs/protocol.md#namespaces

# --- transport header -----------------------------------------------------------------------------
TRANSPORT_HEADER = "transportHeader"  # [C] docs/protocol.md#soap-header: in NS_EGISZ
AUTH_INFO = "authInfo"  # [C] docs/protocol.md#soap-header: in NS_EGISZ
CLIENT_ENTITY_ID = "clientEntityId"  # [C] docs/protocol.md#soap-header: in NS_EGISZ
WSA_ANONYMOUS = "http://www.w3.org/2005/08/addressing/anonymous"  # [C] docs/protocol.md#soap-header
#: the 2004/08 anonymous URI an ИПС callback still puts in ReplyTo/Address     [A] vimis-callback
WSA_ANONYMOUS_2004 = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous"
#: every spelling of "no address" (reply on the same exchange)   [C] docs/protocol.md#soap-header, [A] vimis-callback
ANONYMOUS_ADDRESSES = (WSA_ANONYMOUS, WSA_ANONYMOUS_2004)

# --- wsa:Action values ----------------------------------------------------------------------------
ACTION_REGISTER_DOCUMENT = "registerDocument"  # [G] docs/protocol.md#soap-header (pattern [C], value guessed)
ACTION_REGISTER_DOCUMENT_RESPONSE = "registerDocumentResponse"  # [G] docs/protocol.md#synchronous-answer
ACTION_REGISTER_DOCUMENT_RESULT = "sendRegisterDocumentResult"  # [P] docs/protocol.md#operations
#: our acknowledgement's Action                                      [G] docs/protocol.md#registerdocumentresult
ACTION_REGISTER_DOCUMENT_RESULT_RESPONSE = "sendRegisterDocumentResultResponse"
ACTION_GET_DOCUMENT_FILE = "getDocumentFile"  # [P] egisz-proxy (docs/protocol.md#operations)
ACTION_GET_DOCUMENT_FILE_RESPONSE = "getDocumentFileResponse"  # [G] docs/protocol.md#getdocumentfile
ACTION_SEARCH_REGISTRY_ITEM = "searchRegistryItem"  # [G] docs/protocol.md#operations (operation [C])
ACTION_SEARCH_REGISTRY_ITEM_RESPONSE = "searchRegistryItemResponse"  # [G] docs/protocol.md#operations
ACTION_GET_REGISTRY_ITEM = "getRegistryItem"  # [G] docs/protocol.md#operations (operation [P])
ACTION_GET_REGISTRY_ITEM_RESPONSE = "getRegistryItemResponse"  # [G] docs/protocol.md#operations
#: the record getRegistryItem asked for, on the callback (as sendRegisterDocumentResult)  [G] docs/protocol.md#getregistryitem
ACTION_GET_REGISTRY_ITEM_RESULT = "sendGetRegistryItemResult"
#: our acknowledgement of it                                                          [G] docs/protocol.md#getregistryitem
ACTION_GET_REGISTRY_ITEM_RESULT_RESPONSE = "sendGetRegistryItemResultResponse"
ACTION_FAULT = "fault"  # [G] docs/protocol.md#fault: Action on a fault reply

# --- shared building blocks -----------------------------------------------------------------------
#: errors/item, matches/item            [C] docs/protocol.md#registerdocumentresult; [G] for request lists
ITEM = "item"
CODE = "code"  # [C] docs/protocol.md#registerdocumentresult (errors/item/code); [A] kremd-signer (coded)
CODE_SYSTEM = "codeSystem"  # [A] kremd-dto (kind.codeSystem)
CODE_SYSTEM_VERSION = "codeSystemVersion"  # [A] kremd-signer (position/speciality.codeSystemVersion)
DISPLAY_NAME = "displayName"  # [A] kremd-dto (kind.displayName)
DATA = "data"  # [A] kremd-dto, kremd-input (signature.data); docs/protocol.md#getdocumentfile file data
#: believed CRC32 of the decoded data; the name recurs, the algorithm is unseen   [G] docs/protocol.md#checksum
CHECKSUM = "checksum"

# --- registerDocument request body ----------------------------------------------------------------
#: by analogy with searchRegistryItemRequest [C]                               [G] docs/protocol.md#registerdocument
REGISTER_DOCUMENT_REQUEST = "registerDocumentRequest"
KIND = "kind"  # [A] kremd-dto (kind.code); [P] docs/protocol.md#request-body
SYSTEM = "system"  # [G] docs/protocol.md#request-body
ORGANIZATION = "organization"  # [P] docs/protocol.md#request-body
DEPARTMENT = "department"  # [A] kremd-signer (per signer); [P] medflex (also top level)
LOCAL_ID = "localId"  # [A] kremd-signer (signer.localId, department.localId); [G] for the patient
LOCAL_UID = "localUid"  # [A] kremd-dto; [C] docs/protocol.md#request-body (echoed in callbacks)
DOCUMENT_NUMBER = "documentNumber"  # [A] kremd-dto; [P] docs/protocol.md#request-body
CREATION_DATE_TIME = "creationDateTime"  # [A] kremd-dto; [P] docs/protocol.md#request-body
PATIENT = "patient"  # [A] kremd-dto (patient.surname)
SNILS = "snils"  # [A] kremd-dto, kremd-signer (patient.snils, signer.snils)
SURNAME = "surname"  # [A] kremd-dto, kremd-signer; [P] medflex
NAME = "name"  # [A] kremd-dto, kremd-signer; [P] medflex
PATR_NAME = "patrName"  # [A] kremd-dto, kremd-signer; [P] medflex (patr_name)
GENDER = "gender"  # [P] medflex
BIRTH_DATE = "birthDate"  # [A] kremd-signer (signer.birthDate); [P] medflex (birth_date)
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
TYPE = "type"  # [A] kremd-input; link types of НСИ 1.2.643.5.1.13.13.99.2.122 [P] egisz-proxy
#: the signer role a doctor signs in when the МИС names none (КРЭМД's doctor: role.code DOCTOR)  [A] kremd-signer
DEFAULT_SIGNER_ROLE = events.DEFAULT_SIGNER_ROLE
#: the role dictionary version the platform input writes as Role/@version                       [A] kremd-input
DEFAULT_SIGNER_ROLE_VERSION = events.DEFAULT_SIGNER_ROLE_VERSION
# МЧД block on a signature: nothing public on how РЭМД receives it (docs/protocol.md#power-of-attorney).
POWER_OF_ATTORNEY = "powerOfAttorney"  # [G] docs/protocol.md#power-of-attorney
POA_NUMBER = "number"  # [G] docs/protocol.md#power-of-attorney (НомДовер GUID)
POA_PRINCIPAL_INN = "principalInn"  # [G] docs/protocol.md#power-of-attorney
POA_PRINCIPAL_OGRN = "principalOgrn"  # [G] docs/protocol.md#power-of-attorney
POA_DOCUMENT = "document"  # [G] docs/protocol.md#power-of-attorney (base64 МЧД XML)
POA_SIGNATURE = "signature"  # [G] docs/protocol.md#power-of-attorney (base64 detached signature of the МЧД)

# --- answers: status and errors -------------------------------------------------------------------
REGISTER_DOCUMENT_RESPONSE = "registerDocumentResponse"  # [P] docs/protocol.md#synchronous-answer
STATUS = "status"  # [C] docs/protocol.md#registerdocumentresult; [P] docs/protocol.md#synchronous-answer
ERRORS = "errors"  # [C] docs/protocol.md#registerdocumentresult
MESSAGE = "message"  # [C] docs/protocol.md#registerdocumentresult
STATUS_SUCCESS = "success"  # [C] docs/protocol.md#statuses
STATUS_ERROR = "error"  # [C] docs/protocol.md#statuses
STATUS_OK = "OK"  # [P] docs/protocol.md#statuses ("some payloads carry status = OK")

# --- registerDocumentResult callback --------------------------------------------------------------
REGISTER_DOCUMENT_RESULT = "registerDocumentResult"  # [C] docs/protocol.md#registerdocumentresult
RELATES_TO_MESSAGE = "relatesToMessage"  # [C] docs/protocol.md#registerdocumentresult
REGISTRY_ITEM = "registryItem"  # [C] docs/protocol.md#registerdocumentresult
EMDR_ID = "emdrId"  # [C] docs/protocol.md#registerdocumentresult
REGISTRATION_DATE_TIME = "registrationDateTime"  # [C] docs/protocol.md#registerdocumentresult
REGISTRATION_DATE = "registrationDate"  # [P] docs/protocol.md#callback-shapes (peer tests, older payloads)
STORE_TILL_DATE = "storeTillDate"  # [P] docs/protocol.md#registerdocumentresult
DOCUMENT_VERSION = "documentVersion"  # [A] docs/protocol.md#registerdocumentresult
REGISTRATION_WARNINGS = "registrationWarnings"  # [A] docs/protocol.md#callback-shapes (in registryItem)
DOCUMENT_STATUS = "documentStatus"  # [P] docs/protocol.md#callback-shapes ("Зарегистрировано")
DOCUMENT_STATUS_REGISTERED = "Зарегистрировано"  # [P] docs/protocol.md#statuses
#: our acknowledgement                                                 [G] docs/protocol.md#registerdocumentresult
REGISTER_DOCUMENT_RESULT_RESPONSE = "registerDocumentResultResponse"

# --- getDocumentFile ------------------------------------------------------------------------------
#: the operation [P] (egisz-proxy), the element [G]                            docs/protocol.md#getdocumentfile
GET_DOCUMENT_FILE = "getDocumentFile"
GET_DOCUMENT_FILE_RESPONSE = "getDocumentFileResponse"  # [G] docs/protocol.md#getdocumentfile
# keyed by localUid (our own registration) or by emdrId (another ИС asks for it later)   [P] egisz-proxy

# --- related-ЭМД notices (РЭМД → МИС; we refuse them, docs/transports.md says why) ---------------
SEND_NOTICE = "sendNotice"  # [P] egisz-proxy (docs/protocol.md#operations)
SEND_DOCUMENT_FILE = "sendDocumentFile"  # [P] egisz-proxy (docs/protocol.md#operations)
#: the operations this МИС answers with a refusal fault, not an acknowledgement           [P] egisz-proxy
REFUSED_NOTICES = (SEND_NOTICE, SEND_DOCUMENT_FILE)

# --- searchRegistryItem / getRegistryItem ---------------------------------------------------------
SEARCH_REGISTRY_ITEM_REQUEST = "searchRegistryItemRequest"  # [C] docs/protocol.md#operations
SEARCH_REGISTRY_ITEM_RESPONSE = "searchRegistryItemResponse"  # [C] docs/protocol.md#operations
REGISTER_DATE_BEGIN = "registerDateBegin"  # [C] docs/protocol.md#operations (remd-dev pytest)
REGISTER_DATE_END = "registerDateEnd"  # [C] docs/protocol.md#operations (remd-dev pytest)
PATIENT_SNILS = "patientSnils"  # [C] docs/protocol.md#operations (remd-dev pytest)
MATCHES = "matches"  # [C] docs/protocol.md#operations
GET_REGISTRY_ITEM_REQUEST = "getRegistryItemRequest"  # [G] docs/protocol.md#operations (operation [P])
#: the synchronous answer, an acknowledgement only (the record comes later)  [G] docs/protocol.md#getregistryitem
GET_REGISTRY_ITEM_RESPONSE = "getRegistryItemResponse"
#: the result on the callback: relatesToMessage, status, registryItem, errors  [G] docs/protocol.md#getregistryitem
GET_REGISTRY_ITEM_RESULT = "getRegistryItemResult"
#: our acknowledgement of it                                                  [G] docs/protocol.md#getregistryitem
GET_REGISTRY_ITEM_RESULT_RESPONSE = "getRegistryItemResultResponse"

# --- SOAP Fault detail ----------------------------------------------------------------------------
FAULT_ERROR_CODE = "errorCode"  # [P] docs/protocol.md#faults (peer reads code → errorCode → faultcode)
#: ИПС typed faults, each with a ``message`` child                              [A] docs/protocol.md#faults
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
#: element is refused with an unmarshalling fault, as a JAXB/WCF endpoint does  [G] docs/protocol.md#request-body
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

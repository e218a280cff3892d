"""Every РЭМД / ИПС element name, action value and namespace the SOAP code uses, in one place.

The official РЭМД integration profile (WSDL/XSD) was not available when this was written; the
names come from the protocol brief (``/work/shared/docs/remd-protocol.md``), which tags each fact:

* ``[C]`` confirmed literally in a public file, ``[P]`` a peer project's reading of the live system,
* ``[A]`` confirmed for a neighbouring ЕГИСЗ service behind the same ИПС, ``[G]`` a guess.

Each constant's comment gives its tag and the brief's section. When the official XSD arrives,
correct the names here: ``services.remd.soap`` and ``services.remd.wssec`` never spell a РЭМД name themselves.
Values are local names; the namespace a name lives in is the one of the message it belongs to
(``NS_EMDR_SERVICE`` for МИС → РЭМД operations, ``NS_EMDR_CALLBACK`` for РЭМД → МИС callbacks).
"""

from __future__ import annotations

# --- namespaces (all [C], §2.2) -------------------------------------------------------------------
NS_SOAP12 = "http://www.w3.org/2003/05/soap-envelope"            # [C] §2.2, remd-dev stand uses SOAP 1.2
NS_SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"         # [C] §2.2, callbacks in peer samples
NS_WSA = "http://www.w3.org/2005/08/addressing"                 # [C] §2.2
NS_WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"   # [C] §2.2
NS_WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"   # [C] §2.2
NS_DS = "http://www.w3.org/2000/09/xmldsig#"                    # [C] §2.2
NS_EGISZ = "http://egisz.rosminzdrav.ru"                        # [C] §2.2, transportHeader
NS_EMDR_SERVICE = "http://egisz.rosminzdrav.ru/iehr/emdr/service/"    # [C] §2.2
NS_EMDR_CALLBACK = "http://egisz.rosminzdrav.ru/iehr/emdr/callback/"  # [C] §2.2

# --- transport header (§2.3) ----------------------------------------------------------------------
TRANSPORT_HEADER = "transportHeader"      # [C] §2.3, in NS_EGISZ
AUTH_INFO = "authInfo"                    # [C] §2.3, in NS_EGISZ
CLIENT_ENTITY_ID = "clientEntityId"       # [C] §2.3, in NS_EGISZ
WSA_ANONYMOUS = "http://www.w3.org/2005/08/addressing/anonymous"   # [C] §2.3 item 4

# --- wsa:Action values ----------------------------------------------------------------------------
ACTION_REGISTER_DOCUMENT = "registerDocument"                   # [G] §2.3 item 6 (pattern [C], value guessed)
ACTION_REGISTER_DOCUMENT_RESPONSE = "registerDocumentResponse"  # [G] §8.2
ACTION_REGISTER_DOCUMENT_RESULT = "sendRegisterDocumentResult"  # [P] §2.1, §8.4
ACTION_REGISTER_DOCUMENT_RESULT_RESPONSE = "sendRegisterDocumentResultResponse"  # [G] §8.4 (our ack)
ACTION_GET_DOCUMENT_FILE = "getDocumentFile"                    # [G] §2.1, §8.3
ACTION_GET_DOCUMENT_FILE_RESPONSE = "getDocumentFileResponse"   # [G] §8.3
ACTION_SEARCH_REGISTRY_ITEM = "searchRegistryItem"              # [G] §2.1 (operation [C], action value guessed)
ACTION_SEARCH_REGISTRY_ITEM_RESPONSE = "searchRegistryItemResponse"  # [G] §2.1
ACTION_GET_REGISTRY_ITEM = "getRegistryItem"                    # [G] §2.1 (operation [P])
ACTION_GET_REGISTRY_ITEM_RESPONSE = "getRegistryItemResponse"   # [G] §2.1
ACTION_FAULT = "fault"                                          # [G] §8.5, Action on a fault reply

# --- registerDocument request body (§2.4, §8.1) ---------------------------------------------------
REGISTER_DOCUMENT_REQUEST = "registerDocumentRequest"  # [G] §8.1 (by analogy with searchRegistryItemRequest [C])
KIND = "kind"                              # [P] §2.4
SYSTEM = "system"                          # [G] §2.4
ORGANIZATION = "organization"              # [P] §2.4
DEPARTMENT = "department"                  # [G] §2.4
LOCAL_UID = "localUid"                     # [P] §2.4 (echoed in callbacks [C])
DOCUMENT_NUMBER = "documentNumber"         # [P] §2.4
CREATION_DATE_TIME = "creationDateTime"    # [P] §2.4
PATIENT = "patient"                        # [G] §2.4
SNILS = "snils"                            # [G] §2.4 (patient and doctor)
LOCAL_ID = "localId"                       # [G] §2.4 (patient and doctor)
FAMILY = "family"                          # [G] §2.4 (medflex: surname [P])
GIVEN = "given"                            # [G] §2.4 (medflex: name [P])
PATRONYMIC = "patronymic"                  # [G] §2.4 (medflex: patr_name [P])
GENDER = "gender"                          # [G] §2.4 (medflex: gender [P])
BIRTH_DATE = "birthDate"                   # [G] §2.4 (medflex: birth_date [P])
PERSONAL_SIGNS = "personalSigns"           # [G] §2.4, §8.1 (concept [C])
PERSONAL_SIGN = "personalSign"             # [G] §8.1
DOCTOR = "doctor"                          # [G] §8.1
ROLE = "role"                              # [G] §8.1
POSITION = "position"                      # [G] §8.1
SPECIALITY = "speciality"                  # [G] §8.1
SIGNATURE = "signature"                    # [G] §8.1
DATA = "data"                              # [G] §8.1, §8.3 (base64 payload)
CHECKSUM = "checksum"                      # [G] §2.5, §8.1 (believed CRC32 of the decoded data)
ORGANIZATION_SIGN = "organizationSign"     # [G] §2.4, §8.1
# МЧД block on a signature: nothing public on how РЭМД receives it (§6); shaped per the brief's advice.
POWER_OF_ATTORNEY = "powerOfAttorney"      # [G] §6
POA_NUMBER = "number"                      # [G] §6 (НомДовер GUID)
POA_PRINCIPAL_INN = "principalInn"         # [G] §6
POA_PRINCIPAL_OGRN = "principalOgrn"       # [G] §6
POA_DOCUMENT = "document"                  # [G] §6 (base64 МЧД XML)
POA_SIGNATURE = "signature"                # [G] §6 (base64 detached signature of the МЧД)

# --- answers: status and errors (§2.7, §8.2, §8.4) ------------------------------------------------
REGISTER_DOCUMENT_RESPONSE = "registerDocumentResponse"  # [P] §8.2
STATUS = "status"                          # [C] §8.4, [P] §8.2
ERRORS = "errors"                          # [C] §8.4
ITEM = "item"                              # [C] §8.4
CODE = "code"                              # [C] §8.4
MESSAGE = "message"                        # [C] §8.4
STATUS_SUCCESS = "success"                 # [C] §2.7
STATUS_ERROR = "error"                     # [C] §2.7

# --- registerDocumentResult callback (§8.4) -------------------------------------------------------
REGISTER_DOCUMENT_RESULT = "registerDocumentResult"        # [C] §8.4
RELATES_TO_MESSAGE = "relatesToMessage"                    # [C] §8.4
REGISTRY_ITEM = "registryItem"                             # [C] §8.4
EMDR_ID = "emdrId"                                         # [C] §8.4
REGISTRATION_DATE_TIME = "registrationDateTime"            # [C] §8.4
REGISTRATION_DATE = "registrationDate"                     # [C] §8.4 (older payloads)
STORE_TILL_DATE = "storeTillDate"                          # [P] §8.4
DOCUMENT_VERSION = "documentVersion"                       # [A] §8.4
REGISTER_DOCUMENT_RESULT_RESPONSE = "registerDocumentResultResponse"  # [G] §8.4 (our acknowledgement)

# --- getDocumentFile (§8.3) -----------------------------------------------------------------------
GET_DOCUMENT_FILE = "getDocumentFile"                      # [G] §8.3 (operation [P])
GET_DOCUMENT_FILE_RESPONSE = "getDocumentFileResponse"     # [G] §8.3

# --- searchRegistryItem / getRegistryItem (§2.1) --------------------------------------------------
SEARCH_REGISTRY_ITEM_REQUEST = "searchRegistryItemRequest"    # [C] §2.1
SEARCH_REGISTRY_ITEM_RESPONSE = "searchRegistryItemResponse"  # [C] §2.1
REGISTER_DATE_BEGIN = "registerDateBegin"                     # [C] §2.1 (remd-dev pytest)
REGISTER_DATE_END = "registerDateEnd"                         # [C] §2.1 (remd-dev pytest)
PATIENT_SNILS = "patientSnils"                                # [C] §2.1 (remd-dev pytest)
MATCHES = "matches"                                           # [C] §2.1
GET_REGISTRY_ITEM_REQUEST = "getRegistryItemRequest"          # [G] §2.1 (operation [P])
GET_REGISTRY_ITEM_RESPONSE = "getRegistryItemResponse"        # [G] §2.1

# --- SOAP Fault detail (§2.7, §8.5) ---------------------------------------------------------------
FAULT_ERROR_CODE = "errorCode"             # [P] §2.7 (peer reads code → errorCode → faultcode)
#: ИПС typed faults, each with a ``message`` child                              [A] §2.7
IPS_FAULTS = ("ValidationFault", "AuthorizationFault", "SystemFault")

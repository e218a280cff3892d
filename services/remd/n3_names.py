"""Every N3.Health (Нетрика) name the N3 route uses, with its evidence tag and source, in one place.

What is public (``docs/protocol.md#n3health``, [C]): REST services authenticate with
``Authorization: N3 <GUID>``; the regional ИЭМК ``EmkService`` is WCF SOAP 1.1 (service namespace
``http://tempuri.org/``, data contracts under ``http://schemas.datacontract.org/2004/07/N3.EMK.Dto…``) with
``AddCase`` / ``CreateCase`` + ``CloseCase`` / ``AddMedRecord``, the auth GUID as the first parameter of every
call; a ``MedDocument`` carries ``Attachments`` of ``DocumentAttachment`` (``Data``, ``OrganizationSign``,
``PersonalSigns`` of ``Sign`` + ``Doctor``, ``MimeType``); the document storage service finds documents by
``remdCode`` and ``oidMo`` and answers ``idDocumentMis``, ``remdCode``, ``createdDate``. What is *not* public:
how N3 takes a ready СЭМД with its УКЭП for РЭМД, its statuses, and whether it calls back. Everything of that
is [G] here and listed, with what to ask Нетрика, in ``docs/transports.md``. ``tests/test_remd_names.py``
checks that every name has a tag and a source.
"""

from __future__ import annotations

#: source key → where the evidence is
SOURCES = {
    "docs/protocol.md": "the protocol evidence in our words, with its public sources; #n3health is N3's section",
    "iemk-n3": "PoyarkinES/iemk_n3health EMKService.xml, Emk.Infrastructure/ExternalServices/Adapters/"
    "EmkServiceAdapter.cs, Emk.Infrastructure/DocumentGeneration/DocConsultNote.cs (N3 ИЭМК client)",
    "n3-api": "api.n3health.ru /docstorage/ and /sosnils/ pages; api.netrika.ru «IEMKService» (as stored)",
    "wcf": "WCF basicHttpBinding conventions (SOAPAction = <service ns>I<Service>/<Operation>, <Op>Response)",
}

# --- transport ------------------------------------------------------------------------------------
AUTH_HEADER = "Authorization"  # [C] n3-api
AUTH_SCHEME = "N3"  # [C] n3-api ("Authorization: N3 <GUID>")
#: our per-attempt request id, sent so Нетрика's support can find the call; header name a guess   [G] docs/protocol.md#n3health
REQUEST_ID_HEADER = "X-Request-ID"

# --- EmkService (SOAP 1.1) ------------------------------------------------------------------------
NS_SERVICE = "http://tempuri.org/"  # [C] docs/protocol.md#n3health, iemk-n3
NS_DTO = "http://schemas.datacontract.org/2004/07/N3.EMK.Dto"  # [C] docs/protocol.md#n3health (prefix; the exact sub-namespace [G])
NS_XSI = "http://www.w3.org/2001/XMLSchema-instance"  # [C] iemk-n3 (WCF writes xsi:type)
SERVICE_INTERFACE = "IEmkService"  # [G] wcf
ADD_CASE = "AddCase"  # [C] docs/protocol.md#n3health, iemk-n3
ADD_CASE_RESPONSE = "AddCaseResponse"  # [G] wcf
GUID = "guid"  # [C] docs/protocol.md#n3health (the auth token, first parameter of every call)
ID_LPU = "idLpu"  # [C] docs/protocol.md#n3health (AddMedRecord's parameter)
CASE_DTO = "caseDto"  # [G] iemk-n3 (AddCase's case parameter name)
CASE_TYPE = "CaseAmb"  # [G] iemk-n3 (an outpatient case, xsi:type)
ID_CASE_MIS = "IdCaseMis"  # [C] docs/protocol.md#n3health (idCaseMis); we use the localUid [G]
ID_PATIENT_MIS = "IdPatientMis"  # [C] docs/protocol.md#n3health (idPatientMis)
OPEN_DATE = "OpenDate"  # [G] iemk-n3
CLOSE_DATE = "CloseDate"  # [G] iemk-n3
MED_RECORDS = "MedRecords"  # [G] iemk-n3 (the case's records)
MED_RECORD = "MedRecord"  # [G] iemk-n3 (a list item; its xsi:type says which record)
ID_LPU_FIELD = "IdLpu"  # [G] iemk-n3 (the case's organisation in N3)
MED_DOCUMENT = "MedDocument"  # [C] docs/protocol.md#n3health (MedRecord + Attachments, …)
ID_DOCUMENT_MIS = "IdDocumentMis"  # [C] docs/protocol.md#n3health; = the localUid
#: N3's document type; carrying the НСИ 1520 kind in it is our reading                          [C] docs/protocol.md#n3health, [G] value
ID_MED_DOCUMENT_TYPE = "IdMedDocumentType"
CREATION_DATE = "CreationDate"  # [C] docs/protocol.md#n3health
HEADER = "Header"  # [C] docs/protocol.md#n3health (the document's title)
AUTHOR = "Author"  # [C] docs/protocol.md#n3health (MedicalStaff)
ATTACHMENTS = "Attachments"  # [C] docs/protocol.md#n3health
DOCUMENT_ATTACHMENT = "DocumentAttachment"  # [C] docs/protocol.md#n3health
DATA = "Data"  # [C] docs/protocol.md#n3health (base64 document)
MIME_TYPE = "MimeType"  # [C] docs/protocol.md#n3health
ORGANIZATION_SIGN = "OrganizationSign"  # [C] docs/protocol.md#n3health (base64 detached CMS of the МО)
PERSONAL_SIGNS = "PersonalSigns"  # [C] docs/protocol.md#n3health
PERSONAL_SIGN = "PersonalSign"  # [G] iemk-n3 (the list item's element name)
SIGN = "Sign"  # [C] docs/protocol.md#n3health (base64 detached CMS of the doctor)
DOCTOR = "Doctor"  # [C] docs/protocol.md#n3health (MedicalStaff)
# MedicalStaff / Person: the fields РЭМД cross-checks, in N3's naming as far as it is known
PERSON = "Person"  # [G] iemk-n3
ID_PERSON_MIS = "IdPersonMis"  # [G] iemk-n3
FAMILY_NAME = "FamilyName"  # [G] iemk-n3
GIVEN_NAME = "GivenName"  # [G] iemk-n3
MIDDLE_NAME = "MiddleName"  # [G] iemk-n3
SNILS = "Snils"  # [G] iemk-n3 (N3 keeps it among Person/Documents)
ID_POSITION = "IdPosition"  # [G] iemk-n3 (НСИ 1.2.643.5.1.13.13.11.1002 code)
POSITION_VERSION = (
    "PositionVersion"  # [G] docs/protocol.md#n3health (the version РЭМД needs; no N3 field is known)
)
ID_SPECIALITY = "IdSpeciality"  # [G] iemk-n3
ROLE = "Role"  # [G] docs/protocol.md#n3health (the РЭМД signer role; no N3 field is known)
MIME_TYPE_SEMD = "text/xml"  # [G] docs/protocol.md#n3health (a СЭМД as an attachment)
# fault: what EmkService answers when it refuses a request
REQUEST_FAULT = "RequestFault"  # [G] iemk-n3
FAULT_PROPERTY = "PropertyName"  # [G] iemk-n3
FAULT_CODE = "ErrorCode"  # [G] iemk-n3
FAULT_MESSAGE = "Message"  # [G] iemk-n3

# --- document storage (REST, JSON): where polling asks whether РЭМД registered the document -------
DOCSTORAGE_PATH = "/docstorage/"  # [C] n3-api
DOC_OID_MO = "oidMo"  # [C] n3-api (ФРМО OID of the organisation)
DOC_REMD_CODE = "remdCode"  # [C] n3-api (НСИ 1520 kind; a list in the request)
DOC_DATE_FROM = "dateFrom"  # [G] n3-api (the date window's names)
DOC_DATE_TO = "dateTo"  # [G] n3-api
DOC_ID_DOCUMENT_MIS = "idDocumentMis"  # [C] n3-api (= our localUid)
DOC_ID_CDA = "idCda"  # [C] n3-api
DOC_CREATED_DATE = "createdDate"  # [C] n3-api
DOC_EMDR_ID = "emdrId"  # [G] docs/protocol.md#n3health (the РЭМД registration number; no N3 field is known)
DOC_REGISTRATION_DATE = (
    "registrationDateTime"  # [G] docs/protocol.md#n3health (as РЭМД's own callback names it)
)
DOC_RESULT = "result"  # [G] n3-api (the list of found documents)

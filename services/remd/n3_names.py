"""Every N3.Health (Нетрика) name the N3 route uses, with its evidence tag and source, in one place.

The facts are in ``docs/n3-contract.md`` (N3's own WSDLs of EmkService and PixService, N3's minimal request
samples, a peer МИС's client); ``docs/transports.md`` has one row per constant below with the same tag
(``tests/test_n3_schema.py`` checks it), and says what to ask Нетрика about the [G] ones. Tags: [C] seen in N3's
own WSDL, sample or page; [P] a peer's client; [G] our guess. ``tests/test_remd_names.py`` checks that every name
has a tag and a source. The schema of what we send is ``services/data/n3/n3-subset.xsd``.
"""

from __future__ import annotations

#: source key → where the evidence is (docs/n3-contract.md cites each by commit)
SOURCES = {
    "emk-wsdl": "PoyarkinES/iemk_n3health EMKService.xml (N3's EmkService WSDL)",
    "pix-wsdl": "PoyarkinES/iemk_n3health PixService.xml (N3's PixService WSDL)",
    "emk10": "PoyarkinES/iemk_n3health Emk/Connected Services/EmkSvc/EMKService10.xsd (newer MedDoc schema)",
    "n3-samples": "ClawedRex555-creator/dental-mental docs/n3-samples/minimal-AddPatient.xml, minimal-AddMedRecord.xml",
    "peer": "ClawedRex555-creator/dental-mental lib/egisz/n3/client.ts, mappers.ts (a МИС on the N3 route)",
    "n3-api": "api.n3health.ru /docstorage/ page (N3's document storage)",
    "n3-internal": "a public SQL script over N3's RegistrySemd database (RegistryRemd Status, Message)",
    "wcf": "WCF basicHttpBinding conventions (SOAPAction = <ns>I<Service>/<Operation>, <Op>Response)",
    "ours": "our own choice where nothing public says (docs/transports.md, what to ask Нетрика)",
}

# --- transport ------------------------------------------------------------------------------------
#: N3's REST services authorise with this header (the document storage; our status poll copies it)  [C] n3-api
AUTH_HEADER = "Authorization"
AUTH_SCHEME = "N3"  # [C] n3-api ("Authorization: N3 <GUID>")
#: our per-attempt request id on every call, so Нетрика's support can find it; N3 names none  [G] ours
REQUEST_ID_HEADER = "X-Request-ID"
#: PixService is the sibling of EmkService on N3's hosts: the service files' names  [C] n3-samples
EMK_SERVICE_FILE = "EMKService.svc"
PIX_SERVICE_FILE = "PixService.svc"  # [C] n3-samples, peer (derives one address from the other)

# --- namespaces -------------------------------------------------------------------------------------
NS_SERVICE = "http://tempuri.org/"  # [C] emk-wsdl, pix-wsdl (operations and their parameters)
NS_PIX = "http://schemas.datacontract.org/2004/07/EMKService.Data.Dto"  # [C] pix-wsdl (PatientDto)
NS_MEDREC = "http://schemas.datacontract.org/2004/07/N3.EMK.Dto.MedRec"  # [C] emk-wsdl (MedRecord)
NS_MEDDOC = "http://schemas.datacontract.org/2004/07/N3.EMK.Dto.MedRec.MedDoc"  # [C] emk-wsdl (MedDocument)
NS_DTO = "http://schemas.datacontract.org/2004/07/N3.EMK.Dto"  # [C] emk-wsdl (MedicalStaff, Person)
NS_COMMON = "http://schemas.datacontract.org/2004/07/N3.EMK.Dto.Common"  # [C] emk-wsdl (faults)
NS_XSI = "http://www.w3.org/2001/XMLSchema-instance"  # [C] n3-samples (medRecord's xsi:type)

# --- operations -------------------------------------------------------------------------------------
PIX_INTERFACE = "IPixService"  # [C] pix-wsdl (SOAPAction http://tempuri.org/IPixService/AddPatient)
EMK_INTERFACE = "IEmkService"  # [C] emk-wsdl (SOAPAction http://tempuri.org/IEmkService/AddMedRecord)
ADD_PATIENT = "AddPatient"  # [C] pix-wsdl, n3-samples
ADD_PATIENT_RESPONSE = "AddPatientResponse"  # [C] pix-wsdl (an empty sequence)
ADD_MED_RECORD = "AddMedRecord"  # [C] emk-wsdl, n3-samples
ADD_MED_RECORD_RESPONSE = "AddMedRecordResponse"  # [C] emk-wsdl (an empty sequence)
GUID = "guid"  # [C] emk-wsdl, pix-wsdl (the clinic's auth GUID, first parameter of every call)
PIX_ID_LPU = "idLPU"  # [C] pix-wsdl (PixService's spelling)
EMK_ID_LPU = "idLpu"  # [C] emk-wsdl (EmkService's spelling)
ID_PATIENT_MIS = "idPatientMis"  # [C] emk-wsdl (the patient AddPatient registered)
PATIENT = "patient"  # [C] pix-wsdl
MED_RECORD = "medRecord"  # [C] emk-wsdl (declared MedRecord, sent with xsi:type MedDocument)

# --- PixService PatientDto, in the WSDL's order -------------------------------------------------------
BIRTH_DATE = "BirthDate"  # [C] pix-wsdl, n3-samples (a bare date in the sample)
DOCUMENTS = "Documents"  # [C] pix-wsdl, emk-wsdl (a person's identity documents)
DOCUMENT_DTO = "DocumentDto"  # [C] pix-wsdl (PatientDto's list item)
FAMILY_NAME = "FamilyName"  # [C] pix-wsdl, emk-wsdl
GIVEN_NAME = "GivenName"  # [C] pix-wsdl, emk-wsdl
ID_PATIENT_MIS_DTO = "IdPatientMIS"  # [C] pix-wsdl (capital MIS)
MIDDLE_NAME = "MiddleName"  # [C] pix-wsdl, emk-wsdl
SEX = "Sex"  # [C] pix-wsdl (xs:unsignedByte: НСИ 1040 gender code, 1 in the sample)

# --- identity documents: the СНИЛС --------------------------------------------------------------------
DOC_N = "DocN"  # [C] pix-wsdl, emk-wsdl (the СНИЛС, 11 digits without separators)
ID_DOCUMENT_TYPE = "IdDocumentType"  # [C] pix-wsdl, emk-wsdl
PROVIDER_NAME = "ProviderName"  # [C] pix-wsdl, emk-wsdl
IDENTITY_DOCUMENT = "IdentityDocument"  # [C] emk-wsdl (Person's list item)
SNILS_DOCUMENT_TYPE = "223"  # [C] n3-samples, peer (the СНИЛС as document type 223)
SNILS_PROVIDER = "ПФР"  # [C] n3-samples, peer

# --- EmkService MedDocument, in the WSDL's order --------------------------------------------------------
MED_DOCUMENT = "MedDocument"  # [C] emk-wsdl, n3-samples (medRecord's xsi:type, in the MedDoc namespace)
ATTACHMENTS = "Attachments"  # [C] emk-wsdl
DOCUMENT_ATTACHMENT = "MedDocumentDto.DocumentAttachment"  # [C] emk-wsdl (the dotted data-contract name)
DATA = "Data"  # [C] emk-wsdl (base64 of the exact signed СЭМД)
ORGANIZATION_SIGN = "OrganizationSign"  # [C] emk-wsdl (the МО's detached CMS, base64)
PERSONAL_SIGNS = "PersonalSigns"  # [C] emk-wsdl
PERSONAL_SIGN = "MedDocumentDto.PersonalSign"  # [C] emk-wsdl (the dotted data-contract name)
SIGN = "Sign"  # [C] emk-wsdl (a doctor's detached CMS, base64)
DOCTOR = "Doctor"  # [C] emk-wsdl (MedicalStaff)
MIME_TYPE = "MimeType"  # [C] emk-wsdl
MIME_TYPE_SEMD = "text/xml"  # [C] n3-samples
AUTHOR = "Author"  # [C] emk-wsdl (MedicalStaff: the document's author)
CREATION_DATE = "CreationDate"  # [C] emk-wsdl (dateTime with offset in the sample)
#: the document's title; we send the dictionary-195 name of its type  [C] n3-samples, [G] ours
HEADER = "Header"
ID_DOCUMENT_MIS = "IdDocumentMis"  # [C] emk-wsdl (= the localUid)
#: a dictionary-195 code, right after IdDocumentMis  [C] emk10, n3-samples
ID_MED_DOCUMENT_TYPE = "IdMedDocumentType"

# --- MedicalStaff and Person ------------------------------------------------------------------------------
PERSON = "Person"  # [C] emk-wsdl (PersonWithIdentity)
HUMAN_NAME = "HumanName"  # [C] emk-wsdl (GivenName, MiddleName, FamilyName, in that order)
ID_PERSON_MIS = "IdPersonMis"  # [C] emk-wsdl (the doctor's id in the МИС)
#: N3's own codes, per doctor in the organisations file (whether ФРМР codes would do is open)  [C] emk-wsdl, [G] ours
ID_SPECIALITY = "IdSpeciality"
ID_POSITION = "IdPosition"  # [C] emk-wsdl, [G] ours (xs:unsignedShort; N3 code, 114 in the sample)

# --- faults and warnings (soap:Fault/detail) ---------------------------------------------------------------
REQUEST_FAULT = "RequestFault"  # [C] emk-wsdl, pix-wsdl
ARRAY_OF_REQUEST_FAULT = "ArrayOfRequestFault"  # [C] emk-wsdl, pix-wsdl (the ListOf_ fault's detail)
REQUEST_WARNING = "RequestWarning"  # [C] emk-wsdl
ARRAY_OF_REQUEST_WARNING = "ArrayOfRequestWarning"  # [C] emk-wsdl (the ListOf_ warning's detail)
FAULT_PROPERTY = "PropertyName"  # [C] emk-wsdl
FAULT_MESSAGE = "Message"  # [C] emk-wsdl
FAULT_CODE = "ErrorCode"  # [C] emk-wsdl (xs:int; N3's numbers are not public)
FAULT_ERRORS = "Errors"  # [C] emk-wsdl (nested RequestFault list)
WARNING_CODE = "WarningCode"  # [C] emk-wsdl (xs:int)
WARNINGS = "Warnings"  # [C] emk-wsdl (nested RequestWarning list)
#: how a РЭМД code shows inside N3's message text ("Code: OBJECT_NOT_FOUND")  [C] n3-internal, [G] in a fault
REMD_CODE_MARKER = "Code:"
#: the property a fault names when EmkService does not know the patient (AddPatient again)  [G] ours
PATIENT_UNKNOWN_PROPERTY = "idPatientMis"

# --- the status poll: a status method N3 does not publish (docs/transports.md) -------------------------
#: the document asked about, by its localUid (as the document storage names it)  [G] ours
STATUS_ID_DOCUMENT_MIS = "idDocumentMis"
STATUS_OID_MO = "oidMo"  # [G] ours (as the document storage names the organisation)
STATUS_STATE = "status"  # [G] ours (N3's per-document РЭМД status, kept in its RegistryRemd)
#: RegistryRemd's status for «Успешно зарегистрировано в МЗ»  [C] n3-internal, [G] exposed
STATUS_REGISTERED = 4
STATUS_EMDR_ID = "emdrId"  # [G] ours (the РЭМД registration number; N3 keeps a registry id)
STATUS_REGISTRATION_DATE = "registrationDateTime"  # [G] ours (as РЭМД's own callback names it)
STATUS_MESSAGE = "message"  # [G] ours (RegistryRemd's Message: РЭМД's answer)

# --- the document storage: «Поиск документа по ДМС» (not a status channel) --------------------------------
DOC_DMS_VALUE = "dmsValue"  # [C] n3-api (the patient's ДМС policy number; required)
DOC_REMD_CODE = "remdCode"  # [C] n3-api (НСИ 1520 kinds, a list; an int in the answer)
DOC_DATE_START = "dateStart"  # [C] n3-api (required date)
DOC_DATE_END = "dateEnd"  # [C] n3-api (required date)
DOC_OID_MO = "oidMo"  # [C] n3-api (ФРМО OID of the organisation)
DOC_ID_CDA = "idCda"  # [C] n3-api
DOC_ID_DOCUMENT_MIS = "idDocumentMis"  # [C] n3-api (= our localUid)
DOC_CREATED_DATE = "createdDate"  # [C] n3-api
DOC_RESULT = "result"  # [G] n3-api (the page shows no wrapper; a bare list is read too)

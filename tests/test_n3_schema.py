"""The project's schema of what it sends to N3 (``services/data/n3``): its shape, and each divergence of the old
guessed requests from N3's contract (the issue's list, ``docs/n3-contract.md``) refused by it; and the names module
against ``docs/transports.md``."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator
from lxml import etree

from services.remd import envelope, n3
from services.remd import n3_names as names
from tests.test_n3 import CODES, DOCUMENT, TOKEN, _patient, _registration
from tests.test_remd_names import _annotated

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "services" / "data" / "n3"
XS = "http://www.w3.org/2001/XMLSchema"
T, MD, DTO, CMN = names.NS_SERVICE, names.NS_MEDDOC, names.NS_DTO, names.NS_COMMON
NS = {"t": T, "md": MD, "d": DTO, "p": names.NS_PIX, "c": CMN}


def _valid_add_med_record() -> etree._Element:
    body = n3.build_add_med_record(
        _registration(), document=DOCUMENT, token=TOKEN, lpu_id="lpu-9", codes=CODES
    )
    call = envelope.open_envelope(body)[1]
    assert n3.validate(call) == []  # every divergence below starts from a valid request
    return copy.deepcopy(call)


def _refused(el: etree._Element) -> bool:
    return n3.validate(el) != []


# --- the schema itself -----------------------------------------------------------------------------------------


def _wsdl_orders() -> dict[str, list[str]]:
    """docs/n3-contract.md's table of the WSDL's member orders: type → members."""
    text = (ROOT / "docs" / "n3-contract.md").read_text(encoding="utf-8")
    table = text.split("<!-- wsdl-orders")[1].split("<!-- /wsdl-orders -->")[0]
    orders = {}
    for row in table.splitlines():
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0].startswith("`"):
            orders[cells[0].strip("`")] = [m.strip() for m in cells[1].split(",")]
    return orders


def _sequences() -> list[tuple[str, str, list[str]]]:
    """(file, type or element name, the names of its sequence's elements) of every xs:sequence of the schema."""
    out = []
    for path in sorted(DATA.glob("n3-*.xsd")):
        tree = etree.parse(str(path))
        for seq in tree.iter(f"{{{XS}}}sequence"):
            owner = next(
                a
                for a in seq.iterancestors()
                if etree.QName(a).localname in ("complexType", "element") and a.get("name")
            )
            out.append(
                (path.name, owner.get("name"), [e.get("name") for e in seq.findall(f"{{{XS}}}element")])
            )
    return out


def test_the_schema_has_no_wildcards():
    """No xs:any, xs:anyAttribute or xs:anyType anywhere: nothing unexpected is let through."""
    for path in DATA.glob("*.xsd"):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"<xs:any\b|<xs:anyAttribute\b|\banyType\b", text), path.name


def test_each_sequence_keeps_the_order_of_n3s_contract():
    """Every xs:sequence lists its members in the order docs/n3-contract.md gives from N3's WSDL (leaving some out)."""
    orders = _wsdl_orders()
    checked = 0
    for file, owner, members in _sequences():
        if not members:
            continue
        assert owner in orders, f"{file}: {owner} has no WSDL order in docs/n3-contract.md"
        order = orders[owner]
        assert all(m in order for m in members), f"{file}: {owner}: {members} not all in {order}"
        positions = [order.index(m) for m in members]
        assert positions == sorted(positions), f"{file}: {owner}: {members} out of the WSDL's order {order}"
        checked += 1
    assert checked >= 15


def test_the_schema_names_its_public_sources():
    """Each schema file says it is written from our notes and names the public sources by commit."""
    for path in DATA.glob("n3-*.xsd"):
        head = path.read_text(encoding="utf-8")[:2500]
        assert "docs/n3-contract.md" in head, path.name
        assert "PoyarkinES/iemk_n3health" in head and re.search(r"\b[0-9a-f]{40}\b", head), path.name


# --- the ten divergences of the issue, each refused ---------------------------------------------------------------


def test_divergence_1_add_case_with_idlpu_is_refused():
    """AddCase(guid, idLpu, caseDto) — our old operation — is refused: AddCase has no idLpu."""
    valid = _valid_add_med_record()
    old = etree.Element(f"{{{T}}}AddCase", nsmap={None: T})
    for local in ("guid", "idLpu"):
        old.append(copy.deepcopy(valid.find(f"t:{local}", NS)))
    etree.SubElement(old, f"{{{T}}}caseDto")
    assert _refused(old)
    only_case = etree.Element(f"{{{T}}}AddCase", nsmap={None: T})
    only_case.append(copy.deepcopy(valid.find("t:guid", NS)))
    etree.SubElement(only_case, f"{{{T}}}caseDto")
    assert not _refused(only_case)  # the parameter list the schema knows is AddCase's own


def test_divergence_2_one_namespace_for_everything_is_refused():
    """Every member of the record in the one N3.EMK.Dto namespace, as we wrote it, is refused."""
    call = _valid_add_med_record()
    record = call.find("t:medRecord", NS)
    for el in record.iter(etree.Element):
        if el is not record:
            el.tag = f"{{{DTO}}}{etree.QName(el).localname}"
    assert _refused(call)


def test_divergence_3_undotted_list_items_are_refused():
    """DocumentAttachment and PersonalSign without the MedDocumentDto. prefix are refused, each on its own."""
    for local in ("MedDocumentDto.DocumentAttachment", "MedDocumentDto.PersonalSign"):
        call = _valid_add_med_record()
        el = next(e for e in call.iter(f"{{{MD}}}{local}"))
        el.tag = f"{{{MD}}}{local.split('.', 1)[1]}"
        assert _refused(call), local


def test_divergence_4_names_directly_under_person_are_refused():
    """GivenName, MiddleName and FamilyName directly under Person instead of inside HumanName are refused."""
    call = _valid_add_med_record()
    person = call.find("t:medRecord/md:Author/d:Person", NS)
    human = person.find("d:HumanName", NS)
    for i, name in enumerate(list(human)):
        person.insert(i, name)
    person.remove(human)
    assert _refused(call)


def test_divergence_5_a_snils_element_instead_of_document_223_is_refused():
    """A Person/Snils element is refused, and so is an identity document that is not the СНИЛС (223 / ПФР)."""
    call = _valid_add_med_record()
    person = call.find("t:medRecord/md:Author/d:Person", NS)
    snils = etree.Element(f"{{{DTO}}}Snils")
    snils.text = "11223344595"
    person.replace(person.find("d:Documents", NS), snils)
    assert _refused(call)
    passport = _valid_add_med_record()
    passport.find(".//d:IdentityDocument/d:IdDocumentType", NS).text = "14"
    assert _refused(passport)


def test_divergence_6_role_and_position_version_are_refused():
    """MedicalStaff/Role and MedicalStaff/PositionVersion are refused, each on its own."""
    for local in ("Role", "PositionVersion"):
        call = _valid_add_med_record()
        etree.SubElement(call.find("t:medRecord/md:Author", NS), f"{{{DTO}}}{local}").text = "1"
        assert _refused(call), local


@pytest.mark.parametrize(
    "parent,order",
    [
        ("t:medRecord", ["CreationDate", "Header", "IdDocumentMis", "IdMedDocumentType", "Author", "Attachments"]),
        ("t:medRecord/md:Attachments/md:MedDocumentDto.DocumentAttachment",
         ["Data", "MimeType", "OrganizationSign", "PersonalSigns"]),
        (".//md:MedDocumentDto.PersonalSign", ["Doctor", "Sign"]),
        ("t:medRecord/md:Author", ["Person", "IdPosition", "IdSpeciality"]),
        ("t:medRecord/md:Author/d:Person/d:HumanName", ["FamilyName", "GivenName", "MiddleName"]),
    ],
)  # fmt: skip
def test_divergence_7_our_old_element_orders_are_refused(parent, order):
    """Each member order we used to write (which WCF would read as missing members) is refused."""
    call = _valid_add_med_record()
    el = call.find(parent, NS)
    kids = {etree.QName(c).localname: c for c in el}
    for local in order:
        el.append(kids[local])  # re-appended in the old order
    assert _refused(call)


def test_divergence_8_the_nsi_1520_kind_in_id_med_document_type_is_refused_by_the_contract_check():
    """The НСИ 1520 kind (119) where dictionary 195's code (198) belongs cannot be seen by a context-free schema — 119
    is itself a valid code of dictionary 195 (kind 104's) and the kind is inside the base64 attachment — so it is the
    dictionary cross-check of the emulator's N3 face that refuses it, naming IdMedDocumentType
    (tests/test_n3_emulator.py::test_a_kind_number_in_id_med_document_type_is_refused_naming_the_property); what the
    schema can see of it, a value that is no number, it refuses."""
    call = _valid_add_med_record()
    call.find("t:medRecord/md:IdMedDocumentType", NS).text = "1.2.643.5.1.13.13.11.1520:119"
    assert _refused(call)


def test_divergence_9_the_old_fault_namespace_and_string_codes_are_refused():
    """A RequestFault in N3.EMK.Dto (our old reading) is unknown to the schema; in N3.EMK.Dto.Common with a string
    ErrorCode, or in our old member order, it is refused too."""
    old = etree.Element(f"{{{DTO}}}RequestFault", nsmap={None: DTO})
    for local, text in (("ErrorCode", "VALIDATION_ERROR"), ("Message", "m"), ("PropertyName", "p")):
        etree.SubElement(old, f"{{{DTO}}}{local}").text = text
    assert _refused(old)
    good = etree.Element(f"{{{CMN}}}RequestFault", nsmap={None: CMN})
    for local, text in (("PropertyName", "p"), ("Message", "m"), ("ErrorCode", "1")):
        etree.SubElement(good, f"{{{CMN}}}{local}").text = text
    assert not _refused(good)
    string_code = copy.deepcopy(good)
    string_code.find("c:ErrorCode", NS).text = "VALIDATION_ERROR"
    reordered = copy.deepcopy(good)
    reordered.insert(0, reordered.find("c:ErrorCode", NS))
    assert _refused(string_code) and _refused(reordered)


def test_divergence_10_the_old_document_storage_parameters_are_refused():
    """The document storage search is JSON, so its schema is a JSON Schema (services/data/n3): our old query
    (dateFrom, dateTo, no dmsValue) is refused, the real one accepted."""
    schema = json.loads((DATA / "docstorage-search.schema.json").read_text(encoding="utf-8"))
    validator = Draft202012Validator(schema)
    old = {
        "oidMo": "1.2.643.5.1.13.13.12.2.77.1",
        "remdCode": [119],
        "dateFrom": "2026-11-21",
        "dateTo": "2026-11-23",
    }
    problems = {e.validator for e in validator.iter_errors(old)}
    assert {"required", "additionalProperties"} <= problems
    real = n3.search_query(
        dms_value="ДМС-1", organization="1.2.643.5.1.13.13.12.2.77.1", since=__import__("datetime").date(2026, 11, 21),
        until=__import__("datetime").date(2026, 11, 23), kinds=["119"],
    )  # fmt: skip
    assert list(validator.iter_errors(real)) == []


def test_the_pix_wrapper_refuses_emk_spelling_and_separated_snils():
    """AddPatient with EmkService's idLpu, or a СНИЛС with separators, is refused: names and values are N3's."""
    call = envelope.open_envelope(n3.build_add_patient(_patient(), token=TOKEN, lpu_id="l"))[1]
    assert not _refused(call)
    emk_spelling = copy.deepcopy(call)
    emk_spelling.find("t:idLPU", NS).tag = f"{{{T}}}idLpu"
    separated = copy.deepcopy(call)
    separated.find(".//p:DocN", NS).text = "112-233-445 95"
    assert _refused(emk_spelling) and _refused(separated)


# --- the names module against docs/transports.md -------------------------------------------------------------------


def _doc_rows() -> dict[str, set[str]]:
    """`CONSTANT` → the tags of its row in docs/transports.md's N3 names table."""
    text = (ROOT / "docs" / "transports.md").read_text(encoding="utf-8")
    table = text.split("<!-- n3-names")[1].split("<!-- /n3-names -->")[0]
    rows = {}
    for row in table.splitlines():
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = set(re.findall(r"\[(C|P|A|G)\]", cells[2]))
    return rows


def test_every_n3_name_has_a_row_in_the_docs_with_the_same_tag():
    """Each constant of services/remd/n3_names.py has a row in docs/transports.md with exactly its [C]/[P]/[G] tags,
    and the table lists no name the module does not have."""
    module = {name: set(re.findall(r"\[(C|P|A|G)\]", comment)) for name, comment in
              _annotated(ROOT / "services" / "remd" / "n3_names.py")}  # fmt: skip
    rows = _doc_rows()
    assert {n: rows.get(n) for n in module} == module
    assert set(rows) == set(module)

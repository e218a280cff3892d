"""СЭМД validation: the Ministry examples give the outcomes recorded in lab/data/samples/SOURCES.md."""

from __future__ import annotations

import pytest
from lxml import etree

from lab.dev.samples import REPOSITORY_SAMPLES
from producer.errors import PermanentError
from services.documents import schematron as sch
from services.documents import validation as sv

SAMPLES = REPOSITORY_SAMPLES
HL7 = "{urn:hl7-org:v3}"


def sample(name: str) -> bytes:
    return (SAMPLES / f"{name}.xml").read_bytes()


# (kind, example, XSD checked, Schematron checked, failed asserts/fired reports) — SOURCES.md's table
EXPECTED = [
    ("119", "ConsultRedaction4", True, True, 0),
    ("68", "ConsultRedaction3", True, False, 0),
    ("76", "BirthCertificate", True, True, 1),
    ("58", "DeathCertificate", True, True, 7),
    ("191", "MedExamination", True, True, 0),
    ("81", "StudentTempInvalid", True, True, 0),
    ("100", "CertOnPayForMedServ", True, True, 3),
    ("101", "WorkAtHeightCertificate", True, True, 20),
    ("147", "EpicrisisV5", False, True, 0),
    # vendored from 1CMedicine/semd_validator c8164c61 (services/data/semd/SOURCES.md)
    ("59", "PerinatalDeathCertificate", True, True, 10),
    ("63", "Weapon", True, True, 0),
    ("64", "Drugs", True, True, 0),
    ("65", "Sanatory", True, True, 0),
    ("80", "EpidContact", True, True, 0),
    ("82", "GroupForPhysicalEducation", True, True, 0),
    ("83", "Sport", True, True, 0),
    ("84", "SwimmingPool", True, True, 0),
    ("85", "ReferralCabinet", True, False, 0),
    ("88", "LeaveCountry", True, True, 0),
    ("96", "DDResults", True, True, 0),
    ("110", "Instrumentalv3", True, True, 0),
    ("116", "WeaponNotification", True, True, 1),
    ("142", "ConclusionVaccineComplication", True, True, 0),
    ("143", "ElderlyCareAssessment", True, True, 0),
    ("144", "ProstheticsIndicationCert", True, True, 1),
    ("163", "MedicalManipulationProtocol", True, True, 0),
    ("182", "ReturnSanatory", True, True, 0),
    ("183", "ReturnSanatoryChild", True, True, 0),
    ("194", "MedReportOnResMedExam2", True, True, 0),
]


def test_known_kinds_are_the_packaged_schema_folders():
    """known_kinds() lists every kind with an XSD or a Schematron, in numeric order."""
    assert sv.known_kinds() == tuple(sorted((k for k, *_ in EXPECTED), key=int))
    assert sv.has_xsd("68") and not sv.has_schematron("68")
    assert sv.has_schematron("147") and not sv.has_xsd("147")


@pytest.mark.parametrize(
    ("kind", "name", "xsd", "schematron", "failures"), EXPECTED, ids=[f"{k}-{n}" for k, n, *_ in EXPECTED]
)
def test_ministry_example_gives_the_recorded_outcome(kind, name, xsd, schematron, failures):
    """Each Ministry example is XSD-valid for its kind and fails exactly as many Schematron checks as recorded."""
    report = sv.validate_semd(sample(name), kind)
    assert report.kind == kind
    assert report.checked_xsd is xsd
    assert report.checked_schematron is schematron
    assert report.xsd_errors == ()
    assert len(report.schematron_failures) == failures
    assert report.valid is (failures == 0)
    for failure in report.schematron_failures:
        assert failure.line is not None and failure.line > 1
        assert failure.location.startswith("/ClinicalDocument[1]")


def test_birth_certificate_failure_points_at_the_document_number():
    """The one BirthCertificate failure names the rule, the node and its source line."""
    (failure,) = sv.validate_semd(sample("BirthCertificate"), "76").schematron_failures
    assert failure.kind == "assert"
    assert "первую цифру номера документа" in failure.message
    assert failure.location.endswith("/observation[1]/value[1]")
    assert failure.line == 414
    assert sample("BirthCertificate").splitlines()[413].strip() == b'<value xsi:type="ST">123456</value>'


def test_ensure_valid_passes_a_valid_document_and_returns_its_report():
    """ensure_valid returns the report for a document that passes both XSD and Schematron."""
    report = sv.ensure_valid(sample("ConsultRedaction4"), "119")
    assert report.valid and report.checked_xsd and report.checked_schematron


def test_ensure_valid_rejects_schematron_failures_with_lines():
    """A Schematron failure raises SCHEMATRON_INVALID, listing the first failures with their line numbers."""
    with pytest.raises(PermanentError) as exc:
        sv.ensure_valid(sample("DeathCertificate"), "58")
    assert exc.value.reason == "SCHEMATRON_INVALID"
    assert exc.value.details == {"kind": "58", "errors": 7}
    assert "line 136 /ClinicalDocument[1]/" in exc.value.message and ": У1-15." in exc.value.message
    assert "(and 4 more)" in exc.value.message


def _with_stray_text() -> bytes:
    """ConsultRedaction4 with the defect PreoperativeEpicrisisV1 has: text inside an element-only element."""
    root = etree.fromstring(sample("ConsultRedaction4"))
    assigned = root.find(f"{HL7}author/{HL7}assignedAuthor")
    assigned.text = "Роль исполнителя"
    return etree.tostring(root, encoding="UTF-8", xml_declaration=True)


def test_xsd_invalid_document_is_rejected_naming_the_element():
    """Stray text in author/assignedAuthor makes the document XSD-invalid, and the error names that element."""
    data = _with_stray_text()
    report = sv.validate_semd(data, "119", schematron=False)
    assert report.checked_xsd and not report.checked_schematron
    assert len(report.xsd_errors) == 1
    error = report.xsd_errors[0]
    assert "Element 'assignedAuthor'" in error.message
    expected_line = next(i for i, line in enumerate(data.splitlines(), 1) if b"<assignedAuthor>" in line)
    assert error.line == expected_line

    with pytest.raises(PermanentError) as exc:
        sv.ensure_valid(data, "119")
    assert exc.value.reason == "XSD_INVALID"
    assert (
        f"line {expected_line} /ClinicalDocument[1]/author[1]/assignedAuthor[1]: Element 'assignedAuthor'"
        in exc.value.message
    )


def test_unexpected_element_is_named_in_the_xsd_error():
    """An element the schema does not allow is reported by name with the line it is on."""
    root = etree.fromstring(sample("StudentTempInvalid"))
    title = root.find(f"{HL7}title")
    title.addnext(etree.Element(f"{HL7}subtitle"))
    report = sv.validate_semd(root, "81")
    assert not report.valid
    assert any("Element 'subtitle'" in e.message and "not expected" in e.message for e in report.xsd_errors)


def test_ensure_valid_skips_schematron_once_the_xsd_failed():
    """When the XSD fails, ensure_valid does not spend time on the Schematron."""
    root = etree.fromstring(sample("BirthCertificate"))
    root.find(f"{HL7}title").addnext(etree.Element(f"{HL7}subtitle"))
    report = sv.validate_semd(root, "76")
    assert report.xsd_errors and report.schematron_failures  # validate_semd reports both
    with pytest.raises(PermanentError) as exc:
        sv.ensure_valid(root, "76")
    assert exc.value.reason == "XSD_INVALID"


def test_kind_without_schema_is_not_checked_not_rejected():
    """A kind with no packaged schema gives a 'not checked' report, and ensure_valid lets it through."""
    report = sv.ensure_valid(sample("ConsultRedaction4"), "227")
    assert not report.checked and report.valid
    assert "not checked" in report.summary()
    assert not sv.validate_semd(sample("ConsultRedaction4"), "../119").checked


def test_schematron_can_be_switched_off():
    """schematron=False checks the XSD only, so a Schematron-failing document passes."""
    report = sv.ensure_valid(sample("BirthCertificate"), "76", schematron=False)
    assert report.checked_xsd and not report.checked_schematron and report.valid


def test_untrusted_bytes_go_through_the_hardened_parser():
    """Bytes with a DOCTYPE are refused by producer.xmlsafe before any schema runs."""
    data = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "x">]><ClinicalDocument xmlns="urn:hl7-org:v3">&e;</ClinicalDocument>'
    with pytest.raises(PermanentError) as exc:
        sv.validate_semd(data, "119")
    assert exc.value.reason in ("ENTITY_FORBIDDEN", "DTD_FORBIDDEN")
    with pytest.raises(PermanentError) as exc:
        sv.validate_semd(b"x" * 100, "119", max_bytes=10)
    assert exc.value.reason == "TOO_LARGE"


def test_strip_hl7_namespace_copies_and_keeps_lines():
    """Removing the HL7 default namespace works on a copy, keeps other namespaces and source lines."""
    root = etree.fromstring(sample("ConsultRedaction4"))
    stripped = sv.strip_hl7_namespace(root)
    assert root.tag == f"{HL7}ClinicalDocument"
    assert stripped.tag == "ClinicalDocument" and None not in stripped.nsmap
    assert "identity" in stripped.nsmap
    assert [e.sourceline for e in root.iter(etree.Element)] == [
        e.sourceline for e in stripped.iter(etree.Element)
    ]
    assert b'xmlns="urn:hl7-org:v3"' not in etree.tostring(stripped)


def test_schemas_are_compiled_once_per_process(monkeypatch):
    """The second document of a kind reuses the compiled Schematron instead of compiling it again."""
    calls = []
    real = sv.compile_schematron
    monkeypatch.setattr(sv, "compile_schematron", lambda path: calls.append(path) or real(path))
    monkeypatch.setattr(sv, "_sch", {})
    sv.validate_semd(sample("StudentTempInvalid"), "81")
    sv.validate_semd(sample("StudentTempInvalid"), "81")
    assert len(calls) == 1


@pytest.mark.parametrize(
    ("kind", "name"),
    [("58", "DeathCertificate"), ("101", "WorkAtHeightCertificate"), ("76", "BirthCertificate")],
)
def test_name_indexed_run_finds_what_the_full_walk_finds(kind, name):
    """The fast name-indexed Schematron run gives exactly the failures of walking the whole document per pattern."""
    path = sv.DATA_DIR / kind / "schematron.sch"
    doc = sv.strip_hl7_namespace(etree.fromstring(sample(name)))
    fast = [(h.check.index, h.location) for h in sch.compile_schematron(path).run(doc)]
    slow = [(h.check.index, h.location) for h in sch.compile_schematron(path, walk_all=True).run(doc)]
    assert fast == slow and fast


# -- the Schematron compiler on small hand-written schemas ------------------------------------------


def _schema(body: str) -> bytes:
    return (
        f'<schema xmlns="http://purl.oclc.org/dsdl/schematron" queryBinding="xslt2">'
        f'<ns prefix="x" uri="urn:x"/>{body}</schema>'
    ).encode()


def _run(body: str, doc: str) -> list[sch.SchematronHit]:
    xslt, checks = sch.to_xslt(_schema(body))
    return sch.CompiledSchematron(xslt, checks).run(doc)


def test_first_matching_rule_of_a_pattern_wins():
    """Within one pattern a node is handled by the first rule whose context matches, as ISO Schematron says."""
    hits = _run(
        '<pattern><rule context="item[@special]"><assert test="false()">special</assert></rule>'
        '<rule context="item"><assert test="false()">plain</assert></rule></pattern>',
        "<list><item special='1'/><item/></list>",
    )
    assert [(h.message, h.location) for h in hits] == [
        ("special", "/Q{}list[1]/Q{}item[1]"),
        ("plain", "/Q{}list[1]/Q{}item[2]"),
    ]


def test_report_fires_when_true_and_patterns_are_independent():
    """A report fires on a true test, and a second pattern sees the same nodes again."""
    hits = _run(
        '<pattern><rule context="a"><report test="@n">has n</report></rule></pattern>'
        '<pattern><rule context="a"><assert test="@m">needs m</assert></rule></pattern>',
        "<r><a n='1'/><a m='1'/></r>",
    )
    assert [(h.check.kind, h.message) for h in hits] == [("report", "has n"), ("assert", "needs m")]


def test_let_value_of_and_namespaces_in_messages():
    """let variables, value-of and name() are evaluated, with the schema's ns prefixes."""
    hits = _run(
        '<let name="limit" value="2"/><pattern><rule context="x:v"><let name="n" value="number(.)"/>'
        '<assert test="$n le $limit"><name/> is <value-of select="$n"/>, over <value-of select="$limit"/></assert>'
        "</rule></pattern>",
        "<r xmlns:x='urn:x'><x:v>1</x:v><x:v>5</x:v></r>",
    )
    assert [h.message for h in hits] == ["x:v is 5, over 2"]


def test_a_message_without_the_documents_values_is_kept_beside_the_full_one():
    """Each value-of of an assert is left out of the hit's rule, the text that may leave the process."""
    hits = _run(
        '<pattern><rule context="patient"><assert test="string-length(family) lt 5">Фамилия '
        '<value-of select="family"/> длиннее 4 знаков, СНИЛС <value-of select="@snils"/></assert></rule></pattern>',
        "<r><patient snils='25463625426'><family>Добровольская</family></patient></r>",
    )
    assert [h.message for h in hits] == ["Фамилия Добровольская длиннее 4 знаков, СНИЛС 25463625426"]
    assert [h.rule for h in hits] == ["Фамилия … длиннее 4 знаков, СНИЛС …"]


def _with_patient(family: str, birth_time: str) -> bytes:
    """BirthCertificate with the patient's family name and birth date replaced (values a schema refuses)."""
    root = etree.fromstring(sample("BirthCertificate"))
    patient = root.find(f"{HL7}recordTarget/{HL7}patientRole/{HL7}patient")
    patient.find(f"{HL7}name/{HL7}family").append(etree.Element(f"{HL7}x"))
    patient.find(f"{HL7}name/{HL7}family").text = family
    patient.find(f"{HL7}birthTime").set("value", birth_time)
    return etree.tostring(root, encoding="UTF-8", xml_declaration=True)


def test_validation_errors_name_the_xpath_and_rule_never_the_value():
    """A birth date the XSD refuses is reported by its XPath and facet; neither it nor the name leaves in the text."""
    data = _with_patient("Добровольская", "1980x0517")
    report = sv.validate_semd(data, "76", schematron=False)
    assert any("1980x0517" in e.message for e in report.xsd_errors)  # libxml2's own text quotes it
    with pytest.raises(PermanentError) as exc:
        sv.ensure_valid(data, "76")
    text = exc.value.message + str(exc.value.details)
    assert "/ClinicalDocument[1]/recordTarget[1]/patientRole[1]/patient[1]/birthTime[1]" in text
    assert "[facet 'pattern'] The value is not accepted by the pattern" in text
    for value in ("1980x0517", "19800517", "Добровольская"):
        assert value not in text
    assert all("1980x0517" not in str(e) for e in report.xsd_errors)


@pytest.mark.parametrize(
    "message",
    [
        "Element 'value': 'Иванов Иван' is not a valid value of the atomic type 'xs:int'.",
        "Element 'family': [facet 'enumeration'] The value 'Иванов' is not an element of the set {'a', 'b'}.",
        "Element 'id', attribute 'extension': Duplicate key-sequence ['254-636-254 26'] in unique "
        "identity-constraint 'u'.",
        "Element 'given': [facet 'maxLength'] The value 'Иван' has a length of '4'; this exceeds the allowed "
        "maximum length of '3'.",
        "Element 'birthTime', attribute 'value': '19800517' is not facet-valid with respect to pattern 'x'.",
    ],
)
def test_every_libxml2_phrasing_of_a_value_is_rewritten(message):
    """Each way libxml2 quotes the offending value is rewritten to the rule alone."""
    safe = sv.safe_xsd_message(message)
    for value in ("Иванов", "Иван", "254-636-254", "19800517"):
        assert value not in safe
    assert safe.startswith("Element '")


def test_xpath_31_array_literal_as_the_ministry_uses_it():
    """The Ministry's ``@a=['1','2']`` (an XPath 3.1 array) compares against each member."""
    hits = _run(
        "<pattern><rule context='c'><assert test=\"@s=['1','2']\">bad</assert></rule></pattern>",
        "<r><c s='2'/><c s='3'/></r>",
    )
    assert [h.location for h in hits] == ["/Q{}r[1]/Q{}c[2]"]


def test_a_test_that_raises_is_a_failure_not_a_crash():
    """A test with a dynamic error (bad date cast) fails that check and the other checks still run."""
    hits = _run(
        '<ns prefix="xs" uri="http://www.w3.org/2001/XMLSchema"/><pattern><rule context="d">'
        "<assert test=\"xs:date(@v) lt xs:date('2030-01-01')\">early</assert></rule></pattern>",
        "<r><d v='2020-01-01'/><d v='not a date'/><d v='2040-01-01'/></r>",
    )
    assert [h.location for h in hits] == ["/Q{}r[1]/Q{}d[2]", "/Q{}r[1]/Q{}d[3]"]
    assert hits[0].message.startswith("test could not be evaluated")
    assert hits[1].message == "early"


def test_attribute_contexts_fall_back_to_the_full_walk():
    """A rule on attributes still fires: such a pattern walks attributes instead of selecting by name."""
    hits = _run(
        '<pattern><rule context="@code"><assert test="string-length(.) = 3">len</assert></rule></pattern>',
        "<r><a code='abc'/><b code='ab'/></r>",
    )
    assert [h.location for h in hits] == ["/Q{}r[1]/Q{}b[1]/@code"]


def test_unsupported_constructs_are_refused():
    """Abstract patterns and includes are refused at compile time rather than silently skipped."""
    with pytest.raises(sch.SchematronError):
        sch.to_xslt(
            _schema(
                '<pattern abstract="true" id="p"><rule context="$a"><assert test="1">x</assert></rule></pattern>'
            )
        )
    with pytest.raises(sch.SchematronError):
        sch.to_xslt(_schema('<include href="other.sch"/>'))
    with pytest.raises(sch.SchematronError):
        sch.to_xslt(b"<schema/>")


# -- emd validate -----------------------------------------------------------------------------------


def _cli(*argv: str) -> int:
    import argparse

    from services.commands import validate_cmd

    parser = argparse.ArgumentParser()
    validate_cmd.register(parser.add_subparsers())
    args = parser.parse_args(["validate", *argv])
    return args.func(args)


def test_cli_exit_status_says_valid_invalid_or_unreadable(tmp_path, capsys):
    """emd validate exits 0 for a valid document, 1 for an invalid one (listing it), 2 for unreadable input."""
    assert _cli(str(SAMPLES / "ConsultRedaction4.xml"), "--kind", "119") == 0
    assert _cli(str(SAMPLES / "BirthCertificate.xml"), "--kind", "76") == 1
    assert "line   414" in capsys.readouterr().out
    assert _cli(str(tmp_path / "missing.xml"), "--kind", "76") == 2
    (tmp_path / "bad.xml").write_bytes(b"<not-closed>")
    assert _cli(str(tmp_path / "bad.xml"), "--kind", "76") == 2
    assert "NOT_XML" in capsys.readouterr().err


def test_validation_from_worker_threads_gives_the_same_result():
    """Documents validated concurrently from a thread pool (asyncio.to_thread) each get the right report."""
    from concurrent.futures import ThreadPoolExecutor

    jobs = [("76", "BirthCertificate", 1), ("119", "ConsultRedaction4", 0), ("58", "DeathCertificate", 7)] * 4
    with ThreadPoolExecutor(4) as pool:
        counts = list(
            pool.map(lambda job: len(sv.validate_semd(sample(job[1]), job[0]).schematron_failures), jobs)
        )
    assert counts == [expected for _, _, expected in jobs]


def test_an_embedded_attachment_reaches_the_schematron_abbreviated_with_the_same_outcome():
    """A text over 64 KiB (a base64 PDF inside the СЭМД) is cut to its start in the copy the Schematron checks: the
    XSD sees it whole, the Schematron outcome is the document's without it, and the original is untouched."""
    root = etree.fromstring(sample("ConsultRedaction4"))
    section = next(s for s in root.iter(f"{HL7}section") if s.find(f"{HL7}component") is None)
    entry = etree.SubElement(section, f"{HL7}entry")
    media = etree.SubElement(entry, f"{HL7}observationMedia", classCode="OBS", moodCode="EVN")
    value = etree.SubElement(media, f"{HL7}value", mediaType="application/pdf", representation="B64")
    value.text = "JVBERi0xLjcK" * 50_000  # 600 KB of base64
    copy = sv.strip_hl7_namespace(root)
    assert sv.abbreviate_large_text(copy) == 1
    assert len(copy.find(".//observationMedia/value").text) == sv.KEPT_TEXT_CHARS
    assert len(value.text) == 600_000  # the document itself is not changed
    report = sv.validate_semd(root, "119")
    assert (report.checked_xsd, report.checked_schematron, report.valid) == (True, True, True)

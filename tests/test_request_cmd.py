"""``emd request DOC.xml``: every request the sender would send, in order, printed; no connection, no secret, no
qualified signature, patient data masked unless --dev or --unmask (which is audited)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from lab.dev.local_pipeline import n3_refusal
from lab.dev.samples import REPOSITORY_SAMPLES
from producer.client import InvalidDocument, build_created_data, read_document
from producer.errors import PermanentError
from services.cli import main
from services.lifecycle.support_tables import open_support_tables
from services.remd import envelope, n3
from services.remd import n3_names as names
from services.remd.n3_kinds import packaged
from services.remd.wssec import verify_envelope
from tests.n3_helpers import CONSULT, N3Clinic, sample

#: the repository samples whose kind dictionary 195 maps but which the N3 route refuses, and why (the signer
#: refuses them the same way, before signing: docs/transports.md)
REFUSED_ON_N3 = {
    "PerinatalDeathCertificate.xml": "N3_PERSON_INCOMPLETE",
    "ReturnSanatory.xml": "N3_PERSON_INCOMPLETE",  # sex not recorded (nullFlavor)
    "ReturnSanatoryChild.xml": "N3_PERSON_INCOMPLETE",
    "CertOnPayForMedServ.xml": "N3_KIND_NOT_EXPORTED",  # allowRemdExport=false in v374
    "ConsultRedaction3.xml": "N3_KIND_NOT_EXPORTED",
    "DDResults.xml": "N3_KIND_NOT_EXPORTED",
    "EpidContact.xml": "N3_KIND_NOT_EXPORTED",
    "GroupForPhysicalEducation.xml": "N3_KIND_NOT_EXPORTED",
    "LeaveCountry.xml": "N3_KIND_NOT_EXPORTED",
    "SMPCard.xml": "N3_KIND_NOT_EXPORTED",
    "Sport.xml": "N3_KIND_NOT_EXPORTED",
    "StudentTempInvalid.xml": "N3_KIND_NOT_EXPORTED",
    "SwimmingPool.xml": "N3_KIND_NOT_EXPORTED",
    "WorkAtHeightCertificate.xml": "N3_KIND_NOT_EXPORTED",
}


def _mapped_samples() -> list[Path]:
    """The repository samples whose kind has a row in dictionary 195 (as shipped)."""
    out = []
    for path in sorted(REPOSITORY_SAMPLES.glob("*.xml")):
        try:
            kind = build_created_data(read_document(path.read_bytes()), system_id="t", document=None)["kind"]
        except InvalidDocument:
            continue  # the МИС library refuses it: nothing would be sent
        try:
            packaged().code_for(kind)
        except PermanentError as exc:
            if exc.reason == "N3_KIND_UNMAPPED":
                continue
        out.append(path)
    return out


@pytest.fixture
def no_network(monkeypatch):
    """Every attempt to open a network connection fails the test."""
    opened = []

    def refuse(self, address, *args):
        opened.append(address)
        raise AssertionError(f"a connection was opened to {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return opened


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main(["request", *map(str, argv)])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("path", _mapped_samples(), ids=lambda p: p.name)
def test_every_sample_n3_maps_gives_add_patient_then_add_med_record_valid_against_the_schema(
    path, capsys, monkeypatch, tmp_path, no_network
):
    """`emd request S --dev --route n3 --json` for a sample whose kind dictionary 195 maps: AddPatient then
    AddMedRecord to their services, each valid against the project's schema, with the kind's code (119 → 198);
    or, for the few N3 cannot carry, the refusal the signer would give, before any request is built."""
    monkeypatch.setenv("EMD_DATA_DIR", str(tmp_path))
    code, out, err = _run(capsys, path, "--dev", "--route", "n3", "--json")
    if path.name in REFUSED_ON_N3:
        assert code == 1 and f"would refuse this document: {REFUSED_ON_N3[path.name]}" in err
        assert n3_refusal(path.read_bytes()).startswith(REFUSED_ON_N3[path.name])
        return
    assert code == 0, err
    requests = json.loads(out)
    assert [(r["operation"], r["soapAction"]) for r in requests] == [
        ("AddPatient", "http://tempuri.org/IPixService/AddPatient"),
        ("AddMedRecord", "http://tempuri.org/IEmkService/AddMedRecord"),
    ]
    assert requests[0]["endpoint"].endswith("/PixService.svc") and requests[1]["endpoint"].endswith(
        "/EMKService.svc"
    )
    for r in requests:
        assert n3.validate(envelope.open_envelope(r["envelope"].encode())[1]) == []
    kind = build_created_data(read_document(path.read_bytes()), system_id="t", document=None)["kind"]
    code_sent = envelope.open_envelope(requests[1]["envelope"].encode())[1].findtext(
        f".//{{{names.NS_MEDDOC}}}{names.ID_MED_DOCUMENT_TYPE}"
    )
    assert int(code_sent) == packaged().code_for(kind).code
    if kind == "119":
        assert code_sent == "198"
    assert no_network == []


def test_the_refused_samples_are_exactly_those_n3_cannot_carry():
    """The list above is the repository's, no more and no less: every mapped sample either passes or is in it."""
    mapped = {p.name for p in _mapped_samples()}
    assert set(REFUSED_ON_N3) <= mapped
    assert {p for p in mapped if n3_refusal((REPOSITORY_SAMPLES / p).read_bytes())} == set(REFUSED_ON_N3)


def test_the_ips_dry_run_is_ws_security_signed_verifies_and_opens_no_connection(
    capsys, monkeypatch, tmp_path, no_network
):
    """`emd request S --dev --route ips --json` prints the registerDocument envelope signed with the development
    ИС key; the emulator's WS-Security check verifies it, over every part it requires; nothing was connected to."""
    monkeypatch.setenv("EMD_DATA_DIR", str(tmp_path))
    code, out, err = _run(capsys, REPOSITORY_SAMPLES / CONSULT, "--dev", "--route", "ips", "--json")
    assert code == 0, err
    [request] = json.loads(out)
    assert request["operation"] == "registerDocument"
    verified = verify_envelope(
        request["envelope"].encode(), required=("Body", "Timestamp", "MessageID", "Action")
    )
    # the development configuration's information system of the document's organisation signed it
    assert verified.certificate.common_name.startswith("МИС ")
    assert no_network == []


def test_the_text_output_lists_the_requests_in_order(capsys, monkeypatch, tmp_path, no_network):
    """Without --json each request is headed by its number, operation, endpoint and SOAPAction."""
    monkeypatch.setenv("EMD_DATA_DIR", str(tmp_path))
    code, out, _ = _run(capsys, REPOSITORY_SAMPLES / CONSULT, "--dev", "--route", "n3")
    assert code == 0
    assert out.index("== 1. AddPatient →") < out.index("== 2. AddMedRecord →")
    assert "SOAPAction: http://tempuri.org/IEmkService/AddMedRecord" in out


@pytest.fixture
def configured(tmp_path, monkeypatch):
    """A deployment's organisations file for the consultation sample's clinic on the N3 route (EMD_ORGANIZATIONS)."""
    clinic = N3Clinic.make(tmp_path / "cfg", sample(CONSULT, fresh=False))
    monkeypatch.setenv("EMD_ORGANIZATIONS", str(clinic.path))
    monkeypatch.setenv("EMD_DATA_DIR", str(tmp_path / "data"))
    return clinic


def test_without_dev_signatures_are_placeholders_the_guid_is_not_printed_and_patient_data_is_masked(
    configured, capsys, no_network
):
    """With the deployment's configuration: its codes and endpoints, every signature a placeholder, the GUID a
    placeholder, the patient's and doctors' names, birth date, СНИЛС and the attached СЭМД masked."""
    document = REPOSITORY_SAMPLES / CONSULT
    code, out, err = _run(capsys, document, "--json")
    assert code == 0, err
    add_patient, add_med_record = (r["envelope"] for r in json.loads(out))
    # the GUID is a placeholder, and in the masked output the guid element, a secret, is masked as a whole
    assert configured.token not in out and "<guid>***</guid>" in add_patient
    assert "[placeholder: the author's detached CMS" in add_med_record
    assert "[placeholder: the organisation's detached CMS" in add_med_record
    assert "Сельченков" not in out and "25463625426" not in out and "1960-02-17" not in out
    assert "[the signed СЭМД:" in add_med_record and "<d4p3:IdMedDocumentType>198<" in add_med_record
    assert "masked" in err


def test_unmask_shows_patient_data_and_is_written_to_the_audit_log(configured, capsys, tmp_path, no_network):
    """--unmask shows the patient's data and leaves a request.unmask entry naming the document in the audit log."""
    code, out, _ = _run(capsys, REPOSITORY_SAMPLES / CONSULT, "--unmask")
    assert code == 0 and "Сельченков" in out and configured.token not in out
    tables = open_support_tables(tmp_path / "data")
    try:
        [entry] = [e for e in tables.audit_log() if e.action == "request.unmask"]
    finally:
        tables.close()
    assert entry.target == "144632"


def test_a_missing_document_is_refused_naming_it(capsys):
    """A document that cannot be read: exit 2 naming it."""
    code, _, err = _run(capsys, "no-such.xml", "--dev")
    assert code == 2 and "no-such.xml" in err


def test_an_unknown_route_is_refused_by_the_parser(capsys):
    """--route smtp: argparse refuses it (exit 2), listing the routes."""
    with pytest.raises(SystemExit) as exc:
        main(["request", str(REPOSITORY_SAMPLES / CONSULT), "--route", "smtp"])
    assert exc.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_dev_without_the_development_tooling_says_what_is_missing(capsys, monkeypatch):
    """--dev on an install without emd-lab (no emd.dev_config provider): exit 2 naming the development tooling."""
    from services.commands import request_cmd

    monkeypatch.setattr(request_cmd, "entry_points", lambda group: [])
    code, _, err = _run(capsys, REPOSITORY_SAMPLES / CONSULT, "--dev")
    assert code == 2 and "emd-lab" in err


def test_help_describes_the_command(capsys):
    """`emd request --help` exits 0 and says no connection is opened."""
    with pytest.raises(SystemExit) as exc:
        main(["request", "--help"])
    assert exc.value.code == 0 and "No connection is opened" in capsys.readouterr().out

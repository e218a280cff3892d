"""N3's codes at the signer: a document N3 cannot take is refused before anything is signed, with its reason, in
the dead letter and the МИС status; a new dictionary-195 file is picked up without a release."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from lab.dev.config import DEV_MIS_ID, DEV_SYSTEM_IDS
from producer import events
from producer.client import DocumentPublisher
from producer.errors import PermanentError
from producer.topology import CREATED_DLT, SIGNED, ensure_topics, status_topic
from services.config import Settings
from services.documents.store import FilesystemStore
from services.messaging import deadletter as dl
from services.pipeline import organizations
from services.pipeline.signing import sign_document
from tests.kafka_helpers import read_all
from tests.n3_helpers import CONSULT, N3Clinic, created_data, sample
from tests.stage_helpers import running
from workers.signer.worker import build

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "services" / "data" / "n3" / "nsi-195-v374.json"
STATUS = status_topic(DEV_MIS_ID)  # the development МИС publishes here and hears back there


def _dictionary_without(path: Path, kind: str, version: str) -> Path:
    """Dictionary 195 as shipped, without the rows of ``kind``, under another version number."""
    raw = json.loads(SHIPPED.read_text(encoding="utf-8"))
    raw["version"] = version
    raw["items"] = [i for i in raw["items"] if i.get("remd_code") != kind]
    path.write_text(json.dumps(raw, ensure_ascii=False), encoding="utf-8")
    return path


def _never_signs(monkeypatch) -> None:
    def refuse(self):
        raise AssertionError(f"{self.label} was asked to sign")

    monkeypatch.setattr(organizations.Credential, "signer", refuse)


def test_a_kind_without_a_code_is_refused_before_anything_is_signed(tmp_path, monkeypatch):
    """Kind 119 missing from the organisations file's dictionary: N3_KIND_UNMAPPED naming the kind and the version,
    raised before any key is asked to sign."""
    export = _dictionary_without(tmp_path / "nsi-195.json", "119", "375")
    document = sample()
    clinic = N3Clinic.make(
        tmp_path / "cfg", document, change=lambda raw: raw.update(n3_dictionary=str(export))
    )
    _never_signs(monkeypatch)
    with pytest.raises(PermanentError) as exc:
        sign_document(created_data(document), document, clinic.config)
    assert exc.value.reason == "N3_KIND_UNMAPPED"
    assert "kind 119" in exc.value.message and "version 375" in exc.value.message
    assert exc.value.details["dictionary_version"] == "375"


def test_a_new_dictionary_file_is_picked_up_without_a_release(tmp_path):
    """The operator replaces the dictionary file the organisations file names: the running configuration reads it,
    and the kind it now codes is signed."""
    export = _dictionary_without(tmp_path / "nsi-195.json", "119", "375")
    document = sample()
    clinic = N3Clinic.make(
        tmp_path / "cfg", document, change=lambda raw: raw.update(n3_dictionary=str(export))
    )
    with pytest.raises(PermanentError, match="N3's dictionary .* version 375"):
        sign_document(created_data(document), document, clinic.config)
    raw = json.loads(SHIPPED.read_text(encoding="utf-8"))
    raw["version"] = "376"
    export.write_text(json.dumps(raw, ensure_ascii=False), encoding="utf-8")
    os.utime(export, (export.stat().st_atime, export.stat().st_mtime + 5))
    signatures = sign_document(created_data(document), document, clinic.config)
    assert signatures["personal"] and clinic.config.n3_dictionary.current().version == "376"


def test_a_doctor_without_n3_codes_is_refused_by_role_and_id_without_personal_data(tmp_path, monkeypatch):
    """A signer missing from remd.n3.doctors: N3_DOCTOR_UNMAPPED naming the role and the id in the МИС, no СНИЛС."""
    document = sample()

    def forget_doctors(raw):
        raw["organizations"][0]["remd"]["n3"]["doctors"] = {}

    clinic = N3Clinic.make(tmp_path / "cfg", document, change=forget_doctors)
    _never_signs(monkeypatch)
    data = created_data(document)
    with pytest.raises(PermanentError) as exc:
        sign_document(data, document, clinic.config)
    assert exc.value.reason == "N3_DOCTOR_UNMAPPED" and data["signers"][0]["localId"] in exc.value.message
    assert not any(s["snils"] in exc.value.message for s in data["signers"])


def test_a_patient_without_a_snils_is_refused_for_n3(tmp_path, monkeypatch):
    """A birth certificate's newborn has no СНИЛС, which AddPatient needs: N3_PERSON_INCOMPLETE, before signing."""
    document = sample("BirthCertificate.xml")
    clinic = N3Clinic.make(tmp_path / "cfg", document)
    _never_signs(monkeypatch)
    with pytest.raises(PermanentError) as exc:
        sign_document(created_data(document), document, clinic.config)
    assert exc.value.reason == "N3_PERSON_INCOMPLETE" and "СНИЛС" in exc.value.message


@pytest.mark.integration
def test_the_signer_stage_dead_letters_an_unmapped_kind_and_tells_the_mis(broker, tmp_path):
    """Through the signer stage on the broker: the document is dead-lettered N3_KIND_UNMAPPED (category
    configuration, its message naming the kind and the dictionary version), the МИС status says failed with that
    reason, nothing is signed; a document of the same clinic N3 can take is signed."""
    bootstrap = broker.bootstrap_servers
    ensure_topics(bootstrap, partitions=3, mis_ids=(DEV_MIS_ID,))
    export = _dictionary_without(tmp_path / "nsi-195.json", "227", "375")  # the ред. 5 consultation
    refused, taken = sample("ConsultRedaction5.xml"), sample(CONSULT)
    clinic = N3Clinic.make(tmp_path / "cfg", taken, change=lambda raw: raw.update(n3_dictionary=str(export)))
    store = FilesystemStore(tmp_path / "data" / "documents")
    with DocumentPublisher(
        bootstrap, mis_id=DEV_MIS_ID, system_id=DEV_SYSTEM_IDS[0], store=store, timeout=30
    ) as pub:
        refused_uid = pub.publish(refused).local_uid
        taken_uid = pub.publish(taken).local_uid
    settings = Settings.from_env(
        {},
        kafka_bootstrap_servers=bootstrap,
        organizations_file=clinic.path,
        data_dir=tmp_path / "data",
        signer_processes=1,
        kafka_enable_idempotence=False,
        metrics_port=0,
    )
    with running(build(settings)):
        deadline = time.monotonic() + 120
        letters, signed = [], []
        while time.monotonic() < deadline and not (letters and signed):
            letters = [
                r for r in read_all(bootstrap, CREATED_DLT.name, idle=0.5) if r.key == refused_uid.encode()
            ]
            signed = [r for r in read_all(bootstrap, SIGNED.name, idle=0.5) if r.key == taken_uid.encode()]
            time.sleep(0.5)
    [letter] = letters
    headers = {k: v.decode() for k, v in letter.headers}
    assert headers[dl.REASON] == "N3_KIND_UNMAPPED" and headers[dl.CATEGORY] == "configuration"
    assert "kind 227" in headers[dl.EXCEPTION_MESSAGE] and "version 375" in headers[dl.EXCEPTION_MESSAGE]
    assert len(signed) == 1
    statuses = [
        json.loads(r.value)["data"]
        for r in read_all(bootstrap, STATUS.name, idle=0.5)
        if r.key == refused_uid.encode()
    ]
    assert [(s["status"], s["reason"]) for s in statuses] == [(events.STATUS_FAILED, "N3_KIND_UNMAPPED")]
    assert "kind 227" in statuses[0]["message"] and "version 375" in statuses[0]["message"]
    assert not [r for r in read_all(bootstrap, SIGNED.name, idle=0.5) if r.key == refused_uid.encode()]


def test_the_demo_summary_names_each_dead_letters_ids_for_its_route(capsys):
    """`emd run`/`emd demo` print each dead letter's request ids, called what its route's support calls them."""
    from lab.commands.run_cmd import _summary
    from lab.dev.watch import DeadLetter, Snapshot

    letters = [
        DeadLetter(
            "u-n3", "sender", "N3_REQUEST_REFUSED", "m", ["id-1", "id-2"], "PERSON_NOT_FOUND", "1.2.3"
        ),
        DeadLetter("u-ips", "status", "REMD_REJECTED", "m", ["id-3"], "PERSON_NOT_FOUND", "1.2.4"),
    ]
    snap = Snapshot(per_stage={}, dead_lettered=2, final=2, total=2, rate=0.0, dead_letters=letters)
    _summary(snap, [], Path("w"), "http://e", print, "acknowledged", ["1.2.3"])
    out = capsys.readouterr().out
    assert "N3 X-Request-IDs: id-1, id-2" in out and "ИПС MessageIDs: id-3" in out

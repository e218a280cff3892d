"""Clinic onboarding: the readiness list on the development configuration and on broken ones; promote's refusal."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from lab.dev.config import write_dev_config
from services.desk import readiness
from services.lifecycle import support_tables
from services.pipeline.organizations import load_organizations

REPO = Path(__file__).resolve().parents[1]
OID1, OID2 = "1.2.643.5.1.13.13.12.2.77.9000", "1.2.643.5.1.13.13.12.2.77.9001"


@pytest.fixture(scope="module")
def callback_url():
    """A listening callback endpoint (any HTTP answer counts as reachable)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(405)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/callback"
    server.shutdown()
    server.server_close()


def _clinic(*args, env):
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "clinic", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
    )


def _env(tmp_path, orgs_file):
    base = {k: v for k, v in os.environ.items() if not k.startswith(("EMD_", "KAFKA_"))}
    return {**base, "EMD_ORGANIZATIONS": str(orgs_file), "EMD_DATA_DIR": str(tmp_path / "data")}


def _lines(path, oid=OID1, **kw):
    config = load_organizations(path)
    cas = readiness.load_cas([Path(path).parent / "ca.pem"])
    by_item = {}
    for line in readiness.check(
        oid, config, cas=cas, clinic_state=support_tables.ONBOARDING, unpromoted="test-stand", **kw
    ):
        by_item.setdefault(line.item, line)
    return by_item


@pytest.mark.integration
def test_the_development_configuration_is_all_ok(tmp_path, callback_url):
    """`emd clinic check` on `emd certs dev-config`'s output, its callback service listening: every line ok, exit 0."""
    orgs = write_dev_config(tmp_path / "cfg", oids=[OID1], callback_url=callback_url)
    r = _clinic("check", OID1, env=_env(tmp_path, orgs))
    assert r.returncode == 0, r.stdout + r.stderr
    lines = [x for x in r.stdout.splitlines() if x.strip()]
    items = (
        "ФРМО OID",
        "doctor ",
        "organisation certificate",
        "МЧД",
        "ИС certificate (ИПС)",
        "clientEntityId",
        "ИПС endpoint",
        "callback URL",
        "environment",
    )
    assert all(x.startswith("ok") for x in lines) and all(any(i in x for x in lines) for i in items), r.stdout
    assert "test stand" in r.stdout or "(test)" in r.stdout


def test_an_expired_doctors_certificate_is_named_with_what_to_do(tmp_path, callback_url):
    """A doctor's certificate past its notAfter fails its line with the date and the fix."""
    orgs = write_dev_config(
        tmp_path / "cfg",
        oids=[OID1],
        callback_url=callback_url,
        valid_from=dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
        valid_days=-2,
    )
    doctor = next(line for item, line in _lines(orgs).items() if item.startswith("doctor"))
    assert not doctor.ok and "expired on" in doctor.text and "new certificate" in doctor.text


def test_an_mchd_of_another_organisation_is_named(tmp_path, callback_url):
    """Organisation 1 configured with organisation 2's МЧД: the МЧД line names MCHD_WRONG_ORGANIZATION."""
    orgs = write_dev_config(tmp_path / "cfg", oids=[OID1, OID2], callback_url=callback_url)
    config = json.loads(orgs.read_text())
    config["organizations"][0]["signing"]["organization"]["mchd"] = config["organizations"][1]["signing"][
        "organization"
    ]["mchd"]
    orgs.write_text(json.dumps(config, ensure_ascii=False))
    line = _lines(orgs)["МЧД"]
    assert not line.ok and "MCHD_WRONG_ORGANIZATION" in line.text and "another organisation" in line.text


@pytest.mark.integration
def test_a_missing_information_system_certificate_is_named(tmp_path, callback_url):
    """No ИС key and certificate for ИПС: its line says what to add; the CLI exits 1."""
    orgs = write_dev_config(tmp_path / "cfg", oids=[OID1], callback_url=callback_url)
    config = json.loads(orgs.read_text())
    for k in ("system_key", "system_certificate"):
        del config["organizations"][0]["remd"][k]
    orgs.write_text(json.dumps(config, ensure_ascii=False))
    line = _lines(orgs)["ИС certificate (ИПС)"]
    assert not line.ok and "remd.system_certificate" in line.text
    r = _clinic("check", OID1, env=_env(tmp_path, orgs))
    assert r.returncode == 1 and "FAIL  ИС certificate (ИПС)" in r.stdout


def test_an_unknown_clinic_and_an_unreachable_callback_fail_their_lines(tmp_path):
    """A clinic not in the file fails the OID line; a callback URL nobody answers fails with the fix."""
    orgs = write_dev_config(tmp_path / "cfg", oids=[OID1], callback_url="http://127.0.0.1:9/callback")
    assert not _lines(orgs, oid=OID2)["ФРМО OID"].ok
    assert not _lines(orgs, oid="1.2.3")["ФРМО OID"].ok
    line = _lines(orgs)["callback URL"]
    assert not line.ok and "emd callbacks" in line.text


@pytest.mark.integration
def test_promote_is_refused_before_a_test_and_force_is_logged(tmp_path, callback_url):
    """`emd clinic promote` exits 1 without a recorded test; --force promotes and lands in the audit log."""
    orgs = write_dev_config(tmp_path / "cfg", oids=[OID1], callback_url=callback_url)
    env = _env(tmp_path, orgs)
    refused = _clinic("promote", OID1, env=env)
    assert refused.returncode == 1 and "emd clinic test" in refused.stderr
    forced = _clinic("promote", OID1, "--force", env=env)
    assert forced.returncode == 0 and "production" in forced.stdout
    assert "promoted without a recorded test" in forced.stderr
    store = support_tables.open_support_tables(tmp_path / "data")
    assert store.clinic(OID1).state == support_tables.PRODUCTION
    assert store.audit_log()[0].action == "clinic.promote.forced"
    store.close()
    listed = _clinic("list", env=env)
    assert listed.returncode == 0 and OID1 in listed.stdout and "production" in listed.stdout


@pytest.mark.integration
def test_clinic_commands_have_help_and_refuse_bad_input(tmp_path):
    """Every `emd clinic` subcommand answers --help; suspend without a reason exits 2."""
    env = _env(tmp_path, tmp_path / "none.json")
    for sub in ("list", "check", "test", "promote", "suspend"):
        r = _clinic(sub, "--help", env=env)
        assert r.returncode == 0 and "usage:" in r.stdout, sub
    r = _clinic("suspend", OID1, env=env)
    assert r.returncode == 2 and "--reason" in r.stderr
    r = _clinic("check", OID1, env=env)
    assert r.returncode == 1 and "FAIL  organisations file" in r.stdout


def test_a_clinic_test_publishes_as_a_mis_granted_the_clinic(tmp_path):
    """`emd clinic test` publishes as the МИС the organisations file grants the clinic (or the one named), under
    that МИС's systemId; a МИС not granted the clinic is refused before anything is published."""
    from producer.errors import EmdError
    from services.commands.clinic_cmd import _publisher_of
    from services.config import Settings

    path = write_dev_config(tmp_path, oids=[OID1, OID2])
    raw = json.loads(path.read_text(encoding="utf-8"))
    raw["mis"].append({"id": "clinic-2-mis", "organizations": [OID2], "systemIds": ["c2-01"]})
    path.write_text(json.dumps(raw, ensure_ascii=False), encoding="utf-8")
    settings = Settings.from_env({}, organizations_file=path)
    assert _publisher_of(OID1, "", settings) == ("local-mis", "emd-clinic-test")
    assert _publisher_of(OID2, "clinic-2-mis", settings) == ("clinic-2-mis", "c2-01")
    with pytest.raises(EmdError, match="not granted organisation"):
        _publisher_of(OID1, "clinic-2-mis", settings)


def _sample_organisations() -> dict[str, set[str]]:
    """{organisation OID: the localUids of its registrable repository samples}."""
    from lab.dev.local_pipeline import sample_documents
    from lab.dev.samples import REPOSITORY_SAMPLES
    from producer import cda
    from producer.xmlsafe import parse_xml

    documents, _ = sample_documents(REPOSITORY_SAMPLES, None)
    out: dict[str, set[str]] = {}
    for _, data in documents:
        meta = cda.extract(parse_xml(data))
        out.setdefault(meta.organization_oid, set()).add(meta.local_uid)
    return out


def test_clinic_test_without_a_document_takes_a_sample_of_that_organisation(tmp_path, monkeypatch):
    """`emd clinic test OID` without --document gets, from the installed emd.test_documents provider, a sample
    of that organisation with a fresh localUid each time."""
    from producer import cda
    from producer.xmlsafe import parse_xml
    from services.commands.clinic_cmd import _sample_for

    monkeypatch.setenv("EMD_SHARED_DIR", str(tmp_path))  # the repository's samples, not a corpus beside it
    samples = _sample_organisations()
    oid = sorted(samples)[0]
    first, second = (cda.extract(parse_xml(_sample_for(oid))) for _ in range(2))
    assert first.organization_oid == second.organization_oid == oid
    assert first.local_uid not in samples[oid] and second.local_uid not in samples[oid]
    assert first.local_uid != second.local_uid


def test_clinic_test_without_a_document_names_what_to_do_when_no_sample_fits(tmp_path, monkeypatch):
    """An organisation no provider has a sample of, or no provider installed at all, is a NO_SAMPLE error that
    says to give the clinic's own document with --document."""
    from producer.errors import EmdError
    from services.commands import clinic_cmd

    monkeypatch.setenv("EMD_SHARED_DIR", str(tmp_path))
    with pytest.raises(EmdError) as unknown:
        clinic_cmd._sample_for(OID1)
    assert unknown.value.reason == "NO_SAMPLE" and OID1 in unknown.value.message
    assert "--document" in unknown.value.message

    monkeypatch.setattr(clinic_cmd, "entry_points", lambda group: [])  # the image: no lab installed
    with pytest.raises(EmdError) as none:
        clinic_cmd._sample_for(OID1)
    assert none.value.reason == "NO_SAMPLE" and "emd-lab" in none.value.message
    assert "--document" in none.value.message

"""`emd certs check` and `emd certs dev-config`: exit codes and what they report."""

from __future__ import annotations

import datetime as dt
import json
import logging

import pytest
import structlog

from lab.dev.pki import DevCA, SubjectInfo, write_pem
from services.cli import main as emd
from services.pipeline.organizations import load_organizations


@pytest.fixture(autouse=True)
def _restore_logging():
    """The command points logging at the captured stderr; later tests must not write to it once closed."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.reset_defaults()
    root.handlers[:], root.level = handlers, level


def _dev(tmp_path, capsys, *extra: str):
    assert emd(["certs", "dev-config", str(tmp_path / "conf"), *extra]) == 0
    path = capsys.readouterr().out.strip().splitlines()[-1]
    return tmp_path / "conf" / "organizations.json", path


def test_dev_config_writes_a_loadable_configuration(tmp_path, capsys):
    """dev-config prints the path of an organisations file that loads with the asked organisations and doctors."""
    path, printed = _dev(
        tmp_path, capsys, "--organizations", "2", "--doctor", "12345678901", "--doctor", "52415372312"
    )
    assert printed == str(path)
    config = load_organizations(path)
    assert len(config.organizations) == 2
    assert all(set(o.doctors) == {"12345678901", "52415372312"} for o in config.organizations.values())


def test_check_passes_when_everything_outlives_the_window(tmp_path, capsys):
    """Every certificate and МЧД of a fresh dev configuration is listed, and the exit code is 0 for 30 days."""
    path, _ = _dev(tmp_path, capsys)
    assert emd(["certs", "check", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.count("certificate") == 3 and out.count("МЧД") == 1  # doctor, organisation, system; one МЧД
    assert "all 4 valid for more than 30 days" in out


def test_check_fails_when_something_expires_within_the_window(tmp_path, capsys):
    """A window longer than the certificates' life (2 years) makes the check exit 1 naming how many."""
    path, _ = _dev(tmp_path, capsys)
    assert emd(["certs", "check", "--config", str(path), "--days", "1000"]) == 1
    assert "4 of 4 expire within 1000 days" in capsys.readouterr().err


def test_check_fails_on_a_certificate_expiring_in_days(tmp_path, capsys):
    """One organisation certificate replaced by one valid 10 more days: exit 1 at 30 days, 0 at 5."""
    path, _ = _dev(tmp_path, capsys)
    config = json.loads(path.read_text(encoding="utf-8"))
    entry = config["organizations"][0]["signing"]["organization"]
    key_path = path.parent / entry["key"]
    from services.crypto.certificates import load_certificate
    from services.crypto.keys import load_private_key

    old = load_certificate(path.parent / entry["certificate"])
    ca = DevCA.create("short CA")
    now = dt.datetime.now(dt.UTC)
    _, cert = ca.issue(
        subject=SubjectInfo(
            family=old.surname, given=old.given_name, snils=old.snils, ogrn=old.ogrn, inn_le=old.inn_le
        ),
        key=load_private_key(key_path),
        not_after=now + dt.timedelta(days=10),
    )
    write_pem(None, cert, cert_path=path.parent / entry["certificate"])
    assert emd(["certs", "check", "--config", str(path)]) == 1
    captured = capsys.readouterr()
    assert "1 of 4 expire within 30 days" in captured.err
    first = captured.out.splitlines()[0]
    assert "organization" in first and float(first.split()[0]) <= 10  # soonest first
    assert emd(["certs", "check", "--config", str(path), "--days", "5"]) == 0


def test_check_reports_a_revoked_mchd(tmp_path, capsys):
    """An МЧД on the revocation list counts as due whatever its date."""
    path, _ = _dev(tmp_path, capsys)
    number = next(iter(load_organizations(path).organizations.values())).mchd.poa.number
    config = json.loads(path.read_text(encoding="utf-8"))
    config["mchd_revoked"] = [number]
    path.write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    assert emd(["certs", "check", "--config", str(path)]) == 1
    assert "REVOKED" in capsys.readouterr().out


def test_check_exits_2_on_a_broken_configuration(tmp_path, capsys):
    """A missing or invalid organisations file is exit 2 with the reason on stderr."""
    assert emd(["certs", "check", "--config", str(tmp_path / "nope.json")]) == 2
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text('{"organizations": []}')
    assert emd(["certs", "check", "--config", str(tmp_path / "bad.json")]) == 2
    assert "organizations: expected a non-empty list" in capsys.readouterr().err


def test_check_reports_a_key_that_cannot_be_unlocked(tmp_path, capsys, monkeypatch):
    """A key whose password variable is unset is listed as unusable and fails the check (exit 1)."""
    path, _ = _dev(tmp_path, capsys)
    config = json.loads(path.read_text(encoding="utf-8"))
    config["organizations"][0]["signing"]["organization"]["password_env"] = "EMD_TEST_UNSET_PASSWORD"
    path.write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    monkeypatch.delenv("EMD_TEST_UNSET_PASSWORD", raising=False)
    assert emd(["certs", "check", "--config", str(path)]) == 1
    out = capsys.readouterr().out
    assert "KEY UNUSABLE" in out.splitlines()[0] and "organization" in out.splitlines()[0]


def test_certs_without_an_action_prints_help_and_exits_2(capsys):
    """`emd certs` alone is a usage error."""
    assert emd(["certs"]) == 2
    assert "check" in capsys.readouterr().out


def test_dev_config_agrees_with_the_emulator_and_the_callback_service_run_on_their_own(tmp_path, capsys):
    """dev-config --for DOC.xml covers the document's organisation and signers, writes the emulator's systems.json
    with each organisation's ИС, and points at `emd emulator` and `emd callbacks` on their default ports."""
    import argparse
    import json
    from urllib.parse import urlsplit

    from lab.commands import emulator_cmd
    from lab.dev.samples import REPOSITORY_SAMPLES
    from lab.emulator.systems import load_systems
    from services.config import Settings

    document = REPOSITORY_SAMPLES / "ConsultRedaction4.xml"
    path, _ = _dev(tmp_path, capsys, "--for", str(document))
    config = load_organizations(path)
    (org,) = config.organizations.values()
    assert org.oid == "1.2.643.5.1.13.13.12.2.77.7831" and set(org.doctors) == {"52415372312"}
    (system,) = load_systems(path.parent / "systems.json")
    raw = json.loads(path.read_text(encoding="utf-8"))["organizations"][0]["remd"]
    assert system.client_entity_id == raw["client_entity_id"]
    parser = argparse.ArgumentParser()
    emulator_cmd.register(parser.add_subparsers())
    emulator_port = parser.parse_args(["emulator"]).port
    assert urlsplit(raw["endpoint"]).port == emulator_port
    assert urlsplit(raw["callback_url"]).port == Settings.from_env({}).callback_port

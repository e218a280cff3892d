"""The organisations file (services.pipeline.organizations): its JSON Schema, and errors that name the
organisation and the field."""

from __future__ import annotations

import json
import os

import pytest
from jsonschema import Draft202012Validator
from structlog.testing import capture_logs

from lab.dev.config import write_dev_config
from producer.errors import ConfigurationError, PermanentError
from services.crypto import mchd
from services.pipeline import organizations as orgs
from services.pipeline.organizations import load_organizations
from services.remd.n3 import StaffCodes

ORG0 = "organizations[0] (1.2.643.5.1.13.13.12.2.77.9000): "
ORG1 = "organizations[1] (1.2.643.5.1.13.13.12.2.77.9001): "


def _write(tmp_path, mutate) -> str:
    path = write_dev_config(tmp_path, organizations=2)
    config = json.loads(path.read_text(encoding="utf-8"))
    mutate(config)
    path.write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    return str(path)


def _org(c, i=0):
    return c["organizations"][i]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda c: _org(c, 1)["signing"].update(mode="cloud"),
            ORG1 + "signing.mode: expected one of mis, server",
        ),
        (lambda c: _org(c).update(inn="12"), ORG0 + "inn: expected 10 digits (ИНН ЮЛ)"),
        (
            lambda c: _org(c)["signing"]["organization"].update(certificate="missing.pem"),
            ORG0 + "signing.organization.certificate: no such file",
        ),
        (
            lambda c: _org(c, 1)["remd"].update(environment="prod"),
            ORG1 + "remd.environment: expected one of test, production",
        ),
        (
            lambda c: _org(c, 1).update(oid=_org(c)["oid"]),
            "organizations[1]: organisation 1.2.643.5.1.13.13.12.2.77.9000 is configured twice",
        ),
        (
            lambda c: _org(c)["signing"]["organization"].update(
                key=_org(c, 1)["signing"]["organization"]["key"]
            ),
            ORG0 + "signing.organization.key: the private key does not belong to the certificate",
        ),
        (lambda c: c.update(schematron="maybe"), "schematron: expected one of block, warn, off"),
        (
            lambda c: _org(c).update(colour="red"),
            ORG0
            + "colour: unknown field (known: allow_unvalidated_kinds, inn, name, ogrn, oid, remd, signing)",
        ),
        (lambda c: _org(c).update(oid="x"), "organizations[0].oid: expected an OID (ФРМО)"),
        (lambda c: _org(c).pop("name"), ORG0 + "name: is required"),
        (lambda c: c.update(organizations=[]), "organizations: expected a non-empty list"),
        (lambda c: c.update(max_document_bytes=0), "max_document_bytes: expected a positive integer"),
        (
            lambda c: _org(c)["signing"].update(doctors={}),
            ORG0 + "signing.doctors: server mode needs at least one doctor's key",
        ),
        (
            lambda c: _org(c)["signing"]["doctors"].update({"123": {"key": "k", "certificate": "c"}}),
            ORG0 + "signing.doctors[123]: the key must be a СНИЛС (11 digits)",
        ),
        (
            lambda c: _org(c)["signing"]["organization"].update(password_file="pw", password_env="PW"),
            ORG0 + "signing.organization: give password_file or password_env, not both",
        ),
        (
            lambda c: _org(c)["signing"]["organization"]["mchd"].pop("signature"),
            ORG0 + "signing.organization.mchd.signature: is required",
        ),
        (lambda c: _org(c)["remd"].pop("system_certificate"), ORG0 + "remd.system_certificate: is required"),
        (
            lambda c: _org(c)["remd"].update(endpoint="ftp://ips"),
            ORG0 + "remd.endpoint: expected an http(s) URL",
        ),
        (
            lambda c: _org(c)["remd"].update(rate_limit_per_minute=True),
            ORG0 + "remd.rate_limit_per_minute: expected a positive",
        ),
        (lambda c: _org(c)["remd"].update(system_key="missing.key"), ORG0 + "remd.system_key: no such file"),
        (
            lambda c: _org(c)["remd"].update(transport="n3"),
            ORG0 + "remd.n3: transport n3 needs the n3 object (lpu_id, token)",
        ),
        (
            lambda c: _org(c)["remd"].update(
                transport="n3", endpoint="http://n3/emk/EMKService.svc", n3={"lpu_id": "l"}
            ),
            ORG0 + "remd.n3: needs token_file or token_env (the N3 auth GUID)",
        ),
        (
            lambda c: _org(c)["remd"].update(
                transport="n3",
                endpoint="http://n3/emk/EMKService.svc",
                n3={"lpu_id": "l", "token_env": "EMD_TEST_NO_SUCH_N3_TOKEN"},
            ),
            ORG0 + "remd.n3.token_env: environment variable EMD_TEST_NO_SUCH_N3_TOKEN is not set",
        ),
        (lambda c: c["mis"][0].update(id="dlt"), "mis[0].id: dlt and retry are reserved"),
        (lambda c: c["mis"][0].update(id="Clinic.A"), "mis[0].id: expected lower-case letters"),
        (lambda c: c["mis"].append(dict(c["mis"][0])), "mis[1].id: МИС local-mis is configured twice"),
        (
            lambda c: c["mis"][0]["organizations"].append("1.2.643.5.1.13.13.12.2.77.1"),
            "mis[0].organizations[2]: organisation 1.2.643.5.1.13.13.12.2.77.1 is not configured",
        ),
        (lambda c: c["mis"][0].update(systemIds=[]), "mis[0].systemIds: expected a non-empty list"),
        (
            lambda c: _org(c).update(allow_unvalidated_kinds="yes"),
            ORG0 + "allow_unvalidated_kinds: expected true, false or a list",
        ),
        (
            lambda c: _org(c)["remd"].update(
                transport="n3", endpoint="http://n3/emk", n3={"lpu_id": "l", "token_env": "HOME"}
            ),
            ORG0 + "remd.endpoint: http://n3/emk does not end in /EMKService.svc",
        ),
        (
            lambda c: _org(c)["remd"].update(
                transport="n3",
                endpoint="http://n3/emk/EMKService.svc",
                n3={"lpu_id": "l", "token_env": "HOME", "doctors": {"12345678901": {"id_speciality": "28"}}},
            ),
            ORG0 + "remd.n3.doctors[12345678901]",
        ),
        (
            lambda c: c.update(n3_dictionary="missing.json")
            or _org(c)["remd"].update(
                transport="n3",
                endpoint="http://n3/emk/EMKService.svc",
                n3={"lpu_id": "l", "token_env": "HOME"},
            ),
            "n3_dictionary: no such file",
        ),
    ],
)
def test_problems_name_the_organisation_and_the_field(tmp_path, mutate, expected):
    """Each misconfiguration, of shape (the schema) or of content (files, keys), is a ConfigurationError whose
    message names the organisation, by index and OID, and the field."""
    with pytest.raises(ConfigurationError) as err:
        load_organizations(_write(tmp_path, mutate))
    assert expected in err.value.message


def test_the_schema_is_valid_and_its_example_and_the_dev_config_pass_it(tmp_path):
    """The packaged schema is valid draft 2020-12; its own example and the development configuration validate."""
    schema = orgs.schema()
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema)
    validator.validate(schema["examples"][0])
    validator.validate(json.loads(write_dev_config(tmp_path, organizations=2).read_text(encoding="utf-8")))
    assert orgs.SIGNING_MODES == ("mis", "server") and orgs.ENVIRONMENTS == ("test", "production")


def test_paths_are_relative_to_the_file_and_dev_config_loads(tmp_path, monkeypatch):
    """The dev configuration loads from any working directory: paths resolve against the file."""
    path = write_dev_config(tmp_path / "conf", organizations=3, mode="mis")
    monkeypatch.chdir(tmp_path)
    config = load_organizations(path)
    assert len(config.organizations) == 3
    assert all(
        o.mode == "mis" and o.mchd is not None and o.remd.system is not None
        for o in config.organizations.values()
    )


def test_defaults_apply_when_the_file_sets_nothing(tmp_path):
    """Without schematron, max_document_bytes, rate limit or transport the loader uses warn, the deployment's
    size limit, 60 a minute and ips."""

    def strip(c):
        for org in c["organizations"]:
            org["remd"].pop("rate_limit_per_minute")
            org["remd"].pop("transport")
        c.pop("schematron", None)

    config = load_organizations(_write(tmp_path, strip), max_document_bytes=1234)
    remd = next(iter(config.organizations.values())).remd
    assert (config.schematron, config.max_document_bytes) == ("warn", 1234)
    assert (remd.rate_limit_per_minute, remd.transport) == (60, "ips")
    assert config.required_powers == mchd.DEFAULT_REMD_POWERS


def test_required_mchd_powers_come_from_the_file(tmp_path):
    """mchd_required_powers replaces the default power codes an МЧД must grant."""
    config = load_organizations(_write(tmp_path, lambda c: c.update(mchd_required_powers=["X9", "Y1"])))
    assert config.required_powers == frozenset({"X9", "Y1"})


def test_a_key_that_cannot_be_unlocked_is_logged_and_deferred_not_fatal(tmp_path, monkeypatch):
    """A key whose password variable is unset does not stop the loading: it is logged once as unusable, with
    its credential and reason, and each use of it raises that reason."""
    monkeypatch.delenv("EMD_TEST_UNSET_PASSWORD", raising=False)
    path = _write(
        tmp_path, lambda c: _org(c)["signing"]["organization"].update(password_env="EMD_TEST_UNSET_PASSWORD")
    )
    with capture_logs() as logs:
        config = load_organizations(path)
    org = config.organizations["1.2.643.5.1.13.13.12.2.77.9000"]
    unusable = [e for e in logs if e["event"] == "key unusable"]
    assert [(e["log_level"], e["credential"], e["reason"]) for e in unusable] == [
        ("error", "1.2.643.5.1.13.13.12.2.77.9000/organization", "KEY_PASSWORD_MISSING")
    ]
    assert not org.organization.usable
    with pytest.raises(PermanentError) as err:
        org.organization.signer()
    assert err.value.reason == "KEY_PASSWORD_MISSING"


def test_revocation_file_is_reread_when_it_changes(tmp_path):
    """Numbers added to mchd_revocation_file count without a restart."""
    (tmp_path / "revoked.txt").write_text("# none yet\n")
    path = _write(tmp_path, lambda c: c.update(mchd_revocation_file="revoked.txt"))
    config = load_organizations(path)
    number = next(iter(config.organizations.values())).mchd.poa.number
    assert number not in config.revoked
    (tmp_path / "revoked.txt").write_text(f"{number.upper()}  # lost laptop\n")
    os.utime(tmp_path / "revoked.txt", (1, 1))  # a different mtime, whatever the clock resolution
    assert number in config.revoked


def test_an_n3_organisation_reads_its_token_at_start(tmp_path, monkeypatch):
    """transport n3 with its n3 object loads the ЛПУ id, the token (kept out of repr), the status method, PixService's
    address (the sibling of EmkService's) and each doctor's N3 codes; the shipped dictionary 195 is in force."""
    monkeypatch.setenv("EMD_TEST_N3_TOKEN", " 6f1c0e2a-1111-4222-8333-944455556666\n")
    path = _write(
        tmp_path,
        lambda c: _org(c)["remd"].update(
            transport="n3",
            endpoint="https://n3.example/emk/EMKService.svc",
            n3={
                "lpu_id": "lpu-1",
                "token_env": "EMD_TEST_N3_TOKEN",
                "status_url": "https://n3.example/status",
                "doctors": {"123-456-789 01": {"id_speciality": 28, "id_position": 114}},
            },
        ),
    )
    config = load_organizations(path)
    remd = config.organizations["1.2.643.5.1.13.13.12.2.77.9000"].remd
    assert remd.n3.pix_for(remd.endpoint) == "https://n3.example/emk/PixService.svc"
    assert remd.n3.status_url == "https://n3.example/status"
    assert remd.n3.doctors["12345678901"] == StaffCodes(speciality=28, position=114)
    assert config.n3_dictionary.current().version == "374"
    assert (remd.transport, remd.n3.lpu_id, remd.n3.token) == (
        "n3",
        "lpu-1",
        "6f1c0e2a-1111-4222-8333-944455556666",
    )
    assert "6f1c0e2a" not in repr(remd)


def test_the_mis_grants_consents_and_unvalidated_kinds_are_loaded_and_said_at_start(tmp_path):
    """Each МИС's grant (organisations, systemIds), each doctor's recorded consent and each organisation's
    unvalidated kinds are loaded; the operator's decisions beyond the defaults are logged (by the signer, at
    start)."""

    def mutate(c):
        c["mis"].append({"id": "clinic-b", "organizations": [_org(c, 1)["oid"]], "systemIds": ["b-01"]})
        _org(c).update(allow_unvalidated_kinds=["227"])
        _org(c, 1).update(allow_unvalidated_kinds=False)
        for doctor in _org(c, 1)["signing"]["doctors"].values():
            doctor.pop("server_signing_consent")

    config = load_organizations(_write(tmp_path, mutate))
    with capture_logs() as logs:
        orgs.log_operator_decisions(config)
    first, second = config.organizations.values()
    assert config.mis["clinic-b"] == orgs.MisGrant(
        id="clinic-b", organizations=frozenset({second.oid}), system_ids=frozenset({"b-01"})
    )
    assert config.mis["local-mis"].organizations == {first.oid, second.oid}
    assert first.consented == set(first.doctors) and second.consented == frozenset()
    assert first.may_sign_unvalidated("227") and not first.may_sign_unvalidated("228")
    assert not second.may_sign_unvalidated("227")
    said = {e["event"]: e for e in logs}
    assert (
        said["organisation allows kinds without a shipped XSD or Schematron to be signed"]["kinds"] == "227"
    )
    assert (
        said["doctors' keys without a recorded consent to server-side signing: they sign nothing"][
            "organization"
        ]
        == second.oid
    )
    assert orgs.read_mis_ids(_write(tmp_path, mutate)) == ["local-mis", "clinic-b"]

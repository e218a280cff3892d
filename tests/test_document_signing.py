"""sign_document without Kafka: every check, every reason code, OpenSSL cross-checks (the organisations file:
tests/test_organizations.py)."""

from __future__ import annotations

import base64
import datetime as dt
import time

import pytest

from producer.errors import PermanentError
from services.crypto import cades
from services.metrics import REGISTRY
from services.pipeline.organizations import load_organizations
from services.pipeline.signing import check_document, sign_document, update_expiry_metrics
from tests import openssl_gost as ossl
from tests import signing_lab as lab


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    out = tmp_path_factory.mktemp("lab")
    built = lab.build_lab(out)
    return built, load_organizations(built.config_path)


def _data(document: bytes, **kw) -> dict:
    return lab.created_data(document, **kw)["data"]


def _reason(document: bytes, config, data: dict | None = None) -> str:
    with pytest.raises(PermanentError) as err:
        sign_document(data or _data(document), document, config)
    return err.value.reason


def test_good_document_gets_doctor_and_organisation_signatures_openssl_verifies(setup, tmp_path):
    """A valid СЭМД is signed by its doctor and by the organisation (with МЧД); OpenSSL verifies both."""
    _, config = setup
    doc = lab.GOOD.read_bytes()
    now = dt.datetime.now(dt.UTC)
    sig = sign_document(_data(doc), doc, config, now=now)
    (tmp_path / "doc.xml").write_bytes(doc)
    assert [(p["snils"], p["role"], p["source"]) for p in sig["personal"]] == [
        (lab.AUTHOR, "author", "server")
    ]
    for n, cms_b64 in enumerate([p["cms"] for p in sig["personal"]] + [sig["organization"]["cms"]]):
        (tmp_path / f"s{n}.der").write_bytes(base64.b64decode(cms_b64))
        assert ossl.cms_verify(tmp_path / f"s{n}.der", tmp_path / "doc.xml")
    (tmp_path / "other.xml").write_bytes(doc + b" ")
    assert not ossl.cms_verify(tmp_path / "s0.der", tmp_path / "other.xml")
    mchd = sig["organization"]["mchd"]
    assert mchd["number"] == config.organization(lab.GOOD_OID).mchd.poa.number
    assert base64.b64decode(mchd["xml"]) == config.organization(lab.GOOD_OID).mchd.xml


def test_the_document_is_hashed_once_for_all_its_signatures(setup, monkeypatch):
    """The doctor's and the organisation's signatures over one document come from one Streebog pass over it."""
    from services.crypto import gost

    _, config = setup
    doc = lab.GOOD.read_bytes()
    passes = []
    real = gost.streebog
    monkeypatch.setattr(gost, "streebog", lambda data, bits: passes.append(data == doc) or real(data, bits))
    sig = sign_document(_data(doc), doc, config)
    assert sig["personal"] and sig["organization"]
    assert passes.count(True) == 1


def test_signing_times_are_ordered_doctor_organisation_now(setup):
    """Every doctor's signingTime ≤ the organisation's ≤ now, as the CMS itself says."""
    _, config = setup
    doc = lab.GOOD.read_bytes()
    now = dt.datetime.now(dt.UTC)
    sig = sign_document(_data(doc), doc, config, now=now)
    org_time = cades.verify_detached(doc, base64.b64decode(sig["organization"]["cms"])).signing_time
    for p in sig["personal"]:
        assert cades.verify_detached(doc, base64.b64decode(p["cms"])).signing_time <= org_time
    assert org_time <= now


@pytest.mark.parametrize("defect", sorted(lab.DEFECT_ORGS))
def test_each_configuration_defect_has_its_reason(setup, defect):
    """A valid document of an organisation with one configuration defect fails with that defect's reason."""
    _, config = setup
    oid, reason = lab.DEFECT_ORGS[defect]
    doc = lab.variant(oid, f"defect-{defect}")
    assert _reason(doc, config) == reason


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lab.xxe, "XXE_FORBIDDEN"),
        (lab.billion_laughs, "ENTITY_EXPANSION_FORBIDDEN"),
        (lab.xsd_invalid, "XSD_INVALID"),
        (lab.too_large, "DOCUMENT_TOO_LARGE"),
    ],
)
def test_bad_documents_are_refused_before_signing(setup, make, reason):
    """Hostile or invalid bytes are refused with their own reason (the event claims a good document)."""
    _, config = setup
    good = lab.GOOD.read_bytes()
    assert _reason(make(good), config, data=_data(good)) == reason


def test_event_that_contradicts_its_document_is_refused(setup):
    """An event whose localUid is not the document's is EVENT_DOCUMENT_MISMATCH."""
    _, config = setup
    data = _data(lab.GOOD.read_bytes())
    data["localUid"] = "not-this-one"
    assert _reason(lab.GOOD.read_bytes(), config, data=data) == "EVENT_DOCUMENT_MISMATCH"


def test_unconfigured_organisation_is_refused(setup):
    """A custodian missing from the organisations file is ORGANIZATION_UNKNOWN."""
    _, config = setup
    assert (
        _reason(lab.variant("1.2.643.5.1.13.13.12.2.77.424242", "unknown-org"), config)
        == "ORGANIZATION_UNKNOWN"
    )


class TestMisMode:
    """The МИС attaches each doctor's detached signature; the signer verifies it."""

    def test_attached_signature_is_verified_and_kept(self, setup, tmp_path):
        """A correct МИС signature is carried as source "mis" and the organisation signs after it."""
        built, config = setup
        doc = lab.variant(lab.MIS_OID, "mis-good")
        when = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=5)
        cms_b64 = lab.mis_signature(built.mis_doctor, doc, signing_time=when)
        sig = sign_document(_data(doc, meta={"signatures": {lab.AUTHOR: cms_b64}}), doc, config)
        assert sig["personal"][0]["source"] == "mis" and sig["personal"][0]["cms"] == cms_b64
        assert sig["personal"][0]["signingTime"] <= sig["organization"]["signingTime"]

    def test_signature_over_other_bytes(self, setup):
        """A doctor's signature over different bytes is DIGEST_MISMATCH."""
        built, config = setup
        doc = lab.variant(lab.MIS_OID, "mis-other-bytes")
        cms_b64 = lab.mis_signature(built.mis_doctor, doc + b"\n")
        assert (
            _reason(doc, config, _data(doc, meta={"signatures": {lab.AUTHOR: cms_b64}})) == "DIGEST_MISMATCH"
        )

    def test_signature_by_another_person(self, setup):
        """A valid signature by a certificate whose СНИЛС is not the author's is SIGNER_SNILS_MISMATCH."""
        built, config = setup
        doc = lab.variant(lab.MIS_OID, "mis-other-person")
        cms_b64 = lab.mis_signature(built.other_doctor, doc)
        assert (
            _reason(doc, config, _data(doc, meta={"signatures": {lab.AUTHOR: cms_b64}}))
            == "SIGNER_SNILS_MISMATCH"
        )

    def test_missing_signature(self, setup):
        """No attached signature in mis mode is DOCTOR_SIGNATURE_MISSING."""
        _, config = setup
        assert _reason(lab.variant(lab.MIS_OID, "mis-none"), config) == "DOCTOR_SIGNATURE_MISSING"

    def test_signing_time_in_the_future(self, setup):
        """A МИС signature dated after now is SIGNING_TIME_IN_FUTURE (the order doctor ≤ organisation ≤ now)."""
        built, config = setup
        doc = lab.variant(lab.MIS_OID, "mis-future")
        later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
        cms_b64 = lab.mis_signature(built.mis_doctor, doc, signing_time=later)
        assert (
            _reason(doc, config, _data(doc, meta={"signatures": {lab.AUTHOR: cms_b64}}))
            == "SIGNING_TIME_IN_FUTURE"
        )


def test_schematron_policy_block_warn_off(tmp_path):
    """A document failing Schematron only: block refuses it (SCHEMATRON_INVALID), warn and off let it through."""
    doc = (lab.SAMPLES / "WorkAtHeightCertificate.xml").read_bytes()  # XSD-valid, 20 failed asserts
    data = _data(doc)
    with pytest.raises(PermanentError) as err:
        check_document(data, doc, max_document_bytes=10**6, schematron="block")
    assert err.value.reason == "SCHEMATRON_INVALID"
    assert (
        check_document(data, doc, max_document_bytes=10**6, schematron="warn").local_uid == data["localUid"]
    )
    assert check_document(data, doc, max_document_bytes=10**6, schematron="off").local_uid == data["localUid"]


def test_expiry_gauges_are_set_per_organisation_and_role(setup):
    """update_expiry_metrics exports each organisation's certificate and МЧД expiry as Unix times, labelled by OID and role."""
    _, config = setup
    update_expiry_metrics(config)
    org = config.organization(lab.GOOD_OID)
    cert = REGISTRY.get_sample_value(
        "emd_certificate_not_after_timestamp_seconds", {"organization": lab.GOOD_OID, "role": "organization"}
    )
    mchd = REGISTRY.get_sample_value("emd_mchd_not_after_timestamp_seconds", {"organization": lab.GOOD_OID})
    assert org.organization.certificate.not_after.timestamp() == cert
    assert time.time() + 300 * 86400 < mchd
    expired_oid = lab.DEFECT_ORGS["expired_certificate"][0]
    assert (
        REGISTRY.get_sample_value(
            "emd_certificate_not_after_timestamp_seconds",
            {"organization": expired_oid, "role": "organization"},
        )
        < time.time()
    )


def test_expiry_gauges_carry_no_serial_or_mchd_number(setup):
    """No expiry series is labelled by a certificate serial or a МЧД number (the labels are OID and role only)."""
    _, config = setup
    update_expiry_metrics(config)
    families = [m for m in REGISTRY.collect() if m.name.endswith("_not_after_timestamp_seconds")]
    labels = {k for m in families for s in m.samples for k in s.labels}
    assert {"organization", "role"} == labels


def test_kind_without_mo_sign_gets_no_organisation_signature(setup, monkeypatch):
    """When НСИ 1520 says the kind needs no MO_SIGN, only the doctors sign and organization is null."""
    from producer import cda

    _, config = setup
    monkeypatch.setattr(cda.CdaMetadata, "requires_organization_signature", property(lambda self: False))
    doc = lab.GOOD.read_bytes()
    sig = sign_document(_data(doc), doc, config)
    assert sig["organization"] is None and len(sig["personal"]) == 1

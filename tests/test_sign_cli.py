"""`emd sign` / `emd verify`: outputs and exit codes (0 valid, 1 invalid, 2 usage)."""

from __future__ import annotations

import base64
import datetime as dt

import pytest

from lab.dev import pki as devpki
from lab.dev.samples import REPOSITORY_SAMPLES  # noqa: E402
from services.cli import main
from services.crypto import cades
from tests import openssl_gost as ossl

SAMPLE = REPOSITORY_SAMPLES / "AmbCase.xml"


@pytest.fixture()
def files(tmp_path):
    ca = devpki.DevCA.create(paramset="TCB")
    key, cert = ca.issue(
        subject=devpki.SubjectInfo("Смирнов", "Олег Ильич", snils="11223344595"),
        not_before=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        not_after=dt.datetime(2036, 1, 1, tzinfo=dt.UTC),
    )
    devpki.write_pem(key, cert, cert_path=tmp_path / "c.pem", key_path=tmp_path / "k.pem")
    doc = tmp_path / "doc.xml"
    doc.write_bytes(SAMPLE.read_bytes())
    return tmp_path, doc


def test_sign_base64_then_verify(files, capsys):
    """sign writes base64 by default; verify accepts it with exit 0 and openssl agrees."""
    tmp, doc = files
    sig = tmp / "doc.sig"
    assert (
        main(["sign", str(doc), "--key", str(tmp / "k.pem"), "--cert", str(tmp / "c.pem"), "--out", str(sig)])
        == 0
    )
    der = base64.b64decode(sig.read_text())
    (tmp / "doc.der").write_bytes(der)
    assert ossl.cms_verify(tmp / "doc.der", doc)
    assert main(["verify", str(doc), str(sig)]) == 0
    assert "VALID" in capsys.readouterr().out


def test_sign_der(files):
    """--der writes DER, which verify also accepts."""
    tmp, doc = files
    sig = tmp / "doc.p7s"
    assert (
        main(
            [
                "sign",
                str(doc),
                "--key",
                str(tmp / "k.pem"),
                "--cert",
                str(tmp / "c.pem"),
                "--out",
                str(sig),
                "--der",
            ]
        )
        == 0
    )
    assert sig.read_bytes()[:1] == b"\x30"
    assert main(["verify", str(doc), str(sig)]) == 0


def test_invalid_signature_exit_1(files, capsys):
    """A changed document exits 1 and prints the reason code with a sentence."""
    tmp, doc = files
    sig = tmp / "doc.sig"
    main(["sign", str(doc), "--key", str(tmp / "k.pem"), "--cert", str(tmp / "c.pem"), "--out", str(sig)])
    doc.write_bytes(doc.read_bytes() + b"\n")
    capsys.readouterr()
    assert main(["verify", str(doc), str(sig)]) == 1
    assert "DIGEST_MISMATCH" in capsys.readouterr().out


def test_dates(files, capsys):
    """--at and --document-time outside the certificate window exit 1 with the validity reason."""
    tmp, doc = files
    sig = tmp / "doc.sig"
    main(["sign", str(doc), "--key", str(tmp / "k.pem"), "--cert", str(tmp / "c.pem"), "--out", str(sig)])
    assert main(["verify", str(doc), str(sig), "--at", "2040-01-01"]) == 1
    assert "CERT_EXPIRED" in capsys.readouterr().out
    assert main(["verify", str(doc), str(sig), "--document-time", "2025-06-01T10:00:00+03:00"]) == 1
    assert "CERT_NOT_YET_VALID" in capsys.readouterr().out
    assert main(["verify", str(doc), str(sig), "--at", "2027-01-01"]) == 0


def test_pfx_with_password_env(files, monkeypatch, tmp_path):
    """A PFX key with --password-env signs (certificate taken from the PFX); a wrong password exits 2."""
    tmp, doc = files
    pfx = tmp / "k.pfx"
    ossl.run(
        "pkcs12",
        "-export",
        "-inkey",
        tmp / "k.pem",
        "-in",
        tmp / "c.pem",
        "-passout",
        "pass:pw-123",
        "-out",
        pfx,
    )
    monkeypatch.setenv("EMD_KEY_PASSWORD", "pw-123")
    sig = tmp / "pfx.sig"
    assert (
        main(["sign", str(doc), "--key", str(pfx), "--password-env", "EMD_KEY_PASSWORD", "--out", str(sig)])
        == 0
    )
    assert cades.verify_detached(doc.read_bytes(), cades.from_wire(sig.read_bytes()))
    monkeypatch.setenv("EMD_KEY_PASSWORD", "nope")
    assert (
        main(["sign", str(doc), "--key", str(pfx), "--password-env", "EMD_KEY_PASSWORD", "--out", str(sig)])
        == 2
    )


def test_usage_errors(files, capsys):
    """Missing files, bad dates and missing options exit 2."""
    tmp, doc = files
    assert main(["verify", str(doc), str(tmp / "missing.sig")]) == 2
    assert (
        main(
            [
                "sign",
                str(tmp / "missing.xml"),
                "--key",
                str(tmp / "k.pem"),
                "--cert",
                str(tmp / "c.pem"),
                "--out",
                str(tmp / "x"),
            ]
        )
        == 2
    )
    with pytest.raises(SystemExit) as exc:
        main(["verify", str(doc), str(doc), "--at", "yesterday"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["sign", str(doc), "--out", str(tmp / "x")])
    assert exc.value.code == 2


def test_garbage_signature_is_invalid(files, capsys):
    """A signature file that is neither DER nor base64 exits 1 with SIGNATURE_DECODING_ERROR."""
    tmp, doc = files
    (tmp / "bad.sig").write_text("this is not a signature")
    assert main(["verify", str(doc), str(tmp / "bad.sig")]) == 1
    assert "SIGNATURE_DECODING_ERROR" in capsys.readouterr().out

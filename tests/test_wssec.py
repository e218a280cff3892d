"""WS-Security for ИПС: GOST XMLDSig that OpenSSL verifies independently, and every tampering caught.

Keys and certificates are made by OpenSSL's GOST engine (not by our code), so signing with our
GOST implementation and checking with ``openssl dgst`` is an independent cross-check.

Signature byte order: XMLDSig SignatureValue is the 64-byte GOST signature s‖r (each big-endian), the
same bytes a CMS SignerInfo holds. ``openssl dgst -md_gost12_256 -verify`` with the GOST engine takes
exactly that encoding (it is what ``openssl dgst -sign`` writes), so the SignatureValue is passed to it
unchanged; the test also shows the reversed (r‖s-little-endian) reading is refused.
"""

from __future__ import annotations

import base64
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from lxml import etree

from services.crypto.certificates import load_certificate
from services.crypto.gost import streebog256
from services.crypto.keys import load_pkcs8
from services.remd import names as n
from services.remd import wssec
from services.remd.wssec import WsSecurityError, sign_envelope, verify_envelope

NOW = datetime(2026, 11, 22, 10, 0, 0, tzinfo=UTC)
DS = {"ds": n.NS_DS, "wsu": n.NS_WSU, "wsa": n.NS_WSA, "soap": n.NS_SOAP12, "wsse": n.NS_WSSE}

ENVELOPE = f"""<soap:Envelope xmlns:soap="{n.NS_SOAP12}" xmlns:wsa="{n.NS_WSA}" xmlns:wsu="{n.NS_WSU}"
  xmlns:emdr="{n.NS_EMDR_SERVICE}" xmlns:egisz="{n.NS_EGISZ}">
 <soap:Header>
  <egisz:transportHeader><egisz:authInfo><egisz:clientEntityId>17c74e63-dc38-438d-a27a-a1aa063ee7b8</egisz:clientEntityId></egisz:authInfo></egisz:transportHeader>
  <wsa:MessageID>499c1284-ac8e-41d8-8957-b9b83de9a638</wsa:MessageID>
  <wsa:ReplyTo><wsa:Address>https://ips-test.rosminzdrav.ru/0123456789abc</wsa:Address></wsa:ReplyTo>
  <wsa:To>https://ips-test.rosminzdrav.ru/fedcba9876543</wsa:To>
  <wsa:Action>registerDocument</wsa:Action>
 </soap:Header>
 <soap:Body><emdr:registerDocumentRequest><emdr:kind>36</emdr:kind><emdr:localUid>doc-1</emdr:localUid>
 </emdr:registerDocumentRequest></soap:Body>
</soap:Envelope>""".encode()


def _openssl(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["openssl", *args], input=input, capture_output=True, check=False)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """An ИС key and self-signed certificate made by OpenSSL's GOST engine, and a second, untrusted one."""
    out = {}
    for name in ("is", "other"):
        d: Path = tmp_path_factory.mktemp(name)
        r = _openssl(
            "req",
            "-x509",
            "-engine",
            "gost",
            "-newkey",
            "gost2012_256",
            "-pkeyopt",
            "paramset:A",
            "-nodes",
            "-keyout",
            str(d / "key.pem"),
            "-out",
            str(d / "cert.pem"),
            "-days",
            "30",
            "-subj",
            f"/CN={name}",
            "-md_gost12_256",
        )
        assert r.returncode == 0, r.stderr.decode()
        r = _openssl("x509", "-engine", "gost", "-in", str(d / "cert.pem"), "-pubkey", "-noout")
        assert r.returncode == 0, r.stderr.decode()
        (d / "pub.pem").write_bytes(r.stdout)
        out[name] = {
            "key": load_pkcs8((d / "key.pem").read_bytes()),
            "cert": load_certificate((d / "cert.pem").read_bytes()),
            "dir": d,
        }
    return out


@pytest.fixture
def signed(pki) -> bytes:
    return sign_envelope(ENVELOPE, key=pki["is"]["key"], certificate=pki["is"]["cert"], now=NOW)


def _verify(xml: bytes, **kw):
    return verify_envelope(xml, now=kw.pop("now", NOW + timedelta(seconds=5)), **kw)


def _tamper(xml: bytes, xpath: str, text: str) -> bytes:
    root = etree.fromstring(xml)
    root.xpath(xpath, namespaces=DS)[0].text = text
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def test_references_cover_the_ips_recipe(signed):
    """Body, Timestamp, MessageID, ReplyTo, To and Action are each referenced with exc-c14n and Streebog-256."""
    root = etree.fromstring(signed)
    refs = root.xpath("//ds:SignedInfo/ds:Reference", namespaces=DS)
    targets = {}
    for ref in refs:
        el = root.xpath(f"//*[@wsu:Id='{ref.get('URI')[1:]}']", namespaces=DS)
        assert len(el) == 1
        targets[etree.QName(el[0]).localname] = el[0].get(f"{{{n.NS_WSU}}}Id")
        assert [t.get("Algorithm") for t in ref.xpath("ds:Transforms/ds:Transform", namespaces=DS)] == [
            wssec.EXC_C14N
        ]
        assert ref.find(f"{{{n.NS_DS}}}DigestMethod").get("Algorithm") == wssec.DIGEST_GOST2012_256
    assert set(targets) == {"Body", "Timestamp", "MessageID", "ReplyTo", "To", "Action"}
    assert targets["Body"] == "body"
    assert all(targets[h].startswith("id-") for h in ("MessageID", "ReplyTo", "To", "Action"))
    assert root.xpath("//ds:SignedInfo/ds:CanonicalizationMethod/@Algorithm", namespaces=DS) == [
        wssec.EXC_C14N
    ]
    assert root.xpath("//ds:SignedInfo/ds:SignatureMethod/@Algorithm", namespaces=DS) == [
        wssec.SIG_GOST2012_256
    ]


def test_security_header_layout(signed, pki):
    """Security holds BinarySecurityToken (the certificate DER), Signature, Timestamp, in that order."""
    root = etree.fromstring(signed)
    security = root.xpath("/soap:Envelope/soap:Header/wsse:Security", namespaces=DS)[0]
    assert [etree.QName(c).localname for c in security] == ["BinarySecurityToken", "Signature", "Timestamp"]
    bst = security[0]
    assert base64.b64decode(bst.text) == pki["is"]["cert"].der
    assert bst.get("ValueType") == wssec.BST_VALUE_TYPE
    ref = root.xpath("//ds:KeyInfo/wsse:SecurityTokenReference/wsse:Reference", namespaces=DS)[0]
    assert ref.get("URI") == "#" + bst.get(f"{{{n.NS_WSU}}}Id")
    assert len(base64.b64decode(root.xpath("//ds:SignatureValue", namespaces=DS)[0].text)) == 64


def test_signature_verifies_independently_with_openssl(signed, pki, tmp_path):
    """Each digest equals Streebog of lxml's exc-c14n (cross-checked by openssl), and openssl verifies SignedInfo."""
    root = etree.fromstring(signed)
    for ref in root.xpath("//ds:SignedInfo/ds:Reference", namespaces=DS):
        target = root.xpath(f"//*[@wsu:Id='{ref.get('URI')[1:]}']", namespaces=DS)[0]
        canonical = etree.tostring(target, method="c14n", exclusive=True, with_comments=False)
        digest_value = base64.b64decode(ref.find(f"{{{n.NS_DS}}}DigestValue").text)
        assert streebog256(canonical) == digest_value
        r = _openssl("dgst", "-engine", "gost", "-md_gost12_256", "-binary", input=canonical)
        assert r.returncode == 0, r.stderr.decode()
        assert r.stdout == digest_value
    signed_info = root.xpath("//ds:SignedInfo", namespaces=DS)[0]
    (tmp_path / "si.xml").write_bytes(
        etree.tostring(signed_info, method="c14n", exclusive=True, with_comments=False)
    )
    value = base64.b64decode(root.xpath("//ds:SignatureValue", namespaces=DS)[0].text)
    (tmp_path / "sig.bin").write_bytes(value)  # s‖r, unchanged: what openssl dgst -sign writes too
    pub = str(pki["is"]["dir"] / "pub.pem")
    r = _openssl(
        "dgst",
        "-engine",
        "gost",
        "-md_gost12_256",
        "-verify",
        pub,
        "-signature",
        str(tmp_path / "sig.bin"),
        str(tmp_path / "si.xml"),
    )
    assert r.returncode == 0 and b"Verified OK" in r.stdout, r.stdout + r.stderr
    (tmp_path / "rev.bin").write_bytes(value[::-1])
    r = _openssl(
        "dgst",
        "-engine",
        "gost",
        "-md_gost12_256",
        "-verify",
        pub,
        "-signature",
        str(tmp_path / "rev.bin"),
        str(tmp_path / "si.xml"),
    )
    assert r.returncode != 0


def test_openssl_made_signature_verifies_with_ours(signed, pki, tmp_path):
    """A SignatureValue produced by `openssl dgst -sign` over our SignedInfo passes verify_envelope."""
    root = etree.fromstring(signed)
    signed_info = root.xpath("//ds:SignedInfo", namespaces=DS)[0]
    (tmp_path / "si.xml").write_bytes(etree.tostring(signed_info, method="c14n", exclusive=True))
    r = _openssl(
        "dgst",
        "-engine",
        "gost",
        "-md_gost12_256",
        "-sign",
        str(pki["is"]["dir"] / "key.pem"),
        "-out",
        str(tmp_path / "sig.bin"),
        str(tmp_path / "si.xml"),
    )
    assert r.returncode == 0, r.stderr.decode()
    root.xpath("//ds:SignatureValue", namespaces=DS)[0].text = base64.b64encode(
        (tmp_path / "sig.bin").read_bytes()
    ).decode()
    result = _verify(etree.tostring(root))
    assert result.certificate == pki["is"]["cert"]


def test_verify_returns_certificate_and_signed_ids(signed, pki):
    """A good message verifies; the result names the signer and every verified id."""
    result = _verify(signed, trusted_certificates=[pki["is"]["cert"]])
    assert result.certificate.der == pki["is"]["cert"].der
    assert "body" in result.signed_ids and len(result.signed_ids) == 6
    assert result.created == NOW and result.expires == NOW + timedelta(seconds=300)


@pytest.mark.parametrize(
    "xpath",
    [
        "//emdr:localUid",
        "//wsa:MessageID",
        "//wsa:To",
        "//wsa:Action",
        "//wsa:ReplyTo/wsa:Address",
        "//wsu:Timestamp/wsu:Expires",
    ],
)
def test_tampered_part_fails_with_digest_mismatch(signed, xpath):
    """Changing the body or any signed header after signing is a digest mismatch."""
    DS["emdr"] = n.NS_EMDR_SERVICE
    bad = _tamper(signed, xpath, "2099-01-01T00:00:00Z" if "Expires" in xpath else "tampered")
    with pytest.raises(WsSecurityError) as exc:
        _verify(bad)
    assert exc.value.reason == "WSS_DIGEST_MISMATCH"


def test_tampered_signed_info_fails_signature(signed):
    """Editing a DigestValue (SignedInfo itself) breaks the signature."""
    root = etree.fromstring(signed)
    dv = root.xpath("//ds:DigestValue", namespaces=DS)[0]
    dv.text = base64.b64encode(b"\0" * 32).decode()
    with pytest.raises(WsSecurityError) as exc:
        _verify(etree.tostring(root))
    assert exc.value.reason == "WSS_SIGNATURE_INVALID"


def test_wrong_key_fails_signature(signed, pki):
    """A token swapped for another certificate does not verify the signature."""
    bad = _tamper(signed, "//wsse:BinarySecurityToken", base64.b64encode(pki["other"]["cert"].der).decode())
    with pytest.raises(WsSecurityError) as exc:
        _verify(bad)
    assert exc.value.reason == "WSS_SIGNATURE_INVALID"


def test_untrusted_certificate(signed, pki):
    """A valid signature by a certificate outside trusted_certificates is refused."""
    with pytest.raises(WsSecurityError) as exc:
        _verify(signed, trusted_certificates=[pki["other"]["cert"]])
    assert exc.value.reason == "WSS_UNTRUSTED_CERTIFICATE"


def test_body_only_signature_is_not_enough(pki):
    """The older body-only variant verifies its digests but fails the coverage check."""
    xml = sign_envelope(
        ENVELOPE,
        key=pki["is"]["key"],
        certificate=pki["is"]["cert"],
        now=NOW,
        references=("Body", "Timestamp"),
    )
    with pytest.raises(WsSecurityError) as exc:
        _verify(xml)
    assert exc.value.reason == "WSS_NOT_COVERED"
    assert _verify(xml, required=("Body",)).signed_ids  # and passes when only Body is required


def test_injected_unsigned_header_is_not_covered(signed):
    """A second wsa:To added after signing makes the headers ambiguous: refused."""
    root = etree.fromstring(signed)
    header = root.find(f"{{{n.NS_SOAP12}}}Header")
    etree.SubElement(header, f"{{{n.NS_WSA}}}To").text = "https://evil.example/"
    with pytest.raises(WsSecurityError) as exc:
        _verify(etree.tostring(root))
    assert exc.value.reason == "WSS_NOT_COVERED"


def test_wrapped_body_is_refused(signed):
    """Moving the signed Body into a header and putting a new Body in place is detected."""
    root = etree.fromstring(signed)
    body = root.find(f"{{{n.NS_SOAP12}}}Body")
    header = root.find(f"{{{n.NS_SOAP12}}}Header")
    wrapper = etree.SubElement(header, "{urn:x}Wrapper")
    wrapper.append(body)
    evil = etree.SubElement(root, f"{{{n.NS_SOAP12}}}Body")
    etree.SubElement(evil, f"{{{n.NS_EMDR_SERVICE}}}registerDocumentRequest").text = "evil"
    with pytest.raises(WsSecurityError) as exc:
        _verify(etree.tostring(root))
    assert exc.value.reason == "WSS_NOT_COVERED"


def test_duplicate_ids_are_malformed(signed):
    """Two elements sharing one wsu:Id (signature wrapping) are refused outright."""
    root = etree.fromstring(signed)
    header = root.find(f"{{{n.NS_SOAP12}}}Header")
    extra = etree.SubElement(header, "{urn:x}Decoy")
    extra.set(f"{{{n.NS_WSU}}}Id", "body")
    with pytest.raises(WsSecurityError) as exc:
        _verify(etree.tostring(root))
    assert exc.value.reason == "WSS_MALFORMED"


def test_missing_security_header():
    """An unsigned message fails with WSS_MISSING."""
    with pytest.raises(WsSecurityError) as exc:
        _verify(ENVELOPE)
    assert exc.value.reason == "WSS_MISSING"


def test_expired_and_future_timestamps(signed):
    """Outside Created − skew … Expires + skew the message is refused; within the skew it passes."""
    with pytest.raises(WsSecurityError) as exc:
        _verify(signed, now=NOW + timedelta(seconds=300 + 301))
    assert exc.value.reason == "WSS_EXPIRED"
    with pytest.raises(WsSecurityError) as exc:
        _verify(signed, now=NOW - timedelta(seconds=301))
    assert exc.value.reason == "WSS_EXPIRED"
    assert _verify(signed, now=NOW + timedelta(seconds=599))
    assert _verify(signed, now=NOW + timedelta(seconds=620), max_skew=400)


def test_soap11_envelope_round_trip(pki):
    """SOAP 1.1 envelopes (РЭМД callbacks) are signed and verified the same way."""
    xml = ENVELOPE.replace(n.NS_SOAP12.encode(), n.NS_SOAP11.encode())
    signed = sign_envelope(xml, key=pki["is"]["key"], certificate=pki["is"]["cert"], now=NOW)
    assert "body" in _verify(signed).signed_ids


def test_callable_signer(pki):
    """A plain sign(bytes) callable (an HSM or DSS stand-in) can replace the key object."""
    key = pki["is"]["key"]
    xml = sign_envelope(
        ENVELOPE,
        key=lambda data: key.sign_digest(streebog256(data)),
        certificate=pki["is"]["cert"].der,
        now=NOW,
    )
    assert _verify(xml).certificate == pki["is"]["cert"]


def test_refuses_to_sign_twice(signed, pki):
    """An envelope that already carries wsse:Security is not signed again."""
    with pytest.raises(ValueError):
        sign_envelope(signed, key=pki["is"]["key"], certificate=pki["is"]["cert"], now=NOW)


@pytest.mark.parametrize("soap_ns", [n.NS_SOAP12, n.NS_SOAP11])
def test_an_envelope_signed_around_a_canonical_body_verifies_and_carries_that_body(pki, soap_ns):
    """A Body canonicalised once (the file answer, kept for the next pulls) is signed inside a fresh envelope:
    the message verifies, its Body canonicalises to exactly the kept bytes, and changing it is caught."""
    xml = ENVELOPE.replace(n.NS_SOAP12.encode(), soap_ns.encode())
    canonical = wssec.canonical_body(etree.fromstring(xml))
    assert canonical.xml.startswith(b"<soap:Body") and b'wsu:Id="body"' in canonical.xml
    empty = etree.fromstring(xml)
    empty.find(f"{{{soap_ns}}}Body").clear()  # whatever it held is replaced by the canonical Body
    signed = sign_envelope(
        empty, key=pki["is"]["key"], certificate=pki["is"]["cert"], now=NOW, body=canonical
    )
    assert "body" in _verify(signed).signed_ids
    placed = etree.fromstring(signed).find(f"{{{soap_ns}}}Body")
    assert wssec.c14n(placed) == canonical.xml
    assert placed.findtext(f".//{{{n.NS_EMDR_SERVICE}}}localUid") == "doc-1"
    with pytest.raises(WsSecurityError) as exc:
        _verify(signed.replace(b"doc-1", b"doc-2"))
    assert exc.value.reason == "WSS_DIGEST_MISMATCH"

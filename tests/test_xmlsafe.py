"""producer.xmlsafe: untrusted XML is parsed without DTDs, entities or network access."""

from __future__ import annotations

import socket
import threading

import pytest

from lab.dev.samples import REPOSITORY_SAMPLES as SAMPLES  # noqa: E402
from producer.errors import PermanentError
from producer.xmlsafe import XmlRejected, base64_content, parse_xml


def _reject(data: bytes, **kw) -> XmlRejected:
    with pytest.raises(XmlRejected) as info:
        parse_xml(data, **kw)
    return info.value


class _ListeningSocket:
    """A loopback TCP listener that records whether anybody connected."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(5)
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop = True
        self.thread.join()
        self.sock.close()


@pytest.fixture
def listener():
    srv = _ListeningSocket()
    yield srv
    srv.close()


def test_plain_document_parses():
    """A well-formed document without DTD parses, predefined and character references included."""
    root = parse_xml(b'<?xml version="1.0" encoding="UTF-8"?><r a="1">&amp;&#1044;<c/></r>')
    assert root.tag == "r"
    assert root.text == "&\u0414"


def test_real_semd_sample_parses():
    """A Ministry СЭМД example parses into a ClinicalDocument root."""
    root = parse_xml((SAMPLES / "ConsultRedaction5.xml").read_bytes())
    assert root.tag == "{urn:hl7-org:v3}ClinicalDocument"


def test_xxe_file_entity_is_rejected_and_not_read(tmp_path):
    """An external entity pointing at a local file is refused and the file's contents never appear."""
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT")
    doc = (
        f'<?xml version="1.0"?>\n<!DOCTYPE r [\n  <!ENTITY x SYSTEM "file://{secret}">\n]>\n<r>&x;</r>'
    ).encode()
    err = _reject(doc)
    assert err.reason == "ENTITY_FORBIDDEN"
    assert "line 3, column 3" in err.message
    assert "TOP-SECRET" not in err.message
    assert isinstance(err, PermanentError)


def test_xxe_http_entity_is_rejected_without_network(listener):
    """An external entity on http:// is refused and no connection is ever attempted."""
    doc = (f'<!DOCTYPE r [<!ENTITY x SYSTEM "http://127.0.0.1:{listener.port}/x">]><r>&x;</r>').encode()
    assert _reject(doc).reason == "ENTITY_FORBIDDEN"
    doc2 = (f'<!DOCTYPE r [<!ENTITY % p SYSTEM "http://127.0.0.1:{listener.port}/p"> %p;]><r/>').encode()
    assert _reject(doc2).reason == "ENTITY_FORBIDDEN"
    assert listener.connections == 0


def test_external_dtd_is_rejected_without_network(listener):
    """A DOCTYPE referring to an external DTD is refused as DTD_FORBIDDEN and never fetched."""
    doc = (
        f'<?xml version="1.0"?>\n<!DOCTYPE r SYSTEM "http://127.0.0.1:{listener.port}/r.dtd">\n<r/>'.encode()
    )
    err = _reject(doc)
    assert err.reason == "DTD_FORBIDDEN"
    assert "line 2, column 1" in err.message
    assert listener.connections == 0


def test_bare_doctype_is_rejected():
    """Even a harmless DOCTYPE without declarations is refused: a СЭМД never has one."""
    assert _reject(b"<!DOCTYPE r><r/>").reason == "DTD_FORBIDDEN"


def test_billion_laughs_is_rejected():
    """The billion-laughs entity bomb is refused, not expanded."""
    decls = ['<!ENTITY lol0 "lol">'] + [f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)]
    doc = ("<!DOCTYPE lolz [" + "".join(decls) + "]><lolz>&lol9;</lolz>").encode()
    err = _reject(doc)
    assert err.reason == "ENTITY_FORBIDDEN"
    assert len(err.message) < 500


def test_undeclared_entity_reference_is_rejected():
    """A reference to an entity that is not predefined is refused with its position."""
    err = _reject(b"<r>\n  <a>&nbsp;</a></r>")
    assert err.reason == "ENTITY_FORBIDDEN"
    assert "line 2" in err.message


def test_oversize_is_rejected_before_parsing():
    """Bytes over max_bytes are refused as TOO_LARGE, naming size and limit."""
    err = _reject(b"<r>" + b"x" * 100 + b"</r>", max_bytes=50)
    assert err.reason == "TOO_LARGE"
    assert err.details == {"size": 107, "limit": 50}
    assert parse_xml(b"<r/>", max_bytes=4).tag == "r"


@pytest.mark.parametrize("data", [b"", b"   ", b"hello", b"%PDF-1.7 binary", b"<r><a></r>", b'{"json": 1}'])
def test_not_xml_is_rejected(data):
    """Empty input, text, JSON, PDF bytes and mismatched tags are refused as NOT_XML."""
    assert _reject(data).reason == "NOT_XML"


def test_not_xml_message_names_line_and_column():
    """A syntax error's message names its line and column."""
    err = _reject(b"<r>\n<a>\n</b></r>")
    assert err.reason == "NOT_XML"
    assert "line 3" in err.message and "column" in err.message
    assert err.details["line"] == 3


def test_str_input_is_a_programming_error():
    """Passing str instead of bytes is a TypeError, not a rejected document."""
    with pytest.raises(TypeError):
        parse_xml("<r/>")  # type: ignore[arg-type]


def test_doctype_in_utf16_document_is_rejected():
    """A DOCTYPE is found in a UTF-16 document too, where the markup is not ASCII-visible."""
    doc = '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE r [<!ENTITY x "y">]><r>&x;</r>'.encode("utf-16")
    assert _reject(doc).reason == "ENTITY_FORBIDDEN"


def test_doctype_text_inside_a_comment_is_harmless():
    """The string <!DOCTYPE inside a comment in the body is text, not a DTD, and parses."""
    assert parse_xml(b"<r><!-- <!DOCTYPE x> --><a/></r>").tag == "r"


def test_base64_content_forgives_only_white_space():
    """Base64 text with XML's line breaks and indentation decodes; a stray character or bad padding is refused."""
    assert base64_content("\n    AAEC\n    AwQ=\n") == bytes(range(5))
    assert base64_content(None) == b""
    for bad in ("AAEC*AwQ=", "AAECAwQ", "AAEC AwQ=!"):
        with pytest.raises(ValueError):
            base64_content(bad)

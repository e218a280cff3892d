"""Hardened XML parsing for untrusted bytes (a СЭМД from a МИС, a SOAP reply, an МЧД).

``parse_xml(data)`` is the only way the pipeline turns untrusted bytes into an lxml tree.
A СЭМД never needs a DTD or a custom entity, so any DOCTYPE is refused outright rather than
"made safe": that closes XXE (``file://`` and ``http://`` external entities), the billion-laughs
expansion, external DTD fetches and parameter-entity tricks in one rule. The parser itself is
also configured never to resolve entities, load a DTD or touch the network, so a bug in the
checks below cannot turn into a fetch.

Reasons (``XmlRejected.reason``):

* ``NOT_XML``          not well-formed (or empty); the message gives line and column
* ``DTD_FORBIDDEN``    a DOCTYPE (internal subset or external DTD reference)
* ``ENTITY_FORBIDDEN`` an entity declaration, or a reference to a non-predefined entity
* ``TOO_LARGE``        more bytes than ``max_bytes``

Predefined entities (``&amp;`` ``&lt;`` …) and character references (``&#1044;``) are ordinary
XML and accepted.

``base64_content(text)`` reads the base64 an untrusted document carries (a signature value, a certificate,
a file in a SOAP body) strictly: only the line breaks and indentation XML adds are forgiven.
"""

from __future__ import annotations

import base64
import re

from lxml import etree

from producer.errors import PermanentError

__all__ = ["XmlRejected", "base64_content", "parse_xml"]


class XmlRejected(PermanentError):
    """The bytes are not XML the pipeline will parse (see the module docstring for reasons)."""

    reason = "NOT_XML"


_DOCTYPE = re.compile(rb"<!DOCTYPE", re.I)
_ENTITY_DECL = re.compile(rb"<!ENTITY", re.I)
# The prolog: XML declaration, comments, PIs and white space, up to the first markup that is none of them.
_PROLOG_ITEM = re.compile(r"\s+|<\?.*?\?>|<!--.*?-->", re.S)


def _parser() -> etree.XMLParser:
    # A fresh parser per call: lxml parsers are not thread-safe, and parsing is cheap next to signing.
    return etree.XMLParser(
        resolve_entities=False,  # never expand, not even internal entities
        load_dtd=False,
        dtd_validation=False,
        no_network=True,
        # A СЭМД may embed a PDF as one base64 text node over libxml2's 10 MB default text limit.
        # Lifting it is safe here: entities are refused before parsing and max_bytes bounds the input.
        huge_tree=True,
        remove_comments=False,
        remove_pis=False,
        collect_ids=False,
    )


def _line_col(data: bytes, offset: int) -> tuple[int, int]:
    line = data.count(b"\n", 0, offset) + 1
    col = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
    return line, col


def _prolog_text(data: bytes) -> str:
    """The document as text for the prolog scan: UTF-16 by its BOM/first bytes, else latin-1.

    latin-1 maps every byte to one character, so offsets stay byte offsets for UTF-8 and the
    other ASCII-compatible encodings a СЭМД may declare (windows-1251).
    """
    if data[:2] in (b"\xff\xfe", b"\xfe\xff") or data[:2] in (b"<\x00", b"\x00<"):
        enc = (
            "utf-16"
            if data[:2] in (b"\xff\xfe", b"\xfe\xff")
            else ("utf-16-le" if data[:2] == b"<\x00" else "utf-16-be")
        )
        return data.decode(enc, errors="replace")
    if data[:3] == b"\xef\xbb\xbf":
        return " " * 3 + data[3:].decode("latin-1")  # keep offsets
    return data.decode("latin-1")


def _check_prolog(data: bytes) -> None:
    """Refuse a DOCTYPE before libxml2 sees it: no DTD code path of the parser is ever exercised."""
    text = _prolog_text(data)
    pos = 0
    while True:
        m = _PROLOG_ITEM.match(text, pos)
        if not m or m.end() == pos:
            break
        pos = m.end()
    if text[pos : pos + 9].upper() != "<!DOCTYPE":
        return
    ascii_view = text.encode("latin-1", errors="replace")
    line, col = _line_col(ascii_view, pos)
    ent = re.search(r"<!ENTITY", text[pos:], re.I)
    if ent:
        line, col = _line_col(ascii_view, pos + ent.start())
        raise XmlRejected(
            f"entity declaration not allowed at line {line}, column {col}",
            reason="ENTITY_FORBIDDEN",
            line=line,
            column=col,
        )
    raise XmlRejected(
        f"DOCTYPE not allowed at line {line}, column {col}", reason="DTD_FORBIDDEN", line=line, column=col
    )


def _position_of(pattern: re.Pattern[bytes], data: bytes) -> tuple[int, int]:
    """Line/column of the first match in the raw bytes (ASCII-compatible encodings); (1, 1) if not found."""
    m = pattern.search(data)
    if m is None:
        # UTF-16 and friends: the markup is not ASCII-visible; point at the document start.
        return 1, 1
    return _line_col(data, m.start())


def parse_xml(data: bytes, *, max_bytes: int | None = None) -> etree._Element:
    """Parse untrusted ``data`` into its root element, or raise :class:`XmlRejected`.

    ``max_bytes``: refuse anything larger (checked before parsing); ``None`` = no limit here
    (callers pass ``Settings.max_document_bytes``).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"parse_xml expects bytes, got {type(data).__name__}")
    data = bytes(data)
    if max_bytes is not None and len(data) > max_bytes:
        raise XmlRejected(
            f"document is {len(data)} bytes, over the limit of {max_bytes} bytes",
            reason="TOO_LARGE",
            size=len(data),
            limit=max_bytes,
        )
    if not data.strip():
        raise XmlRejected("document is empty (line 1, column 1)", reason="NOT_XML", line=1, column=1)

    _check_prolog(data)
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        line, col = exc.position if exc.position else (exc.lineno or 1, 1)
        text = str(exc.msg or exc)
        # An undeclared entity reference is an entity problem, not a syntax one: say so.
        if "Entity" in text and "not defined" in text:
            raise XmlRejected(
                f"entity reference not allowed at line {line}, column {col}: {text}",
                reason="ENTITY_FORBIDDEN",
                line=line,
                column=col,
            ) from None
        raise XmlRejected(
            f"not well-formed XML at line {line}, column {col}: {text}",
            reason="NOT_XML",
            line=line,
            column=col,
        ) from None
    except ValueError as exc:  # e.g. an encoding declaration lxml refuses
        raise XmlRejected(f"not XML (line 1, column 1): {exc}", reason="NOT_XML", line=1, column=1) from None

    if not isinstance(root, etree._Element) or isinstance(root, etree._Comment):
        raise XmlRejected("no root element (line 1, column 1)", reason="NOT_XML", line=1, column=1)

    # Second line of defence, should the prolog scan ever be fooled (an encoding it does not know).
    docinfo = root.getroottree().docinfo
    if (
        docinfo.internalDTD is not None
        or docinfo.externalDTD is not None
        or docinfo.doctype
        or docinfo.system_url
        or docinfo.public_id
    ):
        dtd = docinfo.internalDTD
        has_entities = dtd is not None and any(True for _ in dtd.iterentities())
        if has_entities:
            line, col = _position_of(_ENTITY_DECL, data)
            raise XmlRejected(
                f"entity declaration not allowed at line {line}, column {col}",
                reason="ENTITY_FORBIDDEN",
                line=line,
                column=col,
            )
        line, col = _position_of(_DOCTYPE, data)
        raise XmlRejected(
            f"DOCTYPE not allowed at line {line}, column {col}", reason="DTD_FORBIDDEN", line=line, column=col
        )

    for node in root.iter(etree.Entity):
        line = node.sourceline or 1
        raise XmlRejected(
            f"entity reference {node.text} not allowed at line {line}",
            reason="ENTITY_FORBIDDEN",
            line=line,
            column=None,
        )
    return root


def base64_content(text: str | None) -> bytes:
    """The bytes of base64 text as XML or PEM carries it: white space anywhere is ignored (line breaks every
    64 or 76 characters, indentation); any other character outside the alphabet, or wrong padding, raises
    ``binascii.Error`` (a ``ValueError``) instead of being skipped, as ``base64.b64decode`` would by default."""
    return base64.b64decode("".join((text or "").split()), validate=True)

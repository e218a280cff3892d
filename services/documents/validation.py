"""Validate a СЭМД against the Ministry's XSD and Schematron for its kind (НСИ 1.2.643.5.1.13.13.11.1520 code).

Schemas live in ``services/data/semd/<kind>/``: ``CDA.xsd`` (and the files it includes) and/or
``schematron.sch``. Provenance is in ``services/data/semd/SOURCES.md``. A kind with no schema here is
*not checked* (``ValidationReport.checked_xsd`` / ``checked_schematron`` are False). This module reports that;
the signer fails closed on it (``KIND_NOT_VALIDATED``, ``services.pipeline.signing``) unless the organisation
allows unvalidated kinds.

* XSD: lxml ``XMLSchema`` on the document as received (``urn:hl7-org:v3`` namespace).
* Schematron: the Ministry rules use unprefixed paths, so — as РЭМД and 1С:Медицина do — the default
  namespace ``urn:hl7-org:v3`` is removed from a copy of the document first (in which a text of more than
  64 KiB, an embedded attachment, is cut to its start: ``abbreviate_large_text``); the rules are compiled to
  XSLT by :mod:`services.documents.schematron` and run by Saxon. Both a failed ``assert`` and a fired ``report``
  are failures: the Ministry writes prohibitions ("… не должен иметь атрибут @nullFlavor") as reports.

Each schema is compiled once per process, on first use or by :func:`preload` at worker start, and
reused for every document (compiling the largest Schematron takes about 1.5 s, checking a document
with it a fraction of that).

Error texts name the line, the XPath and the rule that failed, never the value that failed it (a name,
a birth date, a СНИЛС): ``str()`` of an ``XsdError`` or ``SchematronFailure`` is what may be logged,
dead-lettered or sent to the МИС (``safe_xsd_message``; the Schematron's ``value-of`` parts are left out).

Reasons raised by :func:`ensure_valid`: ``XSD_INVALID``, ``SCHEMATRON_INVALID`` (plus the
``producer.xmlsafe`` reasons when given bytes that are not acceptable XML).
"""

from __future__ import annotations

import copy
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from lxml import etree

from producer.errors import ConfigurationError, PermanentError
from producer.xmlsafe import parse_xml
from services.documents.schematron import CompiledSchematron, compile_schematron
from services.logs import get_logger, mask_text

__all__ = [
    "DATA_DIR",
    "HL7_NS",
    "SchematronFailure",
    "ValidationReport",
    "XsdError",
    "ensure_valid",
    "has_schematron",
    "has_xsd",
    "known_kinds",
    "preload",
    "strip_hl7_namespace",
    "validate_semd",
]

HL7_NS = "urn:hl7-org:v3"
DATA_DIR = Path(__file__).resolve().parents[1] / "data" / "semd"


log = get_logger(__name__)  # lazy (services.logs): it follows the configure() made at start-up


# -- error texts that carry no value of the document -------------------------------------------------
#
# A validation error leaves the process in logs, dead letters, the МИС's status events and the console, so
# its text says *where* (the line and the XPath) and *which rule* (the schema's facet, type or assert), never
# the value that broke it: that value is often a name, a birth date or a СНИЛС. libxml2 quotes a value in
# a few fixed phrasings (xmlschemas.c): "The value '…' is not accepted / is not an element / has a length…",
# "'…' is not a valid value of …", "Duplicate key-sequence ['…']", "No match found for key-sequence ['…']".
# Each is rewritten; what remains is masked again as free text (services.logs.mask_text), in case a
# phrasing was missed. ``XsdError.message`` keeps libxml2's own text for `emd validate`, which shows a
# person their own file on their own terminal.
_VALUE_PHRASES = (
    # The value 'X' is not accepted by the pattern… / has a length of… / is less than… / is not an element of…
    (
        re.compile(r"The value '.*'(?= (?:is|has) )", re.S),
        "The value",
    ),
    # Element 'a', attribute 'b': 'X' is not a valid value of the atomic type 'ts'.
    (re.compile(r"(^|: )'.*'(?= is not (?:a valid value|facet-valid|an element))", re.S), r"\1the value"),
    (re.compile(r"key-sequence \[.*\](?= (?:in|of) )", re.S), "key-sequence [the values]"),
    (re.compile(r"(The QName value|The value of the attribute) '.*?'", re.S), r"\1"),
)
#: libxml2's own element path for namespaced documents is positional (/*/*[12]/*[3]); a readable one is built
_LOCAL = re.compile(r"^\{[^}]*\}")


def safe_xsd_message(message: str) -> str:
    """libxml2's XSD message with the document's values removed: the rule is kept (facet, pattern, type)."""
    text = _LXML_NS.sub("", message)
    for pattern, replacement in _VALUE_PHRASES:
        text = pattern.sub(replacement, text)
    return mask_text(text)


@dataclass(frozen=True)
class XsdError:
    """One XSD violation, at a line of the document as received.

    ``message`` is libxml2's text, which may quote the offending value; ``rule`` is that text without the
    value, and ``str()`` (what logs, dead letters and status events carry) is the line, the XPath and the rule.
    """

    line: int
    column: int
    message: str
    path: str | None = None

    @property
    def rule(self) -> str:
        return safe_xsd_message(self.message)

    def __str__(self) -> str:
        where = f"line {self.line}" + (f" {self.path}" if self.path else "")
        return f"{where}: {self.rule}"


@dataclass(frozen=True)
class SchematronFailure:
    """A failed Schematron ``assert`` (or a fired ``report``) at one node of the document.

    ``message`` is the assert's text with the document's values (``value-of``) filled in; ``rule`` is the
    same text without them. ``str()`` carries the line, the XPath and the rule.
    """

    kind: str  # "assert" | "report"
    pattern: str
    context: str
    test: str
    message: str
    location: str  # XPath of the node, HL7 elements unprefixed: /ClinicalDocument[1]/author[1]/time[1]
    line: int | None
    rule: str = ""

    def __str__(self) -> str:
        where = f"line {self.line} {self.location}" if self.line else self.location
        rule = self.rule or f"{self.kind} {self.pattern}: {self.test}"
        return f"{where}: {mask_text(rule)}"


@dataclass(frozen=True)
class ValidationReport:
    """What was checked for one document, and what failed."""

    kind: str
    xsd_errors: tuple[XsdError, ...] = ()
    schematron_failures: tuple[SchematronFailure, ...] = ()
    checked_xsd: bool = False
    checked_schematron: bool = False

    @property
    def valid(self) -> bool:
        """No failure in what was checked (True also when nothing could be checked: see ``checked``)."""
        return not self.xsd_errors and not self.schematron_failures

    @property
    def checked(self) -> bool:
        return self.checked_xsd or self.checked_schematron

    def summary(self) -> str:
        """One line for logs and the МИС: what was checked and how many failures."""
        if not self.checked:
            return f"kind {self.kind}: not checked (no XSD or Schematron for this kind)"
        parts = []
        parts.append(f"XSD {len(self.xsd_errors)} error(s)" if self.checked_xsd else "XSD not checked")
        parts.append(
            f"Schematron {len(self.schematron_failures)} failure(s)"
            if self.checked_schematron
            else "Schematron not checked"
        )
        return f"kind {self.kind}: " + ", ".join(parts)


# -- schema registry --------------------------------------------------------------------------------

_xsd: dict[str, etree.XMLSchema] = {}
_sch: dict[str, CompiledSchematron] = {}
_locks: dict[str, threading.Lock] = {}
_registry_lock = threading.Lock()


def _lock(key: str) -> threading.Lock:
    with _registry_lock:
        return _locks.setdefault(key, threading.Lock())


def _kind_dir(kind: str) -> Path | None:
    kind = str(kind).strip()
    # a kind is a bare НСИ code: never let it walk out of the data folder
    if not kind.isdigit():
        return None
    path = DATA_DIR / kind
    return path if path.is_dir() else None


def has_xsd(kind: str) -> bool:
    d = _kind_dir(kind)
    return d is not None and (d / "CDA.xsd").is_file()


def _kind_file(kind: str, name: str) -> Path:
    """``name`` in the folder of ``kind``; its callers asked ``has_xsd`` or ``has_schematron`` first."""
    folder = _kind_dir(kind)
    if folder is None:
        raise ConfigurationError(f"no schema folder for kind {kind!r}", reason="SCHEMA_BROKEN", kind=kind)
    return folder / name


def has_schematron(kind: str) -> bool:
    d = _kind_dir(kind)
    return d is not None and (d / "schematron.sch").is_file()


def known_kinds() -> tuple[str, ...]:
    """НСИ 1520 codes with an XSD or a Schematron here, in numeric order."""
    if not DATA_DIR.is_dir():
        return ()
    kinds = [p.name for p in DATA_DIR.iterdir() if p.is_dir() and p.name.isdigit()]
    return tuple(sorted((k for k in kinds if has_xsd(k) or has_schematron(k)), key=int))


def _xsd_for(kind: str) -> etree.XMLSchema:
    with _lock("xsd-load:" + kind):
        schema = _xsd.get(kind)
        if schema is None:
            path = _kind_file(kind, "CDA.xsd")
            # the schema set is our own packaged data; includes are resolved from disk, never the network
            parser = etree.XMLParser(no_network=True, resolve_entities=False)
            try:
                schema = _xsd[kind] = etree.XMLSchema(etree.parse(str(path), parser))
            except (etree.XMLSchemaParseError, etree.XMLSyntaxError) as exc:
                raise ConfigurationError(
                    f"XSD for kind {kind} does not load: {exc}", reason="SCHEMA_BROKEN", kind=kind
                ) from None
            log.info("xsd_loaded", kind=kind)
        return schema


def _schematron_for(kind: str) -> CompiledSchematron:
    with _lock("sch-load:" + kind):
        compiled = _sch.get(kind)
        if compiled is None:
            compiled = _sch[kind] = compile_schematron(_kind_file(kind, "schematron.sch"))
            log.info("schematron_compiled", kind=kind, checks=len(compiled.checks))
        return compiled


def preload(kinds: list[str] | tuple[str, ...] | None = None) -> None:
    """Load every XSD and compile every Schematron now (default: all known kinds), not on first document."""
    for kind in known_kinds() if kinds is None else kinds:
        if has_xsd(kind):
            _xsd_for(kind)
        if has_schematron(kind):
            _schematron_for(kind)


# -- validation -------------------------------------------------------------------------------------


def strip_hl7_namespace(root: etree._Element) -> etree._Element:
    """A copy of ``root`` with ``urn:hl7-org:v3`` elements moved to no namespace (source lines kept)."""
    doc = copy.deepcopy(root)
    prefix = "{" + HL7_NS + "}"
    for el in doc.iter():
        if isinstance(el.tag, str) and el.tag.startswith(prefix):
            el.tag = el.tag[len(prefix) :]
    # drop only the now-unused HL7 declaration; other prefixes may be used inside attribute values
    keep = {p for el in doc.iter() if isinstance(el.tag, str) for p in el.nsmap if p}
    etree.cleanup_namespaces(doc, keep_ns_prefixes=sorted(keep))
    return doc


_LXML_NS = re.compile(r"\{" + re.escape(HL7_NS) + r"\}")


def _check_xsd(kind: str, root: etree._Element) -> tuple[XsdError, ...]:
    schema = _xsd_for(kind)
    with _lock("xsd-run:" + kind):  # an XMLSchema keeps its error_log on the object
        schema.validate(root)
        entries = list(schema.error_log)
    return tuple(
        XsdError(
            line=e.line,
            column=e.column,
            message=_LXML_NS.sub("", e.message),
            path=_readable_path(root, getattr(e, "path", None)),
        )
        for e in entries
    )


def _readable_path(root: etree._Element, path: str | None) -> str | None:
    """libxml2's positional path of an error (``/*/*[12]/*[3]``) as element names: /ClinicalDocument[1]/…"""
    if not path:
        return None
    try:
        found = root.getroottree().xpath(path)
    except etree.XPathError:
        return path
    node = found[0] if isinstance(found, list) and found else None
    if not isinstance(node, etree._Element):
        return path
    steps = []
    while node is not None:
        parent = node.getparent()
        name = _LOCAL.sub("", node.tag) if isinstance(node.tag, str) else "node()"
        index = 1 + sum(1 for sib in node.itersiblings(preceding=True) if sib.tag == node.tag)
        steps.append(f"{name}[{index}]")
        node = parent
    return "/" + "/".join(reversed(steps))


_EQNAME = re.compile(r"Q\{([^}]*)\}")


def _to_xpath(location: str, doc: etree._Element) -> tuple[str, dict[str, str]]:
    """Saxon's ``fn:path()`` (EQNames) → an lxml XPath plus its prefix map, for ``doc``."""
    by_uri = {uri: p for p, uri in doc.nsmap.items() if p}
    namespaces: dict[str, str] = {}

    def prefix(m: re.Match[str]) -> str:
        uri = m.group(1)
        if not uri:
            return ""
        p = by_uri.get(uri) or f"ns{len(namespaces)}"
        namespaces[p] = uri
        return p + ":"

    return _EQNAME.sub(prefix, location), namespaces


def _line_of(doc: etree._Element, xpath: str, namespaces: dict[str, str]) -> int | None:
    if xpath in ("", "/"):
        return doc.sourceline
    try:
        found = doc.getroottree().xpath(xpath, namespaces=namespaces)
    except etree.XPathError:
        return None
    if not found:
        return None
    node = found[0]
    if isinstance(node, str) and hasattr(node, "getparent"):  # an attribute or text result
        node = node.getparent()
    return getattr(node, "sourceline", None)


#: text longer than this (an embedded attachment: a base64 PDF or image) reaches the Schematron abbreviated
LARGE_TEXT_CHARS = 64 * 1024
#: what is kept of it: its start, so a rule testing that it is not empty, or its alphabet, sees the same
KEPT_TEXT_CHARS = 1024


def abbreviate_large_text(doc: etree._Element) -> int:
    """Cut every text over :data:`LARGE_TEXT_CHARS` characters in ``doc`` (a copy) to its first
    :data:`KEPT_TEXT_CHARS`; the number of texts cut.

    Why: Saxon holds about 30 bytes per byte of the document it checks (measured: a 10 MB СЭМД with an embedded
    PDF took the signer from 65 to 370 MB, docs/benchmarks.md). The Ministry rules test embedded attachments'
    attributes and counts (``@mediaType``, ``count(value)=1``), never the bytes of the payload, which the XSD has
    checked whole; the copy the Schematron sees keeps every element, attribute and source line."""
    cut = 0
    for el in doc.iter():
        if el.text is not None and len(el.text) > LARGE_TEXT_CHARS:
            el.text, cut = el.text[:KEPT_TEXT_CHARS], cut + 1
        if el.tail is not None and len(el.tail) > LARGE_TEXT_CHARS:
            el.tail, cut = el.tail[:KEPT_TEXT_CHARS], cut + 1
    return cut


def _check_schematron(kind: str, root: etree._Element) -> tuple[SchematronFailure, ...]:
    stripped = strip_hl7_namespace(root)
    abbreviate_large_text(stripped)
    hits = _schematron_for(kind).run(stripped)
    failures = []
    for hit in hits:
        xpath, namespaces = _to_xpath(hit.location, stripped)
        failures.append(
            SchematronFailure(
                kind=hit.check.kind,
                pattern=hit.check.pattern,
                context=hit.check.context,
                test=hit.check.test,
                message=hit.message,
                location=xpath,
                line=_line_of(stripped, xpath, namespaces),
                rule=hit.rule,
            )
        )
    return tuple(failures)


def _root(document: bytes | etree._Element, max_bytes: int | None) -> etree._Element:
    if isinstance(document, etree._ElementTree):
        return document.getroot()
    if isinstance(document, etree._Element):
        return document
    return parse_xml(document, max_bytes=max_bytes)


def validate_semd(
    document: bytes | etree._Element, kind: str, *, schematron: bool = True, max_bytes: int | None = None
) -> ValidationReport:
    """Check ``document`` (bytes, parsed by ``producer.xmlsafe``, or a parsed root) against ``kind``'s schemas.

    ``schematron``: also run the Schematron (default True; it is the slower half).
    ``max_bytes``: size limit when ``document`` is bytes (default: none here).
    """
    kind = str(kind).strip()
    return _validate(_root(document, max_bytes), kind, schematron=schematron, stop_on_xsd=False)


def _validate(root: etree._Element, kind: str, *, schematron: bool, stop_on_xsd: bool) -> ValidationReport:
    xsd_errors: tuple[XsdError, ...] = ()
    failures: tuple[SchematronFailure, ...] = ()
    checked_xsd = has_xsd(kind)
    if checked_xsd:
        xsd_errors = _check_xsd(kind, root)
    checked_sch = schematron and has_schematron(kind) and not (stop_on_xsd and xsd_errors)
    if checked_sch:
        failures = _check_schematron(kind, root)
    report = ValidationReport(
        kind=kind,
        xsd_errors=xsd_errors,
        schematron_failures=failures,
        checked_xsd=checked_xsd,
        checked_schematron=checked_sch,
    )
    log.debug(
        "semd_validated",
        kind=kind,
        checked_xsd=checked_xsd,
        checked_schematron=checked_sch,
        xsd_errors=len(xsd_errors),
        schematron_failures=len(failures),
    )
    return report


def ensure_valid(
    document: bytes | etree._Element,
    kind: str,
    *,
    schematron: bool = True,
    max_bytes: int | None = None,
    max_listed: int = 3,
) -> ValidationReport:
    """Like :func:`validate_semd`, but raise ``PermanentError`` on the first failing stage.

    ``XSD_INVALID`` (Schematron is then not run) or ``SCHEMATRON_INVALID``; the message lists the
    first ``max_listed`` (default 3) problems with their line numbers. Returns the report when valid
    (or not checked: see ``report.checked``).
    """
    kind = str(kind).strip()
    report = _validate(_root(document, max_bytes), kind, schematron=schematron, stop_on_xsd=True)
    if report.xsd_errors:
        raise PermanentError(
            _listing(f"СЭМД kind {kind} is not valid against its XSD", report.xsd_errors, max_listed),
            reason="XSD_INVALID",
            kind=kind,
            errors=len(report.xsd_errors),
        )
    if report.schematron_failures:
        raise PermanentError(
            _listing(f"СЭМД kind {kind} fails its Schematron", report.schematron_failures, max_listed),
            reason="SCHEMATRON_INVALID",
            kind=kind,
            errors=len(report.schematron_failures),
        )
    return report


def _listing(title: str, problems: tuple, limit: int) -> str:
    shown = "; ".join(str(p) for p in problems[:limit])
    more = f" (and {len(problems) - limit} more)" if len(problems) > limit else ""
    return f"{title}: {len(problems)} problem(s): {shown}{more}"

"""ISO Schematron (``queryBinding="xslt2"``) compiled to XSLT 3.0 and run by Saxon (``saxonche``).

The Ministry's СЭМД rules are plain ISO Schematron: ``ns``, ``pattern``, ``rule context=``,
``assert``/``report test=`` with XPath 2.0 (one even uses an XPath 3.1 array literal). Rather than
bundle a third-party XSLT skeleton (SchXslt, the ISO skeleton), this module compiles that subset
itself, in the same shape SchXslt produces:

* each ``pattern`` becomes one XSLT mode walking the whole document (``on-no-match="shallow-skip"``
  descends through elements *and* attributes). When every rule context of a pattern ends in a plain
  name test (``//code[…]``, ``a/b | c``, ``//*[…]``, ``/``), the mode is instead applied only to the
  nodes with those names (``//code | //c``, in document order): a node of any other name cannot match,
  so the result is the same and the large Ministry schemas (1,000 patterns) run several times faster;
* each ``rule`` becomes a template in its pattern's mode, with a priority falling in document
  order, so a node is handled by the *first* rule of a pattern whose context matches it, as the
  Schematron standard says; after the rule fires, the walk goes on into the node's children;
* ``assert`` emits a failure when its test is false, ``report`` when its test is true;
* ``let`` (schema, pattern and rule level) becomes ``xsl:variable``; ``value-of`` and ``name`` in a
  message are evaluated, each ``value-of`` inside a ``<v>`` so that ``SchematronHit.rule`` can give the
  message without the document's values (a name, a birth date, a СНИЛС) for logs and dead letters;
* every test runs inside ``xsl:try``: a test that raises a dynamic error (a cast of a malformed
  date, say) is reported as a failure of that test instead of aborting the whole validation.

Unsupported constructs (abstract patterns, ``extends``, ``include``, phases) are refused with
``SchematronError`` at compile time, never silently skipped.

The compiled stylesheet returns ``<r><f i="N" l="path()">message</f>…</r>``; ``N`` indexes the
assert/report in :attr:`CompiledSchematron.checks` (pattern, context, test, kind). Saxon is not
thread-safe across calls, so every Saxon call holds one process-wide lock.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path

from lxml import etree

from producer.errors import ConfigurationError

__all__ = [
    "Check",
    "CompiledSchematron",
    "SchematronError",
    "SchematronHit",
    "compile_schematron",
    "to_xslt",
]

SCH = "http://purl.oclc.org/dsdl/schematron"
XSL = "http://www.w3.org/1999/XSL/Transform"
_ERR = "http://www.w3.org/2005/xqt-errors"

_SAXON_LOCK = threading.RLock()
_processor = None


class SchematronError(ConfigurationError):
    """A Schematron file this module cannot compile (malformed, or a construct it does not support)."""

    reason = "SCHEMATRON_UNSUPPORTED"


@dataclass(frozen=True)
class Check:
    """One ``assert`` or ``report`` of the schema."""

    index: int
    kind: str  # "assert" | "report"
    pattern: str  # the pattern's @id, or "pattern[N]" (1-based) when it has none
    context: str
    test: str
    role: str | None
    id: str | None


@dataclass(frozen=True)
class SchematronHit:
    """A failed assert or a fired report, at one node of the checked document."""

    check: Check
    message: str
    location: str  # fn:path() of the node, as Saxon prints it (``/Q{}ClinicalDocument[1]/…``)
    #: the message with every value taken from the document (``value-of``) replaced by "…": what may leave
    #: the process (logs, dead letters, status events)
    rule: str = ""


def _saxon():
    global _processor
    if _processor is None:
        from saxonche import PySaxonProcessor

        _processor = PySaxonProcessor(license=False)
    return _processor


def _local(el: etree._Element) -> str:
    return etree.QName(el).localname if isinstance(el.tag, str) else ""


def _sch_children(el: etree._Element, *names: str) -> list[etree._Element]:
    return [
        c
        for c in el
        if isinstance(c.tag, str) and c.tag.startswith("{" + SCH + "}") and (not names or _local(c) in names)
    ]


_UNSUPPORTED = {"include", "extends", "phase", "active", "param", "diagnostics", "diagnostic"}


def to_xslt(sch: etree._Element | bytes, *, walk_all: bool = False) -> tuple[bytes, tuple[Check, ...]]:
    """Compile a Schematron schema (tree or bytes) to an XSLT 3.0 stylesheet and its checks.

    ``walk_all``: always walk the whole document per pattern (no name-indexed selection); the
    results are the same, only slower. Default False.
    """
    schema = _supported_schema(sch)
    nsmap: dict[str | None, str] = {"xsl": XSL, "err": _ERR}
    for ns in _sch_children(schema, "ns"):
        nsmap[ns.get("prefix")] = _attribute(ns, "uri")
    X = f"{{{XSL}}}"
    sheet = etree.Element(X + "stylesheet", nsmap=nsmap, version="3.0")
    sheet.set("exclude-result-prefixes", "#all")
    etree.SubElement(sheet, X + "output", method="xml", indent="no", encoding="UTF-8")
    for let in _sch_children(schema, "let"):
        _variable(sheet, let)

    checks: list[Check] = []
    patterns = _sch_children(schema, "pattern")
    main = etree.SubElement(sheet, X + "template", match="/")
    out = etree.SubElement(main, "r")
    for p_index, pattern in enumerate(patterns, start=1):
        mode = f"p{p_index}"
        p_name = pattern.get("id") or f"pattern[{p_index}]"
        # pattern-level lets are evaluated with the document as context, as in SchXslt
        for let in _sch_children(pattern, "let"):
            _variable(sheet, let)
        rules = _sch_children(pattern, "rule")
        targets = None if walk_all else _targets([r.get("context") or "" for r in rules])
        etree.SubElement(
            out, X + "apply-templates", mode=mode, select=" | ".join(targets) if targets else "/"
        )
        etree.SubElement(
            sheet, X + "mode", {"name": mode, "on-no-match": "deep-skip" if targets else "shallow-skip"}
        )
        for r_index, rule in enumerate(rules):
            tpl = _rule_template(
                sheet, rule, mode, priority=len(rules) - r_index, pattern=p_name, checks=checks
            )
            if not targets:
                etree.SubElement(tpl, X + "apply-templates", select="@*|node()", mode=mode)
    return etree.tostring(sheet, encoding="UTF-8", xml_declaration=True), tuple(checks)


def _supported_schema(sch: etree._Element | bytes) -> etree._Element:
    """The schema's root, parsed without entities or network; SchematronError for what is not supported."""
    schema = (
        etree.fromstring(
            sch,
            etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, remove_comments=True),
        )
        if isinstance(sch, (bytes, bytearray))
        else sch
    )
    if schema.tag != f"{{{SCH}}}schema":
        raise SchematronError(f"not an ISO Schematron schema: root is {schema.tag!r}")
    binding = (schema.get("queryBinding") or "xslt").lower()
    if binding not in ("xslt", "xslt2", "xslt3", "xpath2", "xpath3", "xpath31"):
        raise SchematronError(f"queryBinding {binding!r} is not supported")
    for el in schema.iter(f"{{{SCH}}}*"):
        if _local(el) in _UNSUPPORTED or el.get("abstract") == "true" or el.get("is-a"):
            raise SchematronError(
                f"Schematron construct <{_local(el)}> (line {el.sourceline}) is not supported"
            )
    return schema


def _rule_template(
    sheet: etree._Element,
    rule: etree._Element,
    mode: str,
    *,
    priority: int,
    pattern: str,
    checks: list[Check],
) -> etree._Element:
    """One rule as an XSLT template of its pattern's mode, each assert and report a check added to ``checks``."""
    context = rule.get("context")
    if not context:
        raise SchematronError(f"rule without @context (line {rule.sourceline})")
    tpl = etree.SubElement(sheet, f"{{{XSL}}}template", match=context, mode=mode, priority=str(priority))
    for child in _sch_children(rule):
        name = _local(child)
        if name == "let":
            _variable(tpl, child)
        elif name in ("assert", "report"):
            check = Check(
                index=len(checks),
                kind=name,
                pattern=pattern,
                context=context,
                test=_attribute(child, "test"),
                role=child.get("role"),
                id=child.get("id"),
            )
            checks.append(check)
            _emit_check(tpl, check, child)
    return tpl


def _attribute(el: etree._Element, name: str) -> str:
    """An attribute the construct cannot do without; SchematronError naming the construct when absent."""
    value = el.get(name)
    if value is None:
        raise SchematronError(f"<{_local(el)}> without @{name} (line {el.sourceline})")
    return value


_STRING = re.compile(r"'[^']*'|\"[^\"]*\"")
_PREDICATE = re.compile(r"\[[^\[\]]*\]")
_NAME = re.compile(r"(?:[^\W\d][\w.-]*:)?[^\W\d][\w.-]*|\*")


def _targets(contexts: list[str]) -> list[str] | None:
    """The node selections a pattern needs (``//name``, ``//*``, ``/``), or None to walk everything."""
    targets: list[str] = []
    for context in contexts:
        bare = _STRING.sub("", context)
        while True:  # strip predicates, innermost first
            stripped = _PREDICATE.sub("", bare)
            if stripped == bare:
                break
            bare = stripped
        if "[" in bare or "]" in bare or "(" in bare:
            return None
        for branch in bare.split("|"):
            branch = branch.strip()
            if branch == "/":
                target = "/"
            else:
                last = branch.rsplit("/", 1)[-1].strip()
                if not _NAME.fullmatch(last):
                    return None  # attribute, text(), an axis, a function: walk the whole document
                target = "//" + last
            if target not in targets:
                targets.append(target)
    return targets or None


def _variable(parent: etree._Element, let: etree._Element) -> None:
    var = etree.SubElement(parent, f"{{{XSL}}}variable", name=_attribute(let, "name"))
    value = let.get("value")
    if value is not None:
        var.set("select", value)


def _emit_check(tpl: etree._Element, check: Check, source: etree._Element) -> None:
    X = f"{{{XSL}}}"
    test = check.test if check.kind == "report" else f"not({check.test})"
    attempt = etree.SubElement(tpl, X + "try")
    when = etree.SubElement(attempt, X + "if", test=test)
    hit = etree.SubElement(when, "f", i=str(check.index), l="{path()}")
    _message(hit, source)
    catch = etree.SubElement(attempt, X + "catch")
    failed = etree.SubElement(catch, "f", i=str(check.index), l="{path()}")
    failed.text = "test could not be evaluated: "
    etree.SubElement(etree.SubElement(failed, "v"), X + "value-of", select="$err:description")


def _message(target: etree._Element, source: etree._Element) -> None:
    """Copy the assert's text into ``target``, evaluating ``value-of`` and ``name``."""
    X = f"{{{XSL}}}"
    target.text = source.text or ""
    last = None
    for child in source:
        name = _local(child) if isinstance(child.tag, str) and child.tag.startswith("{" + SCH) else ""
        if name == "value-of":  # a value of the document: marked, so a message can be shown without it
            last = etree.SubElement(target, "v")
            etree.SubElement(last, X + "value-of", select=_attribute(child, "select"))
        elif name == "name":
            last = etree.SubElement(target, X + "value-of", select=f"name({child.get('path') or '.'})")
        else:  # emph, dir, span, foreign elements: their text only
            last = etree.SubElement(target, X + "text")
            last.text = "".join(child.itertext())
        last.tail = child.tail
    if last is None:
        target.text = _squash(target.text)


def _without_values(f: etree._Element) -> str:
    """The text of a result element with each ``<v>`` (a value of the document) replaced by "…"."""
    parts = [f.text or ""]
    for child in f:
        parts.append("…" if child.tag == "v" else "".join(child.itertext()))
        parts.append(child.tail or "")
    return "".join(parts)


def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


class CompiledSchematron:
    """A Schematron schema compiled once (Python → XSLT → Saxon executable), reusable for any document."""

    def __init__(self, xslt: bytes, checks: tuple[Check, ...], *, name: str = "schematron") -> None:
        self.name = name
        self.checks = checks
        self.xslt = xslt
        from saxonche import PySaxonApiError

        with _SAXON_LOCK:
            try:
                compiler = _saxon().new_xslt30_processor()
                self._executable = compiler.compile_stylesheet(stylesheet_text=xslt.decode("utf-8"))
            except PySaxonApiError as exc:
                raise SchematronError(f"{name}: the compiled stylesheet does not compile: {exc}") from None

    def run(self, document: etree._Element | bytes | str) -> list[SchematronHit]:
        """Check ``document`` (an lxml root, or serialized XML) and return every failure, in pattern order."""
        from saxonche import PySaxonApiError

        if isinstance(document, etree._Element):
            text = etree.tostring(document, encoding="unicode")
        elif isinstance(document, (bytes, bytearray)):
            from producer.xmlsafe import parse_xml

            text = etree.tostring(parse_xml(bytes(document)), encoding="unicode")
        else:
            text = document
        with _SAXON_LOCK:
            try:
                node = _saxon().parse_xml(xml_text=text, encoding="UTF-8")
                result = self._executable.transform_to_string(xdm_node=node)
            except PySaxonApiError as exc:
                raise SchematronError(
                    f"{self.name}: Saxon failed: {exc}", reason="SCHEMATRON_ENGINE_ERROR"
                ) from None
        root = etree.fromstring(result.encode("utf-8"))
        hits = []
        for f in root:
            check = self.checks[int(f.attrib["i"])]  # the stylesheet writes i and l on every hit
            hits.append(
                SchematronHit(
                    check=check,
                    message=_squash("".join(f.itertext())),
                    location=f.attrib["l"],
                    rule=_squash(_without_values(f)),
                )
            )
        return hits


def compile_schematron(path: str | Path, *, walk_all: bool = False) -> CompiledSchematron:
    """Read, translate and Saxon-compile the Schematron file at ``path`` (``walk_all``: see :func:`to_xslt`)."""
    path = Path(path)
    xslt, checks = to_xslt(path.read_bytes(), walk_all=walk_all)
    return CompiledSchematron(xslt, checks, name=path.parent.name + "/" + path.name)

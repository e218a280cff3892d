"""Every module, attribute and ``docs/`` page that a docstring, a comment or a document names exists.

A docstring that says "see ``services.remd.names``" or "``docs/protocol.md#namespaces``" is a link: it must
lead somewhere. Dotted names under the four import roots (``services…``, ``producer…``, ``lab…``,
``workers…``) resolve to a module, then to what that module defines (a class, a function, a constant, an
import), and through a class to its members. Paths under ``docs/`` and the four roots resolve to a file or
folder of the repository, and a ``#anchor`` to a heading of that page, spelt as GitHub spells heading anchors.
A path that follows another repository named on the same line (`` `owner/name` ``, or "same repository") is
that repository's, and is not checked. The names are read statically (the module's syntax tree), so the check
imports nothing.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CODE = ("services", "producer", "workers", "lab", "tests", "bench")
DOCUMENTS = ("docs", "README.md", "DEVELOPERS.md", "producer/README.md")
SKIPPED_DIRS = {"__pycache__", ".venv", ".pytest_cache", ".mypy_cache", ".ruff_cache"}

DOTTED = re.compile(r"(?<![\w./-])((?:services|producer|lab|workers)(?:\.[A-Za-z_]\w*)+)(?![\w/-])")
PATH = re.compile(
    r"(?<![\w./-])((?:docs|services|producer|lab|workers)/[\w./-]*\w)(#[\w-]+)?(?![\w<{*]|[./][<{*])"
)
#: another repository named on a line: the paths after it are inside that repository
OTHER_REPOSITORY = re.compile(
    r"`(?!(?:docs|services|producer|lab|workers|tests|deploy|bench|config)/)[\w.-]+/[\w.-]+`|same repository"
)
MARKDOWN_ANCHOR = re.compile(r"\]\(#([\w-]+)\)")
#: a dotted word ending so is a file name (``producer.toml``), not a module path
FILE_SUFFIXES = {"py", "md", "json", "xml", "xsd", "sch", "toml", "yaml", "yml", "txt", "sql", "html", "cfg"}


# --- where names are mentioned --------------------------------------------------------------------------------
def _python_files(root: Path) -> Iterator[Path]:
    for name in CODE:
        for path in sorted((root / name).rglob("*.py")):
            if not SKIPPED_DIRS & set(path.relative_to(root).parts):
                yield path


def _markdown_files(root: Path) -> Iterator[Path]:
    for name in DOCUMENTS:
        top = root / name
        if top.is_file():
            yield top
        elif top.is_dir():
            yield from sorted(top.rglob("*.md"))


def prose(path: Path) -> Iterator[tuple[int, str]]:
    """(line, text) of every docstring and comment of a Python file; of every line of a Markdown file."""
    source = path.read_text(encoding="utf-8")
    if path.suffix == ".md":
        yield from enumerate(source.splitlines(), 1)
        return
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            for offset, line in enumerate(node.value.value.splitlines()):
                yield node.lineno + offset, line
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            yield token.start[0], token.string


# --- what the names resolve to --------------------------------------------------------------------------------
def _module_file(root: Path, parts: list[str]) -> Path | None:
    base = root.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _assigned(node: ast.Assign | ast.AnnAssign | ast.AugAssign) -> Iterator[str]:
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    for target in targets:
        for leaf in ast.walk(target):
            if isinstance(leaf, ast.Name):
                yield leaf.id


def _blocks(node: ast.If | ast.Try | ast.With) -> list[list[ast.stmt]]:
    blocks = [node.body, getattr(node, "orelse", []), getattr(node, "finalbody", [])]
    return blocks + [handler.body for handler in getattr(node, "handlers", [])]


def _defined(body: list[ast.stmt]) -> dict[str, ast.AST]:
    """The names a module or class body defines, including inside ``if``/``try``/``with`` blocks."""
    names: dict[str, ast.AST] = {}
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names[node.name] = node
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            names.update(dict.fromkeys(_assigned(node), node))
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update({(alias.asname or alias.name).split(".")[0]: node for alias in node.names})
        elif isinstance(node, ast.If | ast.Try | ast.With):
            for block in _blocks(node):
                names.update(_defined(block))
    return names


def _class_members(node: ast.ClassDef) -> dict[str, ast.AST]:
    """A class's own names, and the instance attributes its methods assign (``self.x = …``)."""
    members: dict[str, ast.AST] = {}
    for inner in ast.walk(node):
        if isinstance(inner, ast.Attribute) and isinstance(inner.ctx, ast.Store):
            if isinstance(inner.value, ast.Name) and inner.value.id == "self":
                members[inner.attr] = inner
    members.update(_defined(node.body))
    return members


def dangling_name(root: Path, dotted: str) -> str | None:
    """Why ``dotted`` does not resolve under ``root`` (None: it does)."""
    parts = dotted.split(".")
    if parts[-1] in FILE_SUFFIXES:
        return None
    for cut in range(len(parts), 0, -1):
        module = _module_file(root, parts[:cut])
        if module is not None:
            break
    else:
        return "no such module"
    if cut == 1 and len(parts) > 1 and module.name == "__init__.py" and not (root / parts[0]).is_dir():
        return "no such module"
    scope: dict[str, ast.AST] = _defined(ast.parse(module.read_text(encoding="utf-8")).body)
    for depth, attribute in enumerate(parts[cut:]):
        if attribute not in scope:
            where = ".".join(parts[: cut + depth])
            return f"{where} has no {attribute!r}" if cut < len(parts) else "no such module"
        found = scope[attribute]
        if not isinstance(found, ast.ClassDef):
            return None  # an attribute of a function's result or a constant: as far as a static reading goes
        scope = _class_members(found)
    return None


def github_anchors(page: Path) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown page: lower case, punctuation dropped, spaces → ``-``."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    in_fence = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_fence = not in_fence
        match = re.match(r"#{1,6} (.+?)\s*#*$", line)
        if in_fence or not match:
            continue
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", match.group(1))  # a link's text only
        slug = re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def dangling_path(root: Path, path: str, anchor: str | None) -> str | None:
    """Why ``path`` (with its ``#anchor``) does not resolve under ``root`` (None: it does)."""
    target = root / path
    if not target.exists():
        return "no such file"
    if anchor and target.suffix == ".md" and anchor[1:] not in github_anchors(target):
        return f"{path} has no heading {anchor}"
    return None


def dangling(root: Path) -> list[str]:
    """``file:line: mention: why`` for every name or path mentioned under ``root`` that leads nowhere."""
    found = []
    for path in [*_python_files(root), *_markdown_files(root)]:
        where = path.relative_to(root)
        for number, text in prose(path):
            for match in DOTTED.finditer(text):
                why = dangling_name(root, match.group(1))
                if why:
                    found.append(f"{where}:{number}: {match.group(1)}: {why}")
            other = OTHER_REPOSITORY.search(text)
            for match in PATH.finditer(text):
                if other and other.start() < match.start():
                    continue
                why = dangling_path(root, match.group(1), match.group(2))
                if why:
                    found.append(f"{where}:{number}: {match.group(0)}: {why}")
            if path.suffix == ".md":
                for match in MARKDOWN_ANCHOR.finditer(text):
                    if match.group(1) not in github_anchors(path):
                        found.append(f"{where}:{number}: #{match.group(1)}: no such heading")
    return found


# --- the tests ---------------------------------------------------------------------------------------------------
def test_every_name_and_docs_path_mentioned_exists():
    """Every dotted name and repository path in the code's docstrings and comments and in the documents resolves."""
    assert dangling(ROOT) == []


def test_a_planted_dangling_name_or_path_is_found(tmp_path):
    """A missing module, a missing attribute, a missing page and a missing anchor are each reported."""
    (tmp_path / "services" / "remd").mkdir(parents=True)
    (tmp_path / "services" / "__init__.py").write_text("", encoding="utf-8")
    (tmp_path / "services" / "remd" / "__init__.py").write_text("", encoding="utf-8")
    (tmp_path / "services" / "remd" / "names.py").write_text(
        '"""Names; see ``services.remd.names.NS_WSA`` and ``docs/protocol.md#namespaces``."""\n'
        'NS_WSA = "urn:wsa"  # [C] docs/protocol.md#namespaces\n'
        "class Kind:\n"
        "    CODE = 1\n",
        encoding="utf-8",
    )
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "protocol.md").write_text(
        "# Protocol\n\n## Namespaces\n\n| `asaf1n/egisz-monitor-corp` | `docs/error-catalog.md` |\n"
        "| the same repository | `docs/schema.md` |\n",
        encoding="utf-8",
    )
    assert dangling(tmp_path) == []

    (tmp_path / "services" / "remd" / "soap.py").write_text(
        '"""Uses ``services.remd.envelope`` and ``services.remd.names.NS_WSSE``."""\n'
        "# names: services.remd.names.Kind.CODE, services.remd.names.Kind.VALUE\n"
        "# evidence: docs/protocol.md#header, docs/gost.md#byte-order\n",
        encoding="utf-8",
    )
    found = dangling(tmp_path)
    assert [line.split(": ", 1)[1] for line in found] == [
        "services.remd.envelope: services.remd has no 'envelope'",
        "services.remd.names.NS_WSSE: services.remd.names has no 'NS_WSSE'",
        "services.remd.names.Kind.VALUE: services.remd.names.Kind has no 'VALUE'",
        "docs/protocol.md#header: docs/protocol.md has no heading #header",
        "docs/gost.md#byte-order: no such file",
    ]


def test_anchors_are_spelt_as_github_spells_them(tmp_path):
    """Headings become lower case, lose their punctuation, keep Cyrillic, and repeat with a ``-1`` suffix."""
    page = tmp_path / "page.md"
    page.write_text(
        "# РЭМД through ИПС\n## N3.Health\n## The `registerDocument` body\n## Faults\n## Faults\n"
        "```\n# not a heading\n```\n",
        encoding="utf-8",
    )
    assert github_anchors(page) == {
        "рэмд-through-ипс",
        "n3health",
        "the-registerdocument-body",
        "faults",
        "faults-1",
    }

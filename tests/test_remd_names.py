"""Every РЭМД name in ``services/remd/names.py`` (and the N3 names module) carries an evidence tag and a source."""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

import pytest

from services.remd import n3_names, names

ROOT = Path(__file__).resolve().parent.parent
TAG = re.compile(r"\[(C|P|A|G)\]")
MODULES = [
    (ROOT / "services" / "remd" / "names.py", names.SOURCES),
    (ROOT / "services" / "remd" / "n3_names.py", n3_names.SOURCES),
]


def _annotated(path: Path) -> list[tuple[str, str]]:
    """(constant name, the comment that documents it: its own line's, else the ``#:`` lines above it)."""
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    comments = {
        tok.start[0]: tok.string
        for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if tok.type == tokenize.COMMENT
    }
    out = []
    for node in ast.parse(source).body:
        if (
            not isinstance(node, ast.Assign)
            or len(node.targets) != 1
            or not isinstance(node.targets[0], ast.Name)
        ):
            continue
        name = node.targets[0].id
        if not name.isupper() or name.startswith("_") or name == "SOURCES":
            continue
        # its own line's comment, or one inside the assignment when the formatter wrapped it in parentheses
        comment = next(
            (comments[n] for n in range(node.lineno, (node.end_lineno or node.lineno) + 1) if n in comments),
            "",
        )
        above = node.lineno - 1
        while not comment and above >= 1 and lines[above - 1].lstrip().startswith("#:"):
            comment = comments.get(above, "")
            above -= 1
        out.append((name, comment))
    return out


@pytest.mark.parametrize("path,sources", MODULES, ids=lambda p: getattr(p, "name", ""))
def test_every_name_has_a_tag_and_a_source(path, sources):
    """Each constant names its evidence ([C]/[P]/[A]/[G]) and a source key of its module's ``SOURCES``."""
    checked = _annotated(path)
    assert len(checked) > 40
    for name, comment in checked:
        assert TAG.search(comment), f"{name}: no [C]/[P]/[A]/[G] tag"
        assert any(re.search(rf"(?<![\w-]){re.escape(key)}(?![\w-])", comment) for key in sources), (
            f"{name}: no source (one of {', '.join(sources)})"
        )


def test_sources_name_no_machine_path():
    """Sources are repository paths, document names and web pages, never a path of this machine: nothing starts at
    the root or a home folder, and no word is a rooted path three folders deep (a web page's path follows its host)."""
    for key, where in {**names.SOURCES, **n3_names.SOURCES}.items():
        assert not where.startswith(("/", "~")) and not re.search(r"(^|\s)/[^\s/]+/[^\s/]+/", where), key

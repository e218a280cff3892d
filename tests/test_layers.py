"""The dependency rule of docs/architecture.md, checked over the import graph of the code.

Layers, lowest first. A module may import its own unit and any unit of a lower layer, never a unit of the
same layer or a higher one. Every import counts, including those inside functions (a lazy import is
still a dependency). The development tooling (``services.dev``, ``services.emulator``) sits above
everything that runs in production, so nothing but the tooling itself and the commands can import it.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: (layer, its units); a unit is a package or module prefix
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("base", ("services.errors", "services.config", "services.logs", "services.metrics", "services.events",
              "services.ids", "services.reasons")),
    ("infrastructure", ("services.messaging", "services.documents", "services.lifecycle")),
    ("crypto", ("services.crypto",)),
    ("protocol", ("services.remd",)),
    ("pipeline", ("services.pipeline", "producer")),
    ("desk", ("services.desk",)),
    ("console", ("services.console",)),
    ("workers", ("workers",)),
    ("dev tooling", ("services.dev",)),
    ("emulator", ("services.emulator",)),
    ("commands", ("services.commands", "services.cli")),
)
#: the base modules are one unit: they may import each other (config → errors, logs → config)
_BASE = LAYERS[0][1]


def _unit_of(module: str) -> tuple[int, str] | None:
    for rank, (_, units) in enumerate(LAYERS):
        for unit in units:
            if module == unit or module.startswith(unit + "."):
                return rank, ("base" if unit in _BASE else unit)
    return None


def _is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def imports_of(source: str, module: str, *, is_package: bool = False) -> set[str]:
    """Every project module ``source`` imports (absolute and relative, at any depth of the code)."""
    found: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from services import events` imports the module services.events; `from services.events
            # import encode` imports services.events itself
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if _is_module(sub) else target)
    return {m for m in found if _unit_of(m) is not None}


def violations(module: str, source: str, *, is_package: bool = False) -> list[str]:
    """The imports of ``module`` that break the rule, as readable sentences."""
    own = _unit_of(module)
    if own is None:
        return []
    out = []
    for target in sorted(imports_of(source, module, is_package=is_package)):
        theirs = _unit_of(target)
        assert theirs is not None
        if theirs[1] == own[1]:
            continue
        if theirs[0] >= own[0]:
            out.append(f"{module} ({LAYERS[own[0]][0]}) imports {target} ({LAYERS[theirs[0]][0]})")
    return out


def project_modules() -> list[tuple[str, Path]]:
    paths = [*ROOT.glob("services/**/*.py"), *ROOT.glob("workers/**/*.py"), *ROOT.glob("producer/**/*.py")]
    out = []
    for path in sorted(paths):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out.append((".".join(parts[:-1] if parts[-1] == "__init__" else parts), path))
    return out


def test_every_module_belongs_to_a_layer():
    """Each module of the code base is placed in exactly one layer of the rule."""
    unplaced = [m for m, _ in project_modules() if m not in ("services", "workers", "producer")
                and _unit_of(m) is None]
    assert unplaced == []


def test_no_module_imports_a_higher_layer_or_a_peer():
    """No module imports a unit of its own layer or of a higher one."""
    found = []
    for module, path in project_modules():
        found += violations(module, path.read_text(encoding="utf-8"), is_package=path.name == "__init__.py")
    assert found == []


def test_the_check_catches_a_lower_layer_importing_a_higher_one():
    """A crypto module importing the pipeline, even lazily inside a function, is reported."""
    source = "def f():\n    from services.pipeline import submission\n"
    assert violations("services.crypto.fake", source) == [
        "services.crypto.fake (crypto) imports services.pipeline.submission (pipeline)"]


def test_the_check_catches_production_code_importing_the_dev_tooling():
    """The pipeline importing the development PKI is reported."""
    assert violations("services.pipeline.fake", "from services.dev import pki\n") == [
        "services.pipeline.fake (pipeline) imports services.dev.pki (dev tooling)"]


def test_the_check_catches_peers_importing_each_other():
    """Two units of one layer (the Kafka plumbing and the documents) stay independent."""
    assert violations("services.messaging.fake", "from services.documents.store import DocumentStore\n") == [
        "services.messaging.fake (infrastructure) imports services.documents.store (infrastructure)"]


def test_the_check_allows_imports_within_a_unit_and_downwards():
    """A module may import its own package, relative or absolute, and anything below it."""
    source = "from . import envelope\nfrom services.remd import names\nfrom services.crypto import gost\n"
    assert violations("services.remd.fake", source) == []


def test_services_top_level_stays_small():
    """``services/`` keeps at most 10 modules at its top, at least 5 subpackages, and no module over 600 lines."""
    top = [p for p in (ROOT / "services").glob("*.py") if p.name != "__init__.py"]
    packages = [p for p in (ROOT / "services").iterdir() if (p / "__init__.py").exists()]
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / "services").rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 600}
    assert len(top) <= 10 and len(packages) >= 5 and long == {}

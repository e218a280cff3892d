"""The dependency rule of docs/architecture.md, checked over the import graph of the code.

Three import roots: ``producer`` (the МИС library and the event contract), the deployable pipeline
(``services``, ``workers``), and ``lab`` (the development tooling). Inside them, layers, lowest first. A module
may import its own unit and any unit of a lower layer, never a unit of the same layer or a higher one. Every
import counts: those inside functions (a lazy import is still a dependency) and the modules that
``importlib.import_module`` loads by name. Inside a unit, the imports form no cycle. The lab sits above
everything that is deployed, so nothing deployed can import it.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

#: (layer, its units); a unit is a package or module prefix
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("contract", ("producer",)),
    (
        "base",
        (
            "services.config",
            "services.logs",
            "services.metrics",
            "services.reasons",
            "services.processes",
            "services.outcome",
            "services.telemetry",
            "services.timestamps",
        ),
    ),
    ("infrastructure", ("services.messaging", "services.documents", "services.lifecycle")),
    ("crypto", ("services.crypto",)),
    ("protocol", ("services.remd",)),
    ("pipeline", ("services.pipeline",)),
    ("support", ("services.desk",)),
    ("surfaces", ("services.console", "workers")),
    ("commands", ("services.commands", "services.cli")),
    ("lab", ("lab",)),
)
#: the base modules are one unit: they may import each other (config → errors, logs → config); so are ``emd``
#: and its commands
_BASE = LAYERS[1][1]
_SAME_UNIT = {"services.cli": "services.commands"}
#: the import roots that are deployed (the image holds them and nothing else of the repository)
DEPLOYED = ("producer", "services", "workers")


def _unit_of(module: str) -> tuple[int, str] | None:
    for rank, (_, units) in enumerate(LAYERS):
        for unit in units:
            if module == unit or module.startswith(unit + "."):
                return rank, ("base" if unit in _BASE else _SAME_UNIT.get(unit, unit))
    return None


def _is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def imports_of(source: str, module: str, *, is_package: bool = False, exists: Any = _is_module) -> set[str]:
    """Every project module ``source`` imports: absolute and relative, at any depth of the code, and every
    module named by a string where the code loads modules by name (``importlib.import_module``)."""
    found: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]
    tree = ast.parse(source)
    by_name = "import_module" in source or "__import__" in source
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from producer import events` imports the module producer.events; `from producer.events
            # import encode` imports producer.events itself
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if exists(sub) else target)
        elif by_name and isinstance(node, ast.Constant) and isinstance(node.value, str):
            name = node.value.split(":")[0]
            if _unit_of(name) is not None and exists(name):
                found.add(name)
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


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles of ``graph`` (module → modules it imports), each as a sorted list of its modules."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def unit_cycles(sources: dict[str, tuple[str, bool]]) -> list[list[str]]:
    """Cycles among the modules of one unit (``{module: (source, is_package)}``); a package's ``__init__``
    importing its own modules is how a package exposes them, not a cycle."""
    graph: dict[str, set[str]] = {}
    for module, (source, is_package) in sources.items():
        own = _unit_of(module)
        found = imports_of(
            source, module, is_package=is_package, exists=lambda n: n in sources or _is_module(n)
        )
        graph[module] = {
            t
            for t in found
            if t != module
            and t in sources
            and _unit_of(t) == own
            and not (is_package and t.startswith(module + "."))
            and not sources[t][1]
        }
    return cycles(graph)


def project_modules() -> list[tuple[str, Path]]:
    paths = [p for root in ("services", "workers", "producer", "lab") for p in ROOT.glob(f"{root}/**/*.py")]
    out = []
    for path in sorted(paths):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out.append((".".join(parts[:-1] if parts[-1] == "__init__" else parts), path))
    return out


def _sources() -> dict[str, tuple[str, bool]]:
    return {m: (p.read_text(encoding="utf-8"), p.name == "__init__.py") for m, p in project_modules()}


def test_every_module_belongs_to_a_layer():
    """Each module of the code base is placed in exactly one layer of the rule."""
    unplaced = [m for m, _ in project_modules() if m not in ("services", "workers") and _unit_of(m) is None]
    assert unplaced == []


def test_no_module_imports_a_higher_layer_or_a_peer():
    """No module imports a unit of its own layer or of a higher one."""
    found = []
    for module, path in project_modules():
        found += violations(module, path.read_text(encoding="utf-8"), is_package=path.name == "__init__.py")
    assert found == []


def test_no_unit_has_an_import_cycle():
    """Inside every unit, no module imports (even lazily) a module that imports it back."""
    assert unit_cycles(_sources()) == []


def test_the_contract_imports_nothing_of_the_pipeline():
    """``producer`` (the МИС library) is the lowest layer: it imports nothing of ``services``, ``workers`` or ``lab``."""
    found = [
        (m, t)
        for m, (source, pkg) in _sources().items()
        if m.startswith("producer")
        for t in imports_of(source, m, is_package=pkg)
        if not t.startswith("producer")
    ]
    assert found == []


def test_the_check_catches_a_lower_layer_importing_a_higher_one():
    """A crypto module importing the pipeline, even lazily inside a function, is reported."""
    source = "def f():\n    from services.pipeline import submission\n"
    assert violations("services.crypto.fake", source) == [
        "services.crypto.fake (crypto) imports services.pipeline.submission (pipeline)"
    ]


def test_the_check_catches_the_deployable_importing_the_lab():
    """The pipeline importing the development PKI is reported."""
    assert violations("services.pipeline.fake", "from lab.dev import pki\n") == [
        "services.pipeline.fake (pipeline) imports lab.dev.pki (lab)"
    ]


def test_the_check_catches_an_importlib_edge_that_breaks_the_rule():
    """A deployed module loading the emulator by name through importlib is reported like an import."""
    source = "import importlib\n\ndef f():\n    return importlib.import_module('lab.emulator.server')\n"
    assert violations("services.commands.fake", source) == [
        "services.commands.fake (commands) imports lab.emulator.server (lab)"
    ]


def test_the_check_catches_a_cycle_inside_a_unit():
    """Two modules of one unit importing each other (one of them lazily) are a cycle."""
    sources = {
        "services.crypto.fake_a": ("from services.crypto import fake_b\n", False),
        "services.crypto.fake_b": ("def f():\n    from services.crypto import fake_a\n", False),
    }
    assert unit_cycles(sources) == [["services.crypto.fake_a", "services.crypto.fake_b"]]


def test_the_check_catches_peers_importing_each_other():
    """Two units of one layer (the Kafka plumbing and the documents) stay independent."""
    assert violations("services.messaging.fake", "from services.documents.store import DocumentStore\n") == [
        "services.messaging.fake (infrastructure) imports services.documents.store (infrastructure)"
    ]


def test_the_check_allows_imports_within_a_unit_and_downwards():
    """A module may import its own package, relative or absolute, and anything below it."""
    source = "from . import envelope\nfrom services.remd import names\nfrom services.crypto import gost\n"
    assert violations("services.remd.fake", source) == []


def test_services_top_level_stays_small():
    """``services/`` keeps at most 10 modules at its top and at least 5 subpackages."""
    top = [p for p in (ROOT / "services").glob("*.py") if p.name != "__init__.py"]
    packages = [p for p in (ROOT / "services").iterdir() if (p / "__init__.py").exists()]
    assert len(top) <= 10 and len(packages) >= 5


#: what the N3 transport believes N3's contract is: the emulator must not share it (docs/transports.md)
N3_READING = {
    "services.remd.n3",
    "services.remd.n3_names",
    "services.remd.n3_kinds",
    "services.remd._transports.n3",
}


def n3_reading_in(module: str, source: str) -> set[str]:
    """The modules of our N3 reading (builder, names, dictionary rules, transport) that ``source`` imports."""
    return imports_of(source, module) & N3_READING


def test_the_emulators_n3_face_reads_requests_through_the_schema_not_our_builder():
    """No module of the emulator imports the N3 transport's builder, names, dictionary rules or transport, even
    lazily: its N3 face reads requests through the project's schema, so it tests our guesses instead of sharing
    them."""
    found = {
        m: n3_reading_in(m, path.read_text(encoding="utf-8"))
        for m, path in project_modules()
        if m.startswith("lab.emulator")
    }
    assert "lab.emulator.n3" in found
    assert {m: s for m, s in found.items() if s} == {}


def test_the_n3_rule_catches_the_names_module_imported_lazily():
    """A lazy import of the N3 names module inside a function is caught."""
    source = "def f():\n    from services.remd import n3_names\n    return n3_names.GUID\n"
    assert n3_reading_in("lab.emulator.fake", source) == {"services.remd.n3_names"}

"""The suite's own rules (tests/conftest.py): markers that match what a test does, and the slow tests first."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

CONFTEST = Path(__file__).with_name("conftest.py")


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    """A throwaway test folder with this suite's conftest, run in this process."""
    pytester.makeconftest(CONFTEST.read_text())
    return pytester


def test_a_test_asking_for_the_broker_without_the_integration_marker_errors_before_the_broker_starts(suite):
    """Asking for the ``broker`` fixture without ``integration`` is an error of that test, named, and no broker
    starts (an unmarked test cannot start one: the fixture would fail first)."""
    suite.makepyfile(test_x="def test_uses_the_broker(broker):\n    pass\n\ndef test_other():\n    pass\n")
    result = suite.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*test_uses_the_broker uses broker but is not marked integration*"])
    result.stdout.no_fnmatch_line("*starts a local broker*")


def test_a_slow_test_not_marked_integration_is_an_error(suite):
    """``slow`` without ``integration`` is an error of that test, so ``-m "not integration"`` never runs a slow
    test unnoticed."""
    suite.makepyfile(test_x="import pytest\n\n@pytest.mark.slow\ndef test_long():\n    pass\n")
    result = suite.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*test_long is marked slow but not integration*"])


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("from lab.broker import LocalBroker\n    LocalBroker().start()", "starts a local broker"),
        (
            "from tests.postgres_server import PostgresServer\n"
            "    with PostgresServer().database():\n        pass",
            "starts a PostgreSQL database",
        ),
        (
            "import subprocess, sys\n"
            "    subprocess.run([sys.executable, '-m', 'services.cli', 'worker', 'signer'])",
            "starts an emd process",
        ),
    ],
    ids=["broker", "postgresql", "emd-process"],
)
def test_a_unit_test_that_starts_a_server_or_an_emd_process_fails_naming_it(suite, body, says):
    """A test without ``integration`` that starts a broker, a PostgreSQL database or an ``emd`` process fails at
    that call, saying what it started and which marker it lacks."""
    suite.makepyfile(test_x=f"def test_sneaky():\n    {body}\n")
    result = suite.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"*test_sneaky {says}*but is not marked integration*"])


def test_parallel_workers_are_handed_the_slow_tests_first(suite, monkeypatch):
    """In a pytest-xdist worker the slow tests come first, the others after them in their own order."""
    suite.makepyfile(
        test_a="def test_a1():\n    pass\n\ndef test_a2():\n    pass\n",
        test_b=(
            "import pytest\n\n@pytest.mark.integration\n@pytest.mark.slow\ndef test_b_long():\n    pass\n\n"
            "def test_b_quick():\n    pass\n"
        ),
    )
    order = ["test_b.py::test_b_long", "test_a.py::test_a1", "test_a.py::test_a2", "test_b.py::test_b_quick"]
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw0")
    result = suite.runpytest("-p", "no:cacheprovider", "--collect-only", "-q")
    assert [line for line in result.outlines if "::" in line] == order
    monkeypatch.delenv("PYTEST_XDIST_WORKER")
    result = suite.runpytest("-p", "no:cacheprovider", "--collect-only", "-q")
    assert [line for line in result.outlines if "::" in line] == sorted(order)


# --- timeouts: an inner wait fires before the per-test timeout, and says what it waited for -----------------------
ROOT = CONFTEST.parents[1]
WAIT_METHODS = {"join", "wait", "communicate", "result", "wait_for"}
#: `make reliability`'s command line, which no test runs
NOT_TEST_MODULES = {"tests/reliability/__main__.py"}
#: numbers named like a wait that are not one: whose call or class they belong to
NOT_WAITS = {
    "DeadlineScanner()": "the acknowledgment deadline under test, in the scanner's simulated time",
    "class Plan": "`make reliability`'s default wait; test_reliability_e2e passes its own",
}


def _per_test_timeout() -> float:
    options = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    return float(options["timeout"])


def _number(node: ast.AST) -> float | None:
    """The seconds a literal says: ``600``, ``2.5``, ``"240"`` (on a command line), ``3 * 60``; else None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return float(node.value) if node.value.replace(".", "", 1).isdigit() else None
    if (
        isinstance(node, ast.Constant)
        and isinstance(node.value, (int, float))
        and not isinstance(node.value, bool)
    ):
        return float(node.value)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
        left, right = _number(node.left), _number(node.right)
        return left * right if left is not None and right is not None else None
    return None


def _names_a_wait(name: str) -> bool:
    return "timeout" in name or name in {"wait", "grace", "deadline"}


class _Waits(ast.NodeVisitor):
    """(what, line, seconds, owner) of every literal wait in a module: ``timeout=``/``wait=``/``grace=`` arguments,
    defaults and fields, ``join(N)``-style calls, ``"--timeout", "N"`` on a command line, ``monotonic() + N``;
    ``owner`` says whose: ``name()`` a call, ``def name`` a default, ``class Name`` a field."""

    def __init__(self) -> None:
        self.found: list[tuple[str, int, float, str]] = []
        self._class = ""

    def _add(self, what: str, node: ast.AST, owner: str) -> None:
        if (seconds := _number(node)) is not None:
            self.found.append((what, node.lineno, seconds, owner))

    def visit_Call(self, node: ast.Call) -> None:
        callee = getattr(node.func, "attr", None) or getattr(node.func, "id", "")
        for kw in node.keywords:
            if kw.arg and _names_a_wait(kw.arg):
                self._add(kw.arg, kw.value, f"{callee}()")
        if callee in WAIT_METHODS and node.args:
            self._add(f"{callee}()", node.args[0], f"{callee}()")
        self.generic_visit(node)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        args = node.args
        positional = args.posonlyargs + args.args
        pairs = list(zip(positional[len(positional) - len(args.defaults) :], args.defaults, strict=True))
        pairs += [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d is not None]
        for arg, default in pairs:
            if _names_a_wait(arg.arg):
                self._add(arg.arg, default, f"def {node.name}")
        self.generic_visit(node)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        outer, self._class = self._class, node.name
        self.generic_visit(node)
        self._class = outer

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if isinstance(node.target, ast.Name) and node.value is not None and _names_a_wait(node.target.id):
            self._add(node.target.id, node.value, f"class {self._class}")

    def visit_List(self, node: ast.List | ast.Tuple) -> None:
        for flag, value in zip(node.elts, node.elts[1:], strict=False):
            if isinstance(flag, ast.Constant) and flag.value == "--timeout":
                self._add("--timeout", value, "command line")
        self.generic_visit(node)

    visit_Tuple = visit_List

    def visit_BinOp(self, node: ast.BinOp) -> None:
        call = node.left
        if (
            isinstance(node.op, ast.Add)
            and isinstance(call, ast.Call)
            and getattr(call.func, "attr", "") == "monotonic"
        ):
            self._add("monotonic() + N", node.right, "deadline")
        self.generic_visit(node)


def _inner_waits(path: Path) -> list[tuple[str, int, float, str]]:
    waits = _Waits()
    waits.visit(ast.parse(path.read_text()))
    return waits.found


def test_every_inner_wait_of_the_tests_is_shorter_than_the_per_test_timeout():
    """Each literal wait in tests/ (a pipeline's, a subprocess's, a command's --timeout) is below the per-test
    timeout, so a stuck test fails with its own message (what it waited for) rather than pytest-timeout's."""
    limit = _per_test_timeout()
    waits = [
        (str(path.relative_to(ROOT)), line, what, seconds, owner)
        for path in sorted((ROOT / "tests").rglob("*.py"))
        if str(path.relative_to(ROOT)) not in NOT_TEST_MODULES
        for what, line, seconds, owner in _inner_waits(path)
    ]
    assert len(waits) > 100  # the scan finds the waits it is meant to find
    too_long = [w for w in waits if w[3] >= limit and w[4] not in NOT_WAITS]
    assert too_long == [], f"inner waits not below the per-test timeout of {limit:.0f} s: {too_long}"

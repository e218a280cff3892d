"""The suite's own rules (tests/conftest.py): markers that match what a test does, and the slow tests first."""

from __future__ import annotations

from pathlib import Path

import pytest

CONFTEST = Path(__file__).with_name("conftest.py")


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    """A throwaway test folder with this suite's conftest, run in this process."""
    pytester.makeconftest(CONFTEST.read_text())
    return pytester


def test_a_test_asking_for_the_broker_without_the_integration_marker_is_refused(suite):
    """Asking for the ``broker`` fixture without ``integration`` stops the run before any test, naming the test."""
    suite.makepyfile(test_x="def test_uses_the_broker(broker):\n    pass\n")
    result = suite.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*test_uses_the_broker: uses broker but is not marked integration*"])


def test_a_slow_test_not_marked_integration_is_refused(suite):
    """``slow`` without ``integration`` is refused, so ``-m "not integration"`` never runs a slow test."""
    suite.makepyfile(test_x="import pytest\n\n@pytest.mark.slow\ndef test_long():\n    pass\n")
    result = suite.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*test_long: marked slow but not integration*"])


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

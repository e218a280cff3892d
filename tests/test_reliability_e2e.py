"""The bounded whole-system run inside `make test` (the full one is `make reliability`): every component a
separate process, each of the five killed once at a random moment, PostgreSQL down mid-run, РЭМД faults and
callback chaos, the whole bad-input corpus — and then nothing lost, duplicated, unexplained or leaked."""

from __future__ import annotations

import pytest

from tests.reliability.harness import Plan, Run

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_short_whole_system_run_accounts_for_every_document(tmp_path):
    """40 documents with 5 kills, a 10 s lifecycle-store outage and every bad input end acknowledged, refused or
    dead-lettered as expected, once each, and no log shows patient data, keys or passwords."""
    lines: list[str] = []
    result = Run(
        Plan(
            workdir=tmp_path / "run",
            documents=40,
            kills=5,
            pg_outage_seconds=10.0,
            window=60.0,
            timeout=300.0,  # after start-up (health waits of 120 s at most) and the 60 s window
        ),
        say=lines.append,
    ).execute()
    report = result.table() + "\n" + "\n".join(result.problems) + "\n" + "\n".join(lines[-20:])
    assert result.last_line == "documents=40 kills=5 lost=0 duplicated=0 unexplained=0 leaked_log_lines=0", (
        report
    )

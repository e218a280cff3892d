"""``emd status LOCALUID``: one document's state and attempts from the lifecycle store, for people or as JSON."""

from __future__ import annotations

import json

import pytest

from services import lifecycle as lc
from services.cli import main as emd
from services.outcome import Outcome

ORG = "1.2.643.5.1.13.13.12.2.77.1"


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("EMD_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("EMD_LIFECYCLE_STORE", raising=False)
    store = lc.open_store(tmp_path)
    try:
        store.register("doc-1", organization=ORG, kind="119", document_ref="file:///x")
        store.record_attempt("doc-1", "m1", organization=ORG, endpoint="https://ips")
        store.record_outcome(
            "m1", outcome=Outcome.TRANSIENT, decided_by=lc.DECIDED_BY_ANSWER, code="HTTP_503", message="down"
        )
    finally:
        store.close()
    return tmp_path


def test_status_prints_the_state_and_every_attempt(data_dir, capsys):
    """The document's state, organisation and kind, then each attempt's MessageID and outcome with its code."""
    assert emd(["status", "doc-1"]) == 0
    out = capsys.readouterr().out
    assert f"doc-1  state=sending  organisation={ORG}  kind=119" in out
    assert "#1  m1  sent " in out and "→ transient  HTTP_503  down" in out


def test_status_json_has_times_to_the_second_in_utc(data_dir, capsys):
    """--json gives the same facts, each time for people: to the second, with Z."""
    assert emd(["status", "doc-1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    [attempt] = report["attempts"]
    assert (report["state"], attempt["messageId"], attempt["outcome"]) == ("sending", "m1", "transient")
    assert attempt["sentAt"].endswith("Z") and len(attempt["sentAt"]) == len("2026-11-22T10:00:00Z")


def test_status_of_an_unknown_document_exits_1_naming_it(data_dir, capsys):
    """A localUid the lifecycle store does not know is exit 1 with a message that names it."""
    assert emd(["status", "nope"]) == 1
    assert "no document 'nope' in the lifecycle store" in capsys.readouterr().err

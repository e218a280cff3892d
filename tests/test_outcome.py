"""``services.outcome.Outcome``: one vocabulary for an attempt's outcome, stored as the strings it always was."""

from __future__ import annotations

from services import lifecycle as lc
from services.outcome import ANSWERED, CALLBACK_DECIDED, Outcome


def test_members_are_the_strings_the_store_and_the_metrics_hold():
    """Each member equals, and prints as, the lower-case word the lifecycle store and metric labels carry."""
    assert [str(o) for o in Outcome] == [
        "accepted",
        "transient",
        "permanent",
        "registered",
        "rejected",
        "duplicate",
    ]
    assert all(o == o.value and f"{o}" == o.value for o in Outcome)


def test_an_answer_and_a_callback_share_only_transient():
    """A synchronous answer says accepted, transient or permanent; a callback decides the rest, and transient."""
    assert set(ANSWERED) & set(CALLBACK_DECIDED) == {Outcome.TRANSIENT}
    assert set(ANSWERED) | set(CALLBACK_DECIDED) == set(Outcome)


def test_an_outcome_stored_on_an_attempt_reads_back_equal(tmp_path):
    """An Outcome recorded in the SQLite lifecycle store comes back as the same word, equal to the member."""
    store = lc.open_store(tmp_path)
    try:
        store.register(
            "doc-1", organization="1.2.643.5.1.13.13.12.2.77.1", kind="119", document_ref="file:///x"
        )
        store.record_attempt(
            "doc-1", "m1", organization="1.2.643.5.1.13.13.12.2.77.1", endpoint="https://ips"
        )
        store.record_outcome("m1", outcome=Outcome.REJECTED, decided_by=lc.DECIDED_BY_CALLBACK)
        (attempt,) = store.history("doc-1", organization="1.2.643.5.1.13.13.12.2.77.1")
    finally:
        store.close()
    assert (
        attempt.outcome == Outcome.REJECTED and type(attempt.outcome) is str and attempt.outcome == "rejected"
    )

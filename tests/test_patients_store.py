"""The patient store (N3's AddPatient once per patient and clinic), on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from services.lifecycle.patients import open_patient_store

ORG, OTHER = "1.2.643.5.1.13.13.12.2.77.9000", "1.2.643.5.1.13.13.12.2.77.9001"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def store(request, tmp_path):
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else ""
    s = open_patient_store(tmp_path, url=url)
    yield s
    s.close()


def test_a_patient_is_known_only_as_described_for_its_organisation(store):
    """After remember, the patient is known with that description, for that organisation and route only."""
    assert not store.known("n3", ORG, "p-1", "f1")
    store.remember("n3", ORG, "p-1", "f1")
    assert store.known("n3", ORG, "p-1", "f1")
    assert not store.known("n3", ORG, "p-1", "f2")  # described otherwise now
    assert not store.known("n3", OTHER, "p-1", "f1")  # another clinic's patient
    assert not store.known("other-route", ORG, "p-1", "f1")


def test_a_new_description_replaces_the_old_and_forget_removes_it(store):
    """remember replaces the description; forget makes the next document add the patient again."""
    store.remember("n3", ORG, "p-1", "f1")
    store.remember("n3", ORG, "p-1", "f2")
    assert store.known("n3", ORG, "p-1", "f2") and not store.known("n3", ORG, "p-1", "f1")
    store.forget("n3", ORG, "p-1")
    assert not store.known("n3", ORG, "p-1", "f2")
    store.forget("n3", ORG, "never-added")  # nothing to forget: no error


def test_the_table_survives_reopening(tmp_path):
    """A second open of the same database (another sender replica) sees what the first remembered."""
    first = open_patient_store(tmp_path)
    first.remember("n3", ORG, "p-1", "f1")
    first.close()
    second = open_patient_store(tmp_path)
    try:
        assert second.known("n3", ORG, "p-1", "f1")
    finally:
        second.close()

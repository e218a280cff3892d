"""A clinic's documents never reach production before it is promoted: test stand or held (routing and the sender)."""

from __future__ import annotations

import asyncio
import json

import pytest

from lab.dev.config import write_dev_config
from producer import events, topology
from producer.errors import PermanentError
from services.documents.store import FilesystemStore
from services.lifecycle import support_tables
from services.pipeline import routing
from services.pipeline.exchanges import ExchangeArchive
from services.pipeline.organizations import load_organizations
from services.reasons import reason_info
from services.remd.transport import SubmitOutcome
from tests.sender_helpers import ORG, FakeTransport, signed_record, submitter

PRODUCTION_ENDPOINT, TEST_STAND = "https://ips.egisz.example/emdr", "https://ips-test.egisz.example/emdr"


def _config(tmp_path, *, test_endpoint: str | None = TEST_STAND):
    path = write_dev_config(tmp_path / "cfg", oids=[ORG], endpoint=PRODUCTION_ENDPOINT)
    config = json.loads(path.read_text())
    config["organizations"][0]["remd"]["environment"] = "production"
    if test_endpoint:
        config["organizations"][0]["remd"]["test_endpoint"] = test_endpoint
    path.write_text(json.dumps(config))
    return load_organizations(path)


@pytest.mark.parametrize(
    "state", [support_tables.ONBOARDING, support_tables.TESTING, support_tables.SUSPENDED]
)
def test_an_unpromoted_clinic_sends_to_the_test_stand(tmp_path, store, state):
    """Until promoted, a production-configured clinic's documents go to its test stand, and the sent event says test."""
    t = FakeTransport()
    outs = asyncio.run(
        submitter(_config(tmp_path), store, t, clinic_state=lambda oid: state).handle(signed_record())
    )
    assert [r.endpoint for r in t.requests] == [TEST_STAND]
    submission = events.decode(outs[0].value, expected_type=events.SENT)["data"]["submission"]
    assert submission["endpoint"] == TEST_STAND and submission["environment"] == "test"


def test_a_promoted_clinic_sends_to_production(tmp_path, store):
    """Once promoted, the clinic's documents go to its production endpoint."""
    t = FakeTransport()
    outs = asyncio.run(
        submitter(_config(tmp_path), store, t, clinic_state=lambda oid: support_tables.PRODUCTION).handle(
            signed_record()
        )
    )
    assert [r.endpoint for r in t.requests] == [PRODUCTION_ENDPOINT]
    assert (
        events.decode(outs[0].value, expected_type=events.SENT)["data"]["submission"]["environment"]
        == "production"
    )


@pytest.mark.parametrize("policy,test_endpoint", [(routing.HOLD, TEST_STAND), (routing.TEST_STAND, None)])
def test_an_unpromoted_clinic_is_held_when_configured_so_or_without_a_test_stand(
    tmp_path, store, policy, test_endpoint
):
    """With the hold policy, or no test stand, nothing is sent: CLINIC_NOT_PROMOTED, to replay after promotion."""
    t = FakeTransport()
    sub = submitter(
        _config(tmp_path, test_endpoint=test_endpoint),
        store,
        t,
        clinic_state=lambda oid: support_tables.ONBOARDING,
        unpromoted=policy,
    )
    with pytest.raises(PermanentError) as err:
        asyncio.run(sub.handle(signed_record()))
    assert (
        err.value.reason == "CLINIC_NOT_PROMOTED"
        and "emd clinic promote" in reason_info(err.value.reason).hint
    )
    assert t.requests == []


def test_clinic_states_are_cached_for_a_few_seconds():
    """The sender reads a clinic's state at most once per ttl; after it, a promotion is seen."""
    now = [0.0]
    reads = []
    state = {"v": support_tables.TESTING}

    def read(oid):
        reads.append(oid)
        return support_tables.Clinic(oid=oid, state=state["v"])

    states = routing.ClinicStates(read, ttl=5.0, clock=lambda: now[0])
    assert states(ORG) == support_tables.TESTING
    state["v"] = support_tables.PRODUCTION
    now[0] = 4.9
    assert states(ORG) == support_tables.TESTING and len(reads) == 1
    now[0] = 5.1
    assert states(ORG) == support_tables.PRODUCTION and len(reads) == 2


def test_every_attempt_keeps_its_signed_request_and_answer(tmp_path, store):
    """The sender keeps each attempt's request and answer bytes, found again by the attempt's MessageID."""
    tables = support_tables.open_support_tables(tmp_path)
    archive = ExchangeArchive(documents=FilesystemStore(tmp_path / "docs"), tables=tables)
    rejected = SubmitOutcome(
        kind="permanent",
        reason="REMD_REJECTED",
        remd_code="PERSON_NOT_FOUND",
        http_status=200,
        request=b"<signed-request/>",
        response=b"<answer/>",
    )
    t = FakeTransport(rejected)
    with pytest.raises(PermanentError):
        asyncio.run(submitter(_config(tmp_path), store, t, exchanges=archive).handle(signed_record()))
    mid = t.requests[0].message_id
    kept = archive.read([mid])
    [(found_id, exchange)] = kept.items()
    assert exchange.request == b"<signed-request/>" and exchange.response == b"<answer/>"
    assert exchange.exchange.local_uid == "doc-1" and exchange.exchange.http_status == 200
    tables.close()


def test_an_archive_that_cannot_store_never_fails_the_document(tmp_path, store):
    """A broken claim-check store loses the kept exchange, not the registration."""

    class Broken:
        def put(self, data, **options):
            raise OSError("disk full")

    tables = support_tables.open_support_tables(tmp_path)
    archive = ExchangeArchive(documents=Broken(), tables=tables)
    t = FakeTransport(SubmitOutcome(kind="accepted", reason="ACCEPTED", request=b"<r/>"))
    outs = asyncio.run(submitter(_config(tmp_path), store, t, exchanges=archive).handle(signed_record()))
    assert outs[0].topic == topology.SENT.name and archive.read([t.requests[0].message_id]) == {}
    tables.close()

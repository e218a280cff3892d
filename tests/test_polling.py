"""services.pipeline.polling: the deadline scanner and the registry poll, without Kafka."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from lab.dev.config import write_dev_config
from producer import topology
from services import lifecycle as lc
from services.messaging.records import Record
from services.pipeline.organizations import load_organizations
from services.pipeline.polling import (
    DeadlineScanner,
    PollScanner,
    RegistryPoller,
    callbackless,
    deadline_of,
    poll_of,
)
from services.remd import soap
from services.remd.transports import Transports

ORG = "1.2.643.5.1.13.13.12.2.77.7831"
M1 = "11111111-1111-4111-8111-111111111111"


@pytest.fixture
def store(tmp_path):
    s = lc.open_store(tmp_path)
    s.register("doc-1", organization=ORG, kind="119", signed_event=b"{}")
    s.record_attempt("doc-1", M1, organization=ORG, endpoint="http://ips")
    s.mark_accepted(
        "doc-1", organization=ORG, message_id=M1, accepted_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    )
    yield s
    s.close()


def as_record(out) -> Record:
    return Record(
        topic=out.topic,
        partition=0,
        offset=0,
        key=out.key,
        value=out.value,
        timestamp_ms=0,
        headers={k: v.encode() if isinstance(v, str) else v for k, v in out.headers.items()},
    )


def test_an_overdue_document_gets_one_deadline_record_keyed_by_its_message_id(store):
    """A document accepted longer ago than the timeout gets a deadline record on the callbacks topic, once."""
    scanner = DeadlineScanner(store=store, timeout=3600)
    [out] = asyncio.run(scanner.tick())
    assert (out.topic, out.key) == (topology.CALLBACKS.name, M1)
    assert deadline_of(as_record(out)) == (ORG, "doc-1")
    assert asyncio.run(scanner.tick()) == []  # already asked: not again while it is still overdue


def test_a_document_within_its_timeout_or_decided_gets_none(store):
    """Nothing is written before the timeout, nor for a document decided meanwhile."""
    assert asyncio.run(DeadlineScanner(store=store, timeout=3 * 3600).tick()) == []
    store.mark_registered("doc-1", "16.62.1", organization=ORG)
    assert asyncio.run(DeadlineScanner(store=store, timeout=60).tick()) == []


def test_a_real_callback_is_not_a_deadline():
    """A record without the deadline header is a callback."""
    assert (
        deadline_of(
            Record(topic="t", partition=0, offset=0, key="k", value=b"<x/>", timestamp_ms=0, headers={})
        )
        is None
    )


class FakeTransport:
    name = "ips"

    def __init__(self, item):
        self.item, self.asked = item, []

    async def lookup(self, request):
        self.asked.append(request)
        return self.item

    async def aclose(self):
        pass


def test_the_poll_asks_through_the_organisations_transport_as_its_information_system(tmp_path, store):
    """RegistryPoller asks the organisation's endpoint, with its clientEntityId and ИС key, for this document."""
    config = load_organizations(
        write_dev_config(tmp_path / "cfg", oids=[ORG], endpoint="http://ips.test/emdr")
    )
    transport = FakeTransport(soap.RegistryItem(emdr_id="16.62.9", local_uid="doc-1"))
    poll = RegistryPoller(config=config, transports=Transports(preset={"ips": transport}))
    item = asyncio.run(poll(store.get("doc-1", organization=ORG)))
    assert item.emdr_id == "16.62.9"
    [request] = transport.asked
    assert (
        request.local_uid,
        request.organization,
        request.kind,
        request.endpoint,
        request.client_entity_id,
    ) == ("doc-1", ORG, "119", "http://ips.test/emdr", "dev-mis-1")
    assert request.since <= dt.date.today() <= request.until and request.key is not None


def test_documents_of_routes_without_callbacks_are_polled_every_interval(store):
    """PollScanner writes a poll record (not a deadline) for an accepted document of a callback-less organisation,
    again only after the interval, and none for other organisations or decided documents."""
    scanner = PollScanner(store=store, organizations=frozenset({ORG}), interval=60)
    [out] = asyncio.run(scanner.tick())
    assert poll_of(as_record(out)) == (ORG, "doc-1") and deadline_of(as_record(out)) is None
    assert asyncio.run(scanner.tick()) == []  # asked a moment ago
    scanner._last[(ORG, "doc-1")] -= 61  # the interval has passed
    assert len(asyncio.run(scanner.tick())) == 1
    assert asyncio.run(PollScanner(store=store, organizations=frozenset({"1.2.3"}), interval=60).tick()) == []
    store.mark_registered("doc-1", "16.62.1", organization=ORG)
    scanner._last.clear()
    assert asyncio.run(scanner.tick()) == []


def test_a_routine_poll_that_finds_nothing_changes_nothing(store):
    """A routine poll (final=False) that does not find the document, or finds it without an emdrId, emits nothing
    and leaves it accepted (a deadline would dead-letter it)."""
    from services.pipeline import acknowledgment

    async def nothing(doc):
        return None

    async def held(doc):
        return soap.RegistryItem(local_uid=doc.local_uid)

    options = {"store": store, "environments": lambda oid: "test"}
    for poll in (nothing, held):
        assert (
            asyncio.run(
                acknowledgment.on_deadline("doc-1", organization=ORG, poll=poll, final=False, **options)
            )
            == []
        )
    assert store.get("doc-1", organization=ORG).state == lc.ACCEPTED


def test_an_n3_organisation_is_polled_at_its_status_method_with_its_guid(tmp_path, store):
    """RegistryPoller asks an n3 organisation's status method with its N3 GUID (no ИС key); one without a status
    method is not polled (its documents wait for the deadline) and is left out of the poll scanner."""
    import json

    path = write_dev_config(tmp_path / "cfg", oids=[ORG], endpoint="http://n3.test/emk/EMKService.svc")
    raw = json.loads(path.read_text())
    (path.parent / "n3.token").write_text("n3-guid")
    raw["organizations"][0]["remd"].update(
        transport="n3",
        n3={"lpu_id": "lpu-1", "token_file": "n3.token", "status_url": "http://n3.test/status"},
    )
    path.write_text(json.dumps(raw, ensure_ascii=False))
    transport = FakeTransport(None)
    transport.name, transport.has_callbacks = "n3", False
    transports = Transports(preset={"n3": transport})
    config = load_organizations(path)
    poll = RegistryPoller(config=config, transports=transports)
    assert asyncio.run(poll(store.get("doc-1", organization=ORG))) is None
    [request] = transport.asked
    assert (request.endpoint, request.auth_token, request.key) == ("http://n3.test/status", "n3-guid", None)
    assert callbackless(config, transports) == {ORG}
    del raw["organizations"][0]["remd"]["n3"]["status_url"]
    path.write_text(json.dumps(raw, ensure_ascii=False))
    config = load_organizations(path)
    assert (
        asyncio.run(
            RegistryPoller(config=config, transports=transports)(store.get("doc-1", organization=ORG))
        )
        is None
    )
    assert len(transport.asked) == 1 and callbackless(config, transports) == frozenset()


def test_an_undecided_deadline_is_asked_again_after_the_interval(store):
    """A document still undecided after its deadline question (its registry answer lost) gets another deadline
    record once ``again`` seconds have passed, not before; a decided one gets none."""
    now = [1000.0]
    scanner = DeadlineScanner(store=store, timeout=3600, again=600, clock=lambda: now[0])
    assert len(asyncio.run(scanner.tick())) == 1
    now[0] += 599
    assert asyncio.run(scanner.tick()) == []
    now[0] += 1
    [again] = asyncio.run(scanner.tick())
    assert deadline_of(as_record(again)) == (ORG, "doc-1")
    store.mark_registered("doc-1", "16.62.1", organization=ORG)
    now[0] += 600
    assert asyncio.run(scanner.tick()) == []


class AskingTransport(FakeTransport):
    """An ИПС-like transport: getRegistryItem acknowledged; checks the question was stored before it was sent."""

    def __init__(self, item, store):
        super().__init__(item)
        self.store, self.questions = store, []

    async def ask_registry_item(self, request):
        assert self.store.find_registry_request(request.message_id) is not None, "asked before it was stored"
        self.questions.append(request)


def test_ask_stores_the_question_then_asks_for_the_record_with_the_callback_address(tmp_path, store):
    """RegistryPoller.ask stores the getRegistryItem's MessageID with the document, emdrId and purpose, then sends it
    to the organisation's endpoint with its callback address as ReplyTo, as its information system."""
    config = load_organizations(
        write_dev_config(
            tmp_path / "cfg", oids=[ORG], endpoint="http://ips.test/emdr", callback_url="http://mis.test/cb"
        )
    )
    transport = AskingTransport(None, store)
    poll = RegistryPoller(config=config, transports=Transports(preset={"ips": transport}), store=store)
    item = soap.RegistryItem(emdr_id="16.62.9", local_uid="doc-1")
    assert asyncio.run(
        poll.ask(store.get("doc-1", organization=ORG), item, purpose="duplicate", attempt_message_id=M1)
    )
    [request] = transport.questions
    assert (request.emdr_id, request.endpoint, request.reply_to, request.client_entity_id) == (
        "16.62.9",
        "http://ips.test/emdr",
        "http://mis.test/cb",
        "dev-mis-1",
    )
    [asked] = store.registry_requests("doc-1", organization=ORG)
    assert (asked.message_id, asked.emdr_id, asked.purpose, asked.attempt_message_id) == (
        request.message_id,
        "16.62.9",
        "duplicate",
        M1,
    )


def test_ask_declines_where_the_search_must_decide(tmp_path, store):
    """Without a store, or on a transport that cannot ask for a record on the callback, ask stores and sends nothing
    and says so (the search's own answer then decides)."""
    config = load_organizations(
        write_dev_config(
            tmp_path / "cfg", oids=[ORG], endpoint="http://ips.test/emdr", callback_url="http://mis.test/cb"
        )
    )
    item = soap.RegistryItem(emdr_id="16.62.9", local_uid="doc-1")
    asking = AskingTransport(None, store)
    without_store = RegistryPoller(config=config, transports=Transports(preset={"ips": asking}))
    plain = RegistryPoller(
        config=config, transports=Transports(preset={"ips": FakeTransport(None)}), store=store
    )
    for poll in (without_store, plain):
        assert asyncio.run(poll.ask(store.get("doc-1", organization=ORG), item, purpose="deadline")) is False
    assert asking.questions == [] and store.registry_requests("doc-1", organization=ORG) == []

"""What the sender's tests share: a signed record as the signer emits it, a transport that answers what it is
told (and notes whether each attempt was durable before its request left), and a Submitter over them."""

from __future__ import annotations

from producer import events, topology
from services.messaging.records import Record
from services.pipeline.submission import Submitter
from services.remd.transport import SubmitOutcome

#: the organisation and the МИС of the signed schema's example
ORG = "1.2.643.5.1.13.13.12.2.77.7831"
MIS = "dental-mis"
#: where the example's МИС reads its statuses
STATUS_TOPIC = topology.status_topic(MIS).name


def signed_record(uid="doc-1", *, organization: str = ORG, mis_id: str = MIS) -> Record:
    """The signed schema's example under ``uid`` (of ``organization``, from the МИС ``mis_id``), as a record of the
    signed topic."""
    data = dict(events.load_schema(events.SIGNED)["examples"][0])
    data["localUid"] = uid
    data["organizationOid"], data["misId"] = organization, mis_id
    event = events.new_event(events.SIGNED, data, source="test")
    return Record(
        topic=topology.SIGNED.name,
        partition=0,
        offset=0,
        key=uid,
        value=events.encode(event),
        headers={},
        timestamp_ms=0,
    )


class FakeTransport:
    """A transport answering each request with the next outcome given (then accepted), keeping the requests."""

    name = "ips"

    def __init__(self, *outcomes, store=None):
        self.outcomes = list(outcomes)
        self.requests = []
        self.store = store
        self.recorded_before_send = []

    async def submit(self, request):
        self.requests.append(request)
        if self.store is not None:  # the attempt must already be durable when the request leaves
            self.recorded_before_send.append(self.store.find_by_message_id(request.message_id) is not None)
        return self.outcomes.pop(0) if self.outcomes else SubmitOutcome(kind="accepted", reason="ACCEPTED")

    async def aclose(self):
        pass


def submitter(config, store, transport, **kw):
    """The sender's handler with ``transport`` as its only one."""
    return Submitter(config=config, store=store, transports={"ips": transport}, **kw)

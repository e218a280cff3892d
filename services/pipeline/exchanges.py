"""Each attempt's signed SOAP request and РЭМД's answer, kept for support: СТП ЕГИСЗ asks for the request.

The sender hands every attempt's outcome to :meth:`ExchangeArchive.keep`: the bytes go to the claim-check
store (``services.documents.store``: content-addressed, the retention of its bucket or directory applies —
keep it at least as long as the dead-letter topics, 30 days), the MessageID → references row to the support
tables (``services.lifecycle.support_tables``). Nothing about the exchange goes into a record header: a dead letter
already lists every MessageID (``emd-message-ids``), and that is the key (no header growth, no patient
data in headers — the request carries the patient's СНИЛС and name, so it is read masked by default).

Keeping is best effort: the attempt has happened whatever the archive says, so a store failure is logged
and counted (``emd_exchanges_unkept``), never a reason to retry or dead-letter the document. For the same
reason the files are not fsync'd (``put(durable=False)``: two fsyncs of a file and its directory each, ~2 ms
of the sender's time per attempt): a machine that crashes may lose the last seconds of exchanges, which
support then sees as not kept; the attempt and its MessageID are in the lifecycle store regardless.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter

from services.documents.store import DocumentStore
from services.lifecycle.support_tables import Exchange, SupportTables
from services.logs import get_logger
from services.metrics import REGISTRY

log = get_logger(__name__)

UNKEPT = Counter(
    "emd_exchanges_unkept",
    "Attempts whose SOAP request/answer could not be kept for support.",
    registry=REGISTRY,
)


@dataclass(frozen=True)
class KeptExchange:
    """One attempt as support reads it: the index row and the bytes (None when not kept or unreadable)."""

    exchange: Exchange
    request: bytes | None
    response: bytes | None


class ExchangeArchive:
    """Keeps and reads attempts' exchanges (``documents``: the claim-check store; ``tables``: the index)."""

    def __init__(self, *, documents: DocumentStore, tables: SupportTables) -> None:
        self.documents, self.tables = documents, tables

    def keep(self, message_id: str, *, local_uid: str, endpoint: str, outcome: Any) -> None:
        """Store ``outcome.request`` / ``outcome.response`` of one attempt (a ``SubmitOutcome``)."""
        try:
            request_ref = self.documents.put(outcome.request, durable=False) if outcome.request else None
            response_ref = self.documents.put(outcome.response, durable=False) if outcome.response else None
            self.tables.keep_exchange(
                message_id,
                local_uid=local_uid,
                endpoint=endpoint,
                request_ref=request_ref,
                response_ref=response_ref,
                http_status=outcome.http_status,
            )
        except Exception as exc:  # noqa: BLE001 - support data: the document goes on without it
            UNKEPT.inc()
            log.warning(
                "exchange not kept",
                local_uid=local_uid,
                message_id=message_id,
                error=f"{type(exc).__name__}: {exc}"[:300],
            )

    def read(self, message_ids: Sequence[str]) -> dict[str, KeptExchange]:
        """The kept exchanges of these MessageIDs, by normalised MessageID, in the order given."""
        found = self.tables.exchanges(message_ids)
        return {
            mid: KeptExchange(ex, self._get(ex.request_ref), self._get(ex.response_ref))
            for mid, ex in found.items()
        }

    def _get(self, ref: str | None) -> bytes | None:
        if not ref:
            return None
        try:
            return self.documents.get(ref)
        except Exception as exc:  # noqa: BLE001 - shown as "not readable", the rest of the case still is
            log.warning("kept exchange unreadable", ref=ref, error=type(exc).__name__)
            return None

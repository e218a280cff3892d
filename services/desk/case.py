"""One document's case file: its dead letters, every attempt (MessageID, time, code, hint) and the kept exchanges.

``build_case`` gathers what the desk knows about one organisation's document (a localUid alone may name
documents of several organisations) from the dead-letter topics (already read),
the lifecycle store (attempts) and the exchange archive (the signed requests and answers); ``case_json``
and ``case_text`` render it, masked unless ``unmask`` (the caller logs an unmasked view in the audit log).
Either store may be missing (a signer dead letter never reached the sender): the case says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from producer.ids import normalize_message_id
from services.desk.deadletters import DeadLetter, mask_event, mask_xml
from services.remd import codes
from services.timestamps import for_people

if TYPE_CHECKING:
    from services.lifecycle import Attempt, Document, LifecycleStore
    from services.pipeline.exchanges import ExchangeArchive, KeptExchange


@dataclass
class Case:
    local_uid: str
    dead_letters: list[DeadLetter]  # newest first
    organization: str | None = None  # whose document: (organization, local_uid) is its identity
    document: Document | None = None  # when the sender knew it
    attempts: list[Attempt] = field(default_factory=list)  # oldest first
    exchanges: dict[str, KeptExchange] = field(default_factory=dict)  # normalised MessageID → its exchange

    @property
    def latest(self) -> DeadLetter | None:
        return self.dead_letters[0] if self.dead_letters else None

    def message_ids(self) -> list[str]:
        ids = [a.message_id for a in self.attempts]
        for d in reversed(self.dead_letters):
            ids += [
                m
                for m in d.message_ids
                if normalize_message_id(m) not in {normalize_message_id(i) for i in ids}
            ]
        return ids


def build_case(
    local_uid: str,
    letters: Sequence[DeadLetter],
    *,
    lifecycle: LifecycleStore | None = None,
    archive: ExchangeArchive | None = None,
    organization: str | None = None,
) -> Case:
    """The case of the organisation's ``local_uid`` (``letters``: dead letters of that localUid, newest first).

    ``organization``: whose document; default the organisation of the newest dead letter, else the only
    organisation the lifecycle store knows the localUid in. Dead letters of another organisation are left out."""
    organization = organization or next((d.organization for d in letters if d.organization), None)
    if organization is None and lifecycle is not None:
        known = lifecycle.documents_of(local_uid)
        organization = known[0].organization if len(known) == 1 else None
    mine = [d for d in letters if organization is None or d.organization in (None, organization)]
    case = Case(local_uid, mine, organization=organization)
    if lifecycle is not None and organization is not None:
        case.document = lifecycle.get(local_uid, organization=organization)
        case.attempts = (
            lifecycle.history(local_uid, organization=organization) if case.document is not None else []
        )
    if archive is not None:
        case.exchanges = archive.read(case.message_ids())
    return case


def _text(data: bytes | None, unmask: bool) -> str | None:
    if data is None:
        return None
    return data.decode("utf-8", "replace") if unmask else mask_xml(data)


def attempt_rows(case: Case, *, unmask: bool = False) -> list[dict[str, Any]]:
    """Every attempt: MessageID, time, outcome, code, hint, and the kept request and answer."""
    rows = []
    known = {normalize_message_id(a.message_id): a for a in case.attempts}
    for mid in case.message_ids():
        a = known.get(normalize_message_id(mid))
        kept = case.exchanges.get(normalize_message_id(mid))
        code = a.code if a is not None else None
        info = codes.classify(code) if code else None
        rows.append(
            {
                "messageId": mid,
                "attempt": a.attempt if a else None,
                "sentAt": for_people(a.sent_at) if a else None,
                "outcome": a.outcome if a else None,
                "code": code,
                "hint": info.hint if info is not None and not info.unknown else None,
                "endpoint": (a.endpoint if a else None) or (kept.exchange.endpoint if kept else None),
                "httpStatus": kept.exchange.http_status if kept else None,
                "request": _text(kept.request, unmask) if kept else None,
                "response": _text(kept.response, unmask) if kept else None,
            }
        )
    return rows


def case_json(case: Case, *, unmask: bool = False) -> dict[str, Any]:
    doc = case.document
    return {
        "localUid": case.local_uid,
        "state": doc.state if doc is not None else None,
        "emdrId": doc.emdr_id if doc is not None else None,
        "organization": doc.organization if doc is not None else case.organization,
        "kind": doc.kind if doc is not None else (case.latest.kind if case.latest else None),
        "deadLetters": [
            {**d.summary(), "headers": dict(d.headers), "event": d.event if unmask else mask_event(d.event)}
            for d in case.dead_letters
        ],
        "attempts": attempt_rows(case, unmask=unmask),
        "masked": not unmask,
    }


def case_text(case: Case, *, unmask: bool = False) -> str:
    """What ``emd dlq show`` prints: the failure, then each attempt with its request and answer."""
    out = [
        f"document {case.local_uid}"
        + (
            f"  state {case.document.state}"
            if case.document is not None
            else "  (unknown to the lifecycle store)"
        )
        + ("" if unmask else "  [patient data masked; --unmask shows it, and is logged]")
    ]
    for d in case.dead_letters:
        out += [
            f"dead letter {d.topic}@{d.partition}:{d.offset}  {for_people(d.failed_at)}  stage {d.stage}",
            f"  reason {d.reason}  code {d.code or '-'}  category {d.category or '-'}",
            f"  message  {d.summary()['message'] or '-'}",
            f"  hint     {d.hint or '-'}",
            f"  MessageIDs {', '.join(d.message_ids) or '-'} (the last one is the failing request)",
        ]
    for row in attempt_rows(case, unmask=unmask):
        out.append(
            f"attempt {row['attempt'] or '?'}  MessageID {row['messageId']}  sent {row['sentAt'] or '?'}  "
            f"outcome {row['outcome'] or '?'}  code {row['code'] or '-'}  HTTP {row['httpStatus'] or '-'}"
            + (f"\n  hint {row['hint']}" if row["hint"] else "")
        )
        out.append(
            "  signed request:\n" + _indent(row["request"])
            if row["request"]
            else "  signed request: not kept"
        )
        out.append("  answer:\n" + _indent(row["response"]) if row["response"] else "  answer: none kept")
    return "\n".join(out) + "\n"


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())

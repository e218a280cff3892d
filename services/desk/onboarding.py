"""``emd clinic test``: one real round trip on the test stand, through the running pipeline.

The test document is published like any МИС document (``producer.client``) for a clinic that is not yet
promoted, so the pipeline's own routing sends it to the test stand (``services.pipeline.routing``): signed
by the signer worker with the clinic's keys and МЧД, sent by the sender, pulled with getDocumentFile and
called back by the test stand's РЭМД. The command follows the document in the lifecycle store until the
callback decided it (registered or rejected), then records the result in the support tables, where
``promote`` looks for it. Nothing here is a shortcut around the pipeline: a test that passes proves the
path a real document of that clinic will take.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from producer import cda
from producer.errors import EmdError
from producer.xmlsafe import parse_xml
from services.lifecycle import FAILED, REGISTERED, LifecycleStore

if TYPE_CHECKING:
    from services.lifecycle.support_tables import SupportTables

POLL_SECONDS = 1.0


@dataclass
class TestResult:
    ok: bool
    local_uid: str
    state: str | None = None
    emdr_id: str | None = None
    message_ids: list[str] = field(default_factory=list)
    detail: str = ""


class OnboardingError(EmdError):
    """The test cannot run as asked (wrong document, clinic already in production…)."""

    reason = "ONBOARDING_REFUSED"


def run_test(
    oid: str,
    document: bytes,
    *,
    publish: Callable[[bytes], str],
    lifecycle: LifecycleStore,
    tables: SupportTables,
    actor: str,
    timeout: float = 300.0,
    say: Callable[[str], None] = lambda s: None,
    sleep: Callable[[float], None] = time.sleep,
) -> TestResult:
    """Publish ``document`` (a СЭМД of clinic ``oid``), wait until РЭМД decided it, record the result."""
    from services.lifecycle.support_tables import ClinicConflict

    meta = cda.extract(parse_xml(document))
    if meta.organization_oid != oid:
        raise OnboardingError(
            f"the test document is for organisation {meta.organization_oid}, not {oid}: "
            "give a СЭМД of this clinic (--document)"
        )
    try:
        tables.start_test(oid, actor=actor)
    except ClinicConflict as exc:
        raise OnboardingError(str(exc)) from None
    uid = publish(document)
    say(f"published test document {uid}; waiting for the test stand's answer (up to {timeout:.0f} s)")
    deadline = time.monotonic() + timeout
    seen_ids: list[str] = []
    while True:
        doc = lifecycle.get(uid, organization=oid)
        ids = lifecycle.message_ids(uid, organization=oid) if doc is not None else []
        for mid in ids[len(seen_ids) :]:
            say(f"sent registerDocument, MessageID {mid}")
        seen_ids = ids
        if doc is not None and doc.state in (REGISTERED, FAILED):
            ok = doc.state == REGISTERED
            detail = (
                ""
                if ok
                else f"{doc.failure_reason}: {doc.failure_code or ''} {doc.failure_message or ''}".strip()
            )
            result = TestResult(ok, uid, doc.state, doc.emdr_id, ids, detail)
            break
        if time.monotonic() >= deadline:
            state = doc.state if doc is not None else "not yet at the sender"
            result = TestResult(
                False,
                uid,
                doc.state if doc else None,
                None,
                ids,
                f"no decision within {timeout:.0f} s (state: {state}); see `emd dlq show {uid}` "
                "and `emd status " + uid + "`",
            )
            break
        sleep(POLL_SECONDS)
    tables.record_test(
        oid,
        ok=result.ok,
        local_uid=uid,
        message_ids=result.message_ids,
        emdr_id=result.emdr_id,
        actor=actor,
        detail=result.detail or None,
    )
    return result

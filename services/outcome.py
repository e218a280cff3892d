"""The outcome of one attempt to register a document: one vocabulary for the protocol, the pipeline and the store.

The transport classifies РЭМД's synchronous answer to an attempt (``ACCEPTED``, ``TRANSIENT``, ``PERMANENT``:
``services.remd.transport.SubmitOutcome.kind``); the status worker records what a callback or the registry
decided (``REGISTERED``, ``REJECTED``, ``TRANSIENT``, ``DUPLICATE``); the lifecycle store keeps it on the
attempt (``services.lifecycle.Attempt.outcome``), and the support desk puts it in words for СТП. Members are
strings (``Outcome.ACCEPTED == "accepted"``), so what the store holds and metrics' labels read as before.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

__all__ = ["ANSWERED", "CALLBACK_DECIDED", "Answered", "Outcome"]


class Outcome(StrEnum):
    """What became of one attempt (one MessageID)."""

    #: ИПС took the request (``status=success``); the registration itself is still running
    ACCEPTED = "accepted"
    #: it may pass: retry (a network failure, a transient РЭМД code, or a callback saying so)
    TRANSIENT = "transient"
    #: the synchronous answer refused it: retrying the same bytes cannot help
    PERMANENT = "permanent"
    #: a callback (or the registry) says it is registered
    REGISTERED = "registered"
    #: a callback says РЭМД refused it
    REJECTED = "rejected"
    #: РЭМД answered NOT_UNIQUE_PROVIDED_ID: this localUid was already registered
    DUPLICATE = "duplicate"


#: what a synchronous answer can say
Answered = Literal[Outcome.ACCEPTED, Outcome.TRANSIENT, Outcome.PERMANENT]
ANSWERED: tuple[Answered, ...] = (Outcome.ACCEPTED, Outcome.TRANSIENT, Outcome.PERMANENT)
#: what a callback, or a registry look-up in its place, decides
CALLBACK_DECIDED = (Outcome.REGISTERED, Outcome.REJECTED, Outcome.TRANSIENT, Outcome.DUPLICATE)

"""The pipeline's exceptions: few, and each one says what the runtime must do.

Hierarchy::

    EmdError                      base of everything raised on purpose
    ├── ConfigurationError        the deployment is wrong (missing key, bad setting): fail at start
    ├── TransientError            may succeed later: the record goes to a retry topic (``defer`` seconds)
    │   └── ...                   network, 5xx, RATE_LIMIT, transient РЭМД codes
    └── PermanentError            will never succeed as is: the record is dead-lettered at once
        └── ...                   invalid document, bad signature, rejected by РЭМД

A handler raises one of these; the worker runtime (``services.messaging.runtime``) turns it into a
retry or a dead letter. ``reason`` is a short machine code (``XSD_INVALID``, ``CERT_EXPIRED``,
``REMD_REJECTED``...), stable for dashboards and support; ``message`` is for a person.
Anything else a handler raises is a bug: the runtime dead-letters it as ``UNEXPECTED_ERROR``
with the exception class, so one bad record never blocks a partition.
"""

from __future__ import annotations

from typing import Any


class EmdError(Exception):
    """Base of the pipeline's own exceptions."""

    reason: str = "EMD_ERROR"

    def __init__(self, message: str = "", *, reason: str | None = None, **details: Any) -> None:
        super().__init__(message or self.__class__.__doc__ or self.__class__.__name__)
        if reason is not None:
            self.reason = reason
        self.message = str(self.args[0])
        #: extra context for the dead-letter headers (remd_code, message_ids, category...)
        self.details = details

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(reason={self.reason!r}, message={self.message!r})"


class ConfigurationError(EmdError):
    """The deployment is misconfigured; the process should not start."""

    reason = "CONFIGURATION_ERROR"


class TransientError(EmdError):
    """A failure that may go away: retry later, after ``defer`` seconds if given."""

    reason = "TRANSIENT_ERROR"

    def __init__(self, message: str = "", *, reason: str | None = None, defer: float | None = None,
                 **details: Any) -> None:
        super().__init__(message, reason=reason, **details)
        self.defer = defer


class PermanentError(EmdError):
    """A failure retrying cannot fix: dead-letter the record now."""

    reason = "PERMANENT_ERROR"

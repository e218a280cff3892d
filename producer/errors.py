"""The pipeline's exceptions: few, and each one says what the runtime must do.

The whole tree of the code's own exceptions, with the module each class lives in::

    EmdError                      producer.errors            base of what the code raises on purpose
    ├── ConfigurationError        producer.errors            the deployment is wrong: fail at start
    │   ├── SchematronError       services.documents.schematron   a rule file we cannot compile
    │   └── CipherUnavailable     services.crypto.libcrypto  this OpenSSL lacks a key container's cipher
    ├── TransientError            producer.errors            may pass: retry tier (``defer`` seconds), or in place
    │   └── PublishError          producer.client            the broker did not acknowledge a publish
    ├── PermanentError            producer.errors            retrying cannot fix it: dead letter now
    │   ├── XmlRejected           producer.xmlsafe           not XML, DOCTYPE, entities, too large
    │   ├── NotCda                producer.cda               XML, but not a ClinicalDocument
    │   ├── SignatureError        services.crypto.cades      a CMS signature that does not verify
    │   ├── SoapParseError        services.remd.envelope     XML, but not the SOAP message expected
    │   ├── WsSecurityError       services.remd.wssec        WS-Security missing, broken or forged
    │   └── InvalidDocument       producer.client            a document the producer refuses to publish
    ├── LifecycleConflict         services.lifecycle.model   a transition the lifecycle forbids: another
    │                                                         replica decided first (caught where it means
    │                                                         "already handled", never a dead letter)
    └── OnboardingError           services.desk.onboarding   ``emd clinic test`` cannot run as asked

    Exception
    └── ClinicConflict            services.lifecycle.support_tables
                                                              a clinic transition the onboarding states forbid
                                                              (promote before a passed test): ``emd clinic``
                                                              and the console catch it by name

A handler raises one of these; the worker runtime (``services.messaging.runtime``) turns ``TransientError``
into a retry and ``PermanentError`` into a dead letter. ``reason`` is a short stable machine code
(``XSD_INVALID``, ``CERT_EXPIRED``, ``REMD_REJECTED``...) for dashboards and support; ``message`` is for a
person. ``services.reasons`` says, for every reason, who must act (its category) and what to do (a hint).
Anything else a handler raises is a bug: the runtime dead-letters it as ``UNEXPECTED_ERROR`` (category
``internal``) with the exception class, so one bad record never blocks a partition.
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

    def __init__(
        self, message: str = "", *, reason: str | None = None, defer: float | None = None, **details: Any
    ) -> None:
        super().__init__(message, reason=reason, **details)
        self.defer = defer


class PermanentError(EmdError):
    """A failure retrying cannot fix: dead-letter the record now."""

    reason = "PERMANENT_ERROR"

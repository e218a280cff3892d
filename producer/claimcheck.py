"""The claim-check convention: small documents travel inline in their event, large ones by reference.

A СЭМД with an embedded PDF can be many megabytes, over Kafka's 1 MB default record size. The МИС library
therefore puts a document larger than its inline limit into a ``DocumentStore`` and the event carries
``ref`` + ``sha256`` + ``size`` (docs/claim-check.md). Stores are content-addressed: the object name *is* the
SHA-256 of the bytes, so ``put`` is idempotent (a retried publish writes the same object), two documents never
collide, and ``get`` verifies what it read against the name.

This module holds what a МИС needs: the ``DocumentStore`` interface, the file store, and the event's
``document`` object. The pipeline's S3 store and its helpers live in ``services.documents.store``; any object
with the ``DocumentStore`` methods will do for a МИС (one over boto3, say).
"""

from __future__ import annotations

import base64
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Protocol, runtime_checkable
from urllib.parse import unquote, urlsplit

from producer import tracing
from producer.errors import ConfigurationError, PermanentError, TransientError
from producer.events import DocumentData
from producer.files import private_dir

#: documents up to this size travel inline in their created event (256 KiB); the default of every inline limit
INLINE_DOCUMENT_LIMIT = 256 * 1024
#: the largest СЭМД accepted (50 MiB); the default of every document size limit
MAX_DOCUMENT_BYTES = 50 * 1024 * 1024


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_sha256_hex(name: str) -> bool:
    return len(name) == 64 and all(c in "0123456789abcdef" for c in name)


@runtime_checkable
class DocumentStore(Protocol):
    """Where large documents live; references are URIs the same store (or its peer) can ``get``."""

    def put(self, data: bytes, *, durable: bool = True) -> str:
        """Store ``data`` (idempotent) and return its reference URI; ``durable=False``: a file store may leave
        flushing to the OS (best-effort data: a machine crash may lose the last seconds of it)."""

    def get(self, ref: str, *, max_bytes: int | None = None) -> bytes:
        """The bytes behind ``ref``, verified against the SHA-256 in the name; more than ``max_bytes`` of them are
        refused (``DOCUMENT_TOO_LARGE``) before they are read whole."""

    def exists(self, ref: str) -> bool:
        """Whether ``ref`` is stored."""

    def ref_for(self, data: bytes) -> str:
        """The reference ``put(data)`` returns, without storing anything (content-addressed)."""


class FilesystemStore:
    """``<root>/<sha[:2]>/<sha>`` files, written via temp file + fsync + rename (never half-written).

    ``root``: directory (created on first ``put``); the default deployment uses ``<data_dir>/documents``.
    """

    scheme = "file"

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).resolve()

    def _path(self, digest: str) -> Path:
        return self.root / digest[:2] / digest

    def _digest_of(self, ref: str) -> str:
        parts = urlsplit(ref)
        path = Path(unquote(parts.path))
        if parts.scheme != "file" or not is_sha256_hex(path.name) or path.resolve() != self._path(path.name):
            raise PermanentError(
                f"reference {ref!r} is not a document of the store at {self.root}",
                reason="DOCUMENT_REF_INVALID",
                ref=ref,
            )
        return path.name

    def ref_for(self, data: bytes) -> str:
        return self._path(sha256_hex(data)).as_uri()

    def put(self, data: bytes, *, durable: bool = True) -> str:
        digest = sha256_hex(data)
        target = self._path(digest)
        if not target.exists():
            try:
                private_dir(target.parent)  # documents are patient data: 0700 directories, 0600 files
                fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{digest[:8]}.", suffix=".tmp")
                try:
                    with os.fdopen(fd, "wb") as fh:
                        fh.write(data)
                        fh.flush()
                        if durable:
                            os.fsync(fh.fileno())
                    os.replace(tmp, target)  # atomic: readers see nothing or everything
                except BaseException:
                    Path(tmp).unlink(missing_ok=True)
                    raise
                if durable:  # the rename itself must survive a crash before the event is published
                    dir_fd = os.open(target.parent, os.O_RDONLY)
                    try:
                        os.fsync(dir_fd)
                    finally:
                        os.close(dir_fd)
            except OSError as exc:
                raise TransientError(
                    f"cannot write document to {self.root}: {exc.strerror}",
                    reason="DOCUMENT_STORE_UNAVAILABLE",
                ) from exc
        return target.as_uri()

    def get(self, ref: str, *, max_bytes: int | None = None) -> bytes:
        digest = self._digest_of(ref)
        try:
            if max_bytes is not None:
                too_large(self._path(digest).stat().st_size, max_bytes)
            data = self._path(digest).read_bytes()
        except FileNotFoundError:
            raise TransientError(
                f"document {digest} is not in {self.root}", reason="DOCUMENT_MISSING", ref=ref
            ) from None
        except OSError as exc:
            raise TransientError(
                f"cannot read document {digest}: {exc.strerror}", reason="DOCUMENT_STORE_UNAVAILABLE", ref=ref
            ) from exc
        if sha256_hex(data) != digest:
            raise PermanentError(
                f"document {digest} is corrupt: its bytes hash differently",
                reason="DOCUMENT_CORRUPT",
                ref=ref,
            )
        return data

    def exists(self, ref: str) -> bool:
        return self._path(self._digest_of(ref)).is_file()

    def __str__(self) -> str:
        return self.root.as_uri()


def too_large(size: int, limit: int) -> None:
    """``PermanentError(DOCUMENT_TOO_LARGE)`` when a document of ``size`` bytes is over ``limit``: what every reader
    asks before it reads (or parses) the bytes."""
    if size > limit:
        raise PermanentError(
            f"document is {size} bytes, over the limit of {limit} bytes",
            reason="DOCUMENT_TOO_LARGE",
            size=size,
            limit=limit,
        )


def document_field(
    data: bytes, store: DocumentStore | None, *, inline_limit: int, media_type: str = "text/xml"
) -> DocumentData:
    """The event's ``document`` object: inline up to ``inline_limit`` bytes, else stored and referenced."""
    field: DocumentData = {"sha256": sha256_hex(data), "size": len(data), "mediaType": media_type}
    if len(data) <= inline_limit:
        field["inline"] = base64.b64encode(data).decode("ascii")
    else:
        if store is None:
            raise ConfigurationError(
                f"document of {len(data)} bytes exceeds the inline limit of {inline_limit} "
                f"bytes and no document store is configured"
            )
        with tracing.step("claimcheck put"):
            field["ref"] = store.put(data)
    return field

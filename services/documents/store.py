"""Claim-check store for document bytes: small documents travel inline, large ones by reference.

A СЭМД with an embedded PDF can be many megabytes, over Kafka's 1 MB default record size. The
producer therefore puts documents larger than ``Settings.inline_document_limit`` into a
``DocumentStore`` and the event carries ``ref`` + ``sha256`` + ``size`` (docs/claim-check.md). After
``created`` every document travels by reference: the signer puts an inline one into the store
(:func:`by_reference`), so no later event, dead letter or lifecycle row carries the ~100 KB again. The
callback service serves those references to РЭМД, so it must use the signer's store: the signer marks the
store at start (:func:`mark_signer_store`), and the callback service refuses to start without that mark
(:func:`require_signer_store`).

Stores are content-addressed: the object name *is* the SHA-256 of the bytes, so ``put`` is
idempotent (a retried publish writes the same object), two documents never collide, and ``get``
verifies what it read against the name.

Errors::

    PermanentError DOCUMENT_CORRUPT     bytes read do not hash to the reference / the event's sha256
    PermanentError DOCUMENT_REF_INVALID a reference this store cannot serve (wrong scheme, bucket, name)
    TransientError DOCUMENT_MISSING     the object is not there (see below)
    TransientError DOCUMENT_STORE_UNAVAILABLE  I/O or network failure, 5xx, throttling

Why a missing object is *transient*: the producer writes (and fsyncs / gets the 200 for) the object
before it publishes the event, so a reference on a topic always pointed at a stored object. If a
consumer cannot find it, the likely causes are its own configuration (wrong ``EMD_DATA_DIR`` mount,
wrong bucket or endpoint) or replication lag on an S3-compatible cluster — both fixable without
touching the record. The retry tiers give the operator that time; when they run out the record is
dead-lettered anyway, with ``DOCUMENT_MISSING`` as the reason.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import httpx

from producer.claimcheck import (
    DocumentStore,
    FilesystemStore,
    document_field,
    is_sha256_hex,
    sha256_hex,
    too_large,
)
from producer.errors import ConfigurationError, PermanentError, TransientError
from services import telemetry
from services.config import Settings

__all__ = [
    "DocumentStore",
    "FilesystemStore",
    "S3Store",
    "TracedStore",
    "store_from_settings",
    "document_bytes",
    "document_field",
    "by_reference",
    "mark_signer_store",
    "require_signer_store",
    "SIGNER_MARK",
    "sigv4_sign",
]


# --- AWS Signature Version 4 (written out: it is small, and the tests pin it to AWS's own examples) ----


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def sigv4_sign(
    method: str,
    url: str,
    headers: dict[str, str],
    *,
    payload_sha256: str,
    access_key: str,
    secret_key: str,
    region: str,
    service: str = "s3",
    now: dt.datetime | None = None,
) -> dict[str, str]:
    """Return ``headers`` plus ``x-amz-date`` and ``Authorization`` for an AWS SigV4 request.

    ``url`` must already be URI-encoded the way it is sent (S3 object keys: each segment encoded once).
    Every header passed in is signed (``host`` is added from the URL when absent).
    """
    now = now or dt.datetime.now(dt.UTC)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    parts = urlsplit(url)
    out = {k: v for k, v in headers.items()}
    lower = {k.lower(): v for k, v in out.items()}
    if "host" not in lower:
        lower["host"] = parts.netloc
    if "x-amz-date" not in lower and "date" not in lower:
        lower["x-amz-date"] = amz_date
        out["x-amz-date"] = amz_date
    query = sorted(
        (quote(unquote(k), safe="-_.~"), quote(unquote(v), safe="-_.~"))
        for k, _, v in (p.partition("=") for p in parts.query.split("&") if p)
    )
    canonical_query = "&".join(f"{k}={v}" for k, v in query)
    names = sorted(lower)
    canonical_headers = "".join(f"{n}:{' '.join(str(lower[n]).split())}\n" for n in names)
    signed = ";".join(names)
    canonical = "\n".join(
        [method.upper(), parts.path or "/", canonical_query, canonical_headers, signed, payload_sha256]
    )
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, sha256_hex(canonical.encode())])
    key = _hmac(_hmac(_hmac(_hmac(f"AWS4{secret_key}".encode(), day), region), service), "aws4_request")
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    out["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={signed}, Signature={signature}"
    )
    return out


class S3Store:
    """S3-compatible object store (MinIO, Ceph, Yandex Object Storage) over httpx, path-style URLs.

    ``s3://<bucket>/<prefix>/<sha256>`` references; objects are PUT with ``x-amz-content-sha256`` so
    the server verifies the upload too. ``client``: an ``httpx.Client`` to reuse (tests pass one with
    a MockTransport); by default one is created with ``timeout`` seconds.
    """

    scheme = "s3"

    def __init__(
        self,
        *,
        endpoint: str,
        bucket: str,
        prefix: str = "",
        access_key: str,
        secret_key: str,
        region: str = "us-east-1",
        timeout: float = 30.0,
        client: httpx.Client | None = None,
    ) -> None:
        if not endpoint or not bucket:
            raise ConfigurationError(
                "S3 document store needs EMD_S3_ENDPOINT and a bucket in EMD_DOCUMENT_STORE"
            )
        self.endpoint = endpoint.rstrip("/")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._access_key, self._secret_key, self.region = access_key, secret_key, region
        self._client = client or httpx.Client(timeout=timeout)

    def _key(self, digest: str) -> str:
        return f"{self.prefix}/{digest}" if self.prefix else digest

    def _digest_of(self, ref: str) -> str:
        parts = urlsplit(ref)
        key = parts.path.lstrip("/")
        digest = key.rsplit("/", 1)[-1]
        if (
            parts.scheme != "s3"
            or parts.netloc != self.bucket
            or key != self._key(digest)
            or not is_sha256_hex(digest)
        ):
            raise PermanentError(
                f"reference {ref!r} is not a document of s3://{self.bucket}/{self.prefix}",
                reason="DOCUMENT_REF_INVALID",
                ref=ref,
            )
        return digest

    def _signed(self, method: str, digest: str, body: bytes = b"") -> tuple[str, dict[str, str]]:
        """The object's URL and the SigV4-signed headers of a request for it."""
        url = f"{self.endpoint}/{quote(self.bucket)}/{quote(self._key(digest))}"
        payload = sha256_hex(body)
        headers = {"x-amz-content-sha256": payload}
        if method == "PUT":
            headers["content-type"] = "application/octet-stream"
        signed = sigv4_sign(
            method,
            url,
            headers,
            payload_sha256=payload,
            access_key=self._access_key,
            secret_key=self._secret_key,
            region=self.region,
        )
        return url, signed

    def _request(self, method: str, digest: str, body: bytes = b"") -> httpx.Response:
        url, signed = self._signed(method, digest, body)
        try:
            response = self._client.request(
                method, url, headers=signed, content=body if method == "PUT" else None
            )
        except httpx.HTTPError as exc:
            raise TransientError(
                f"S3 {method} failed: {exc.__class__.__name__}", reason="DOCUMENT_STORE_UNAVAILABLE"
            ) from exc
        return self._checked(response, method)

    def _checked(self, response: httpx.Response, method: str) -> httpx.Response:
        """``response``, unless its status means the store is unavailable or refuses our credentials."""
        if response.status_code >= 500 or response.status_code in (408, 429):
            raise TransientError(
                f"S3 {method} answered {response.status_code}", reason="DOCUMENT_STORE_UNAVAILABLE"
            )
        if response.status_code in (401, 403):
            raise ConfigurationError(
                f"S3 {method} refused ({response.status_code}): check EMD_S3_* credentials"
            )
        return response

    def _ref(self, digest: str) -> str:
        return f"s3://{self.bucket}/{self._key(digest)}"

    def ref_for(self, data: bytes) -> str:
        return self._ref(sha256_hex(data))

    def put(self, data: bytes, *, durable: bool = True) -> str:
        digest = sha256_hex(data)  # durable or not: S3 answers once it holds the object
        response = self._request("PUT", digest, data)
        if response.status_code not in (200, 201, 204):
            raise TransientError(
                f"S3 PUT answered {response.status_code}", reason="DOCUMENT_STORE_UNAVAILABLE"
            )
        return self._ref(digest)

    def get(self, ref: str, *, max_bytes: int | None = None) -> bytes:
        digest = self._digest_of(ref)
        response = self._request("GET", digest) if max_bytes is None else self._get_at_most(digest, max_bytes)
        if response.status_code == 404:
            raise TransientError(
                f"document {digest} is not in s3://{self.bucket}", reason="DOCUMENT_MISSING", ref=ref
            )
        if response.status_code != 200:
            raise TransientError(
                f"S3 GET answered {response.status_code}", reason="DOCUMENT_STORE_UNAVAILABLE"
            )
        if sha256_hex(response.content) != digest:
            raise PermanentError(
                f"document {digest} is corrupt: its bytes hash differently",
                reason="DOCUMENT_CORRUPT",
                ref=ref,
            )
        return response.content

    def _get_at_most(self, digest: str, max_bytes: int) -> httpx.Response:
        """GET streamed: an object over ``max_bytes`` is refused by its Content-Length, or once ``max_bytes`` + 1
        bytes have arrived, never read whole (a reference may name any object of the bucket)."""
        url, signed = self._signed("GET", digest)
        try:
            with self._client.stream("GET", url, headers=signed) as response:
                if response.status_code != 200:
                    response.read()
                    return self._checked(response, "GET")
                length = response.headers.get("content-length")
                if length is not None and length.isdigit():
                    too_large(int(length), max_bytes)
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    too_large(len(body), max_bytes)
        except httpx.HTTPError as exc:
            raise TransientError(
                f"S3 GET failed: {exc.__class__.__name__}", reason="DOCUMENT_STORE_UNAVAILABLE"
            ) from exc
        return httpx.Response(200, content=bytes(body))

    def exists(self, ref: str) -> bool:
        response = self._request("HEAD", self._digest_of(ref))
        if response.status_code == 404:
            return False
        if response.status_code != 200:
            raise TransientError(
                f"S3 HEAD answered {response.status_code}", reason="DOCUMENT_STORE_UNAVAILABLE"
            )
        return True

    def close(self) -> None:
        self._client.close()

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix} at {self.endpoint}"


def store_from_settings(settings: Settings, *, client: httpx.Client | None = None) -> DocumentStore:
    """The store ``EMD_DOCUMENT_STORE`` names: empty = ``<data_dir>/documents``, ``file:///path``, ``s3://bucket/prefix``."""
    store = _store_of(settings, client)
    return TracedStore(store) if telemetry.enabled() else store


def _store_of(settings: Settings, client: httpx.Client | None) -> DocumentStore:
    url = settings.document_store_url.strip()
    if not url:
        return FilesystemStore(Path(settings.data_dir) / "documents")
    parts = urlsplit(url)
    if parts.scheme == "file":
        return FilesystemStore(unquote(parts.path))
    if parts.scheme == "s3":
        return S3Store(
            endpoint=settings.s3_endpoint,
            bucket=parts.netloc,
            prefix=parts.path,
            access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key,
            region=settings.s3_region,
            client=client,
        )
    raise ConfigurationError(
        f"EMD_DOCUMENT_STORE={url!r}: expected empty, file:///path or s3://bucket/prefix"
    )


class TracedStore:
    """A store whose every call is a span (``claimcheck put``, ``claimcheck get``…) with the store's scheme and
    the document's size: ``store_from_settings`` makes one when tracing is on."""

    def __init__(self, inner: DocumentStore) -> None:
        self.inner = inner
        self._scheme = str(getattr(inner, "scheme", type(inner).__name__))

    def _span(self, operation: str, size: int | None = None) -> Any:
        return telemetry.span(
            f"claimcheck {operation}",
            kind="client",
            attributes={"emd.store": self._scheme, "emd.operation": operation, "emd.size": size},
        )

    def put(self, data: bytes, *, durable: bool = True) -> str:
        with self._span("put", len(data)):
            return self.inner.put(data, durable=durable)

    def get(self, ref: str, *, max_bytes: int | None = None) -> bytes:
        with self._span("get") as span:
            data = self.inner.get(ref) if max_bytes is None else self.inner.get(ref, max_bytes=max_bytes)
            if span is not None:
                span.set_attribute("emd.size", len(data))
            return data

    def exists(self, ref: str) -> bool:
        with self._span("exists"):
            return self.inner.exists(ref)

    def ref_for(self, data: bytes) -> str:
        return self.inner.ref_for(data)

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()

    def __str__(self) -> str:
        return str(self.inner)


def document_bytes(
    doc_field: dict[str, Any], store: DocumentStore | None, *, max_bytes: int | None = None
) -> bytes:
    """Resolve an event's ``document`` object to the exact bytes, checking size and sha256.

    ``max_bytes``: a document over it is refused (``DOCUMENT_TOO_LARGE``) before its bytes are decoded or read:
    by the event's ``size``, then by the inline text's length or the stored object's size (the event may lie)."""
    if max_bytes is not None:
        too_large(int(doc_field.get("size") or 0), max_bytes)
    if "inline" in doc_field:
        if max_bytes is not None:  # base64: 4 characters for every 3 bytes
            too_large(len(doc_field["inline"]) * 3 // 4, max_bytes)
        try:
            data = base64.b64decode(doc_field["inline"], validate=True)
        except (binascii.Error, ValueError):
            raise PermanentError("document.inline is not valid base64", reason="DOCUMENT_CORRUPT") from None
    elif "ref" in doc_field:
        if store is None:
            raise ConfigurationError("event references a stored document but no document store is configured")
        data = (
            store.get(doc_field["ref"])
            if max_bytes is None
            else store.get(doc_field["ref"], max_bytes=max_bytes)
        )
    else:
        raise PermanentError("document has neither inline bytes nor a ref", reason="DOCUMENT_CORRUPT")
    if len(data) != doc_field.get("size") or sha256_hex(data) != doc_field.get("sha256"):
        raise PermanentError("document bytes do not match the event's size/sha256", reason="DOCUMENT_CORRUPT")
    return data


def by_reference(doc_field: dict[str, Any], data: bytes, store: DocumentStore) -> dict[str, Any]:
    """The ``document`` object of every event after ``created``: a reference, as it came or, for an inline
    document, after putting its exact bytes ``data`` (already checked against ``doc_field``) into ``store``."""
    if "ref" in doc_field:
        return doc_field
    return {**{k: v for k, v in doc_field.items() if k != "inline"}, "ref": store.put(data)}


#: what the signer puts into its store at start (content-addressed, so its name is the same everywhere): a
#: process that serves the signer's references finds it only in the same store
SIGNER_MARK = b"emd-pipeline: the signer's claim-check store; documents after emd.document.created are here\n"


def mark_signer_store(store: DocumentStore) -> str:
    """The signer's start: put :data:`SIGNER_MARK` (which also proves the store writable with its credentials)."""
    return store.put(SIGNER_MARK)


def require_signer_store(
    store: DocumentStore,
    *,
    wait: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """The callback service's start: ``ConfigurationError`` unless the signer's mark is in ``store`` within
    ``wait`` seconds (a signer starting alongside has that long to write it).

    Without it every getDocumentFile would fail one document at a time, as РЭМД's rejection hours later: the
    signer's references point into a store this process does not see (another ``EMD_DOCUMENT_STORE``, a volume
    that is not shared, another bucket).
    """
    ref, deadline, why = store.ref_for(SIGNER_MARK), clock() + wait, ""
    while True:
        try:
            if store.exists(ref):
                return
            why = "holds no mark of a signer"
        except (TransientError, PermanentError) as exc:
            why = f"cannot be read ({exc.message})"
        if clock() >= deadline:
            raise ConfigurationError(
                f"the document store {store} {why} after {wait:.0f} s: the signer puts every signed document there "
                "and this service serves them to РЭМД by reference, so both need the same EMD_DOCUMENT_STORE (S3, or "
                "one volume mounted at the same path); on a new store, start the signer first"
            )
        sleep(min(0.5, max(0.0, deadline - clock())))

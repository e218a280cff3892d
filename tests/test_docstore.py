"""services.documents.store: content-addressed claim-check stores, SigV4 signing, inline/ref resolution."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from pathlib import Path

import httpx
import pytest

from producer.errors import ConfigurationError, PermanentError, TransientError
from services.config import Settings
from services.documents.store import (
    DocumentStore,
    FilesystemStore,
    S3Store,
    by_reference,
    document_bytes,
    document_field,
    mark_signer_store,
    require_signer_store,
    sigv4_sign,
    store_from_settings,
)

EMPTY_SHA = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


# --- SigV4: the examples AWS publishes -----------------------------------------------------------


def test_sigv4_matches_aws_s3_get_object_example():
    """The signature equals AWS's documented S3 'GET Object' example (examplebucket/test.txt, Range)."""
    headers = sigv4_sign(
        "GET",
        "https://examplebucket.s3.amazonaws.com/test.txt",
        {"Range": "bytes=0-9", "x-amz-content-sha256": EMPTY_SHA, "x-amz-date": "20130524T000000Z"},
        payload_sha256=EMPTY_SHA,
        access_key="AKIAIOSFODNN7EXAMPLE",
        secret_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        region="us-east-1",
        now=dt.datetime(2013, 5, 24, tzinfo=dt.UTC),
    )
    assert headers["Authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    )


def test_sigv4_matches_aws_test_suite_get_vanilla():
    """The signature equals the AWS SigV4 test suite's get-vanilla vector."""
    headers = sigv4_sign(
        "GET",
        "https://example.amazonaws.com/",
        {"X-Amz-Date": "20150830T123600Z"},
        payload_sha256=EMPTY_SHA,
        access_key="AKIDEXAMPLE",
        secret_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        region="us-east-1",
        service="service",
        now=dt.datetime(2015, 8, 30, 12, 36, tzinfo=dt.UTC),
    )
    assert headers["Authorization"].endswith(
        "SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
    )


def test_sigv4_adds_date_when_absent():
    """Without a date header the signer adds x-amz-date for `now` and signs it."""
    headers = sigv4_sign(
        "HEAD",
        "http://minio:9000/b/k",
        {},
        payload_sha256=EMPTY_SHA,
        access_key="a",
        secret_key="s",
        region="ru-central1",
        now=dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
    )
    assert headers["x-amz-date"] == "20260102T030405Z"
    assert "SignedHeaders=host;x-amz-date," in headers["Authorization"]


# --- filesystem -------------------------------------------------------------------------------------


def test_filesystem_put_get_round_trip_is_content_addressed(tmp_path):
    """put stores under the SHA-256 name, is idempotent, and get returns the same bytes."""
    store = FilesystemStore(tmp_path / "docs")
    data = b"<ClinicalDocument/>" * 100
    ref = store.put(data)
    digest = hashlib.sha256(data).hexdigest()
    assert ref == (tmp_path / "docs" / digest[:2] / digest).as_uri()
    assert store.put(data) == ref
    assert store.get(ref) == data and store.exists(ref)
    assert isinstance(store, DocumentStore)
    assert not [p for p in (tmp_path / "docs").rglob("*.tmp")]


def test_filesystem_corrupt_file_is_permanent(tmp_path):
    """A stored file whose bytes no longer hash to its name is DOCUMENT_CORRUPT."""
    store = FilesystemStore(tmp_path)
    ref = store.put(b"original")
    Path(ref.removeprefix("file://")).write_bytes(b"tampered")
    with pytest.raises(PermanentError) as info:
        store.get(ref)
    assert info.value.reason == "DOCUMENT_CORRUPT"


def test_filesystem_missing_is_transient(tmp_path):
    """A well-formed reference to an absent object is a transient DOCUMENT_MISSING."""
    store = FilesystemStore(tmp_path)
    ref = store.put(b"x")
    Path(ref.removeprefix("file://")).unlink()
    assert not store.exists(ref)
    with pytest.raises(TransientError) as info:
        store.get(ref)
    assert info.value.reason == "DOCUMENT_MISSING"


def test_filesystem_refuses_foreign_references(tmp_path):
    """References outside the store root, or not named by a SHA-256, are DOCUMENT_REF_INVALID."""
    store = FilesystemStore(tmp_path / "a")
    for ref in (
        "file:///etc/passwd",
        f"file://{tmp_path}/b/{'0' * 2}/{'0' * 64}",
        "s3://bucket/" + "0" * 64,
        (tmp_path / "a" / "00" / "../../../etc/passwd").as_uri(),
    ):
        with pytest.raises(PermanentError) as info:
            store.get(ref)
        assert info.value.reason == "DOCUMENT_REF_INVALID"


def test_a_durable_put_fsyncs_the_file_and_its_directory_and_a_best_effort_one_neither(tmp_path, monkeypatch):
    """put() fsyncs the object and its directory before returning (a document is durable before its event);
    put(durable=False), the exchange archive's, fsyncs nothing and stores the same readable object."""
    import os

    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    store = FilesystemStore(tmp_path)
    store.put(b"<ClinicalDocument/>")
    assert len(synced) == 2
    ref = store.put(b"<soap:Envelope/>", durable=False)
    assert len(synced) == 2 and store.get(ref) == b"<soap:Envelope/>"


# --- S3 against an emulated server --------------------------------------------------------------------


class FakeS3:
    """Just enough S3 for the store: path-style PUT/GET/HEAD, checking SigV4 headers and body hashes."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        auth = request.headers.get("authorization", "")
        if not auth.startswith("AWS4-HMAC-SHA256 Credential=AK/") or "x-amz-date" not in request.headers:
            return httpx.Response(403)
        key = request.url.path
        if request.method == "PUT":
            if hashlib.sha256(request.content).hexdigest() != request.headers["x-amz-content-sha256"]:
                return httpx.Response(400, text="XAmzContentSHA256Mismatch")
            self.objects[key] = request.content
            return httpx.Response(200)
        if key not in self.objects:
            return httpx.Response(404)
        return httpx.Response(200, content=self.objects[key] if request.method == "GET" else b"")


@pytest.fixture
def s3():
    server = FakeS3()
    store = S3Store(
        endpoint="http://minio:9000",
        bucket="emd",
        prefix="docs/",
        access_key="AK",
        secret_key="SK",
        client=httpx.Client(transport=httpx.MockTransport(server)),
    )
    return server, store


def test_s3_put_get_head_round_trip(s3):
    """S3Store PUTs signed, content-addressed objects and GETs/HEADs them back verified."""
    server, store = s3
    data = b"\x00\x01document" * 1000
    ref = store.put(data)
    digest = hashlib.sha256(data).hexdigest()
    assert ref == f"s3://emd/docs/{digest}"
    assert server.requests[0].url.path == f"/emd/docs/{digest}"
    assert store.get(ref) == data
    assert store.exists(ref)
    assert [r.method for r in server.requests] == ["PUT", "GET", "HEAD"]


def test_s3_missing_and_corrupt(s3):
    """A 404 is transient DOCUMENT_MISSING; bytes that do not hash to the name are DOCUMENT_CORRUPT."""
    server, store = s3
    ref = f"s3://emd/docs/{'a' * 64}"
    assert not store.exists(ref)
    with pytest.raises(TransientError) as info:
        store.get(ref)
    assert info.value.reason == "DOCUMENT_MISSING"
    server.objects[f"/emd/docs/{'a' * 64}"] = b"wrong"
    with pytest.raises(PermanentError) as info:
        store.get(ref)
    assert info.value.reason == "DOCUMENT_CORRUPT"


def test_s3_server_errors_are_transient_and_auth_errors_configuration():
    """5xx/429 become DOCUMENT_STORE_UNAVAILABLE (retry); 403 is a ConfigurationError."""
    for status, exc_type in ((503, TransientError), (429, TransientError), (403, ConfigurationError)):
        store = S3Store(
            endpoint="http://s3",
            bucket="b",
            access_key="AK",
            secret_key="SK",
            client=httpx.Client(transport=httpx.MockTransport(lambda r, s=status: httpx.Response(s))),
        )
        with pytest.raises(exc_type):
            store.put(b"x")


def test_s3_refuses_other_bucket(s3):
    """A reference into another bucket or prefix is DOCUMENT_REF_INVALID, not fetched."""
    server, store = s3
    with pytest.raises(PermanentError) as info:
        store.get(f"s3://other/docs/{'a' * 64}")
    assert info.value.reason == "DOCUMENT_REF_INVALID" and not server.requests


# --- settings and the event field ------------------------------------------------------------------


def test_store_from_settings(tmp_path):
    """Empty EMD_DOCUMENT_STORE is <data_dir>/documents; file:// and s3:// pick their backends."""
    fs = store_from_settings(Settings(data_dir=tmp_path))
    assert isinstance(fs, FilesystemStore) and fs.root == (tmp_path / "documents").resolve()
    assert (
        store_from_settings(Settings(document_store_url=f"file://{tmp_path}/x")).root
        == (tmp_path / "x").resolve()
    )
    s3 = store_from_settings(
        Settings(
            document_store_url="s3://bkt/pre", s3_endpoint="http://s3", s3_access_key="a", s3_secret_key="b"
        )
    )
    assert isinstance(s3, S3Store) and s3.bucket == "bkt" and s3.prefix == "pre"
    with pytest.raises(ConfigurationError):
        store_from_settings(Settings(document_store_url="ftp://x"))


def test_document_field_inline_below_limit_and_ref_above(tmp_path):
    """Up to the limit the bytes go inline; above it they are stored and referenced; both resolve back."""
    store = FilesystemStore(tmp_path)
    small, big = b"a" * 10, b"b" * 11
    f_small = document_field(small, store, inline_limit=10)
    f_big = document_field(big, store, inline_limit=10)
    assert base64.b64decode(f_small["inline"]) == small and "ref" not in f_small
    assert f_big["ref"].startswith("file://") and "inline" not in f_big and f_big["size"] == 11
    assert document_bytes(f_small, store) == small and document_bytes(f_big, store) == big


def test_document_bytes_checks_the_event_hash(tmp_path):
    """Inline bytes or a stored object that do not match the event's sha256/size are DOCUMENT_CORRUPT."""
    store = FilesystemStore(tmp_path)
    field = document_field(b"payload", store, inline_limit=100)
    field["sha256"] = "0" * 64
    with pytest.raises(PermanentError) as info:
        document_bytes(field, store)
    assert info.value.reason == "DOCUMENT_CORRUPT"
    other = document_field(b"other-bytes", store, inline_limit=0)
    other["size"] = 3
    with pytest.raises(PermanentError):
        document_bytes(other, store)


# --- after created: by reference, in the signer's store ---------------------------------------------


def test_by_reference_stores_an_inline_document_and_keeps_a_reference(tmp_path):
    """An inline document becomes a reference to its exact bytes with the same sha256, size and media type;
    a document already by reference is left as it is (nothing stored again)."""
    store = FilesystemStore(tmp_path)
    data = b"<ClinicalDocument>signed bytes</ClinicalDocument>"
    inline = document_field(data, None, inline_limit=len(data))
    field = by_reference(inline, data, store)
    assert set(field) == {"sha256", "size", "mediaType", "ref"} and "inline" in inline
    assert {k: field[k] for k in ("sha256", "size", "mediaType")} == {
        k: inline[k] for k in ("sha256", "size", "mediaType")
    }
    assert document_bytes(field, store) == data
    referenced = document_field(b"large", store, inline_limit=0)
    assert by_reference(referenced, b"large", FilesystemStore(tmp_path / "elsewhere")) is referenced
    assert not (tmp_path / "elsewhere").exists()


def test_the_callback_service_check_finds_the_signers_mark_and_refuses_another_store(tmp_path):
    """require_signer_store returns once the signer has marked the store (here during the wait), and a store the
    signer never marked is a ConfigurationError after the wait, naming EMD_DOCUMENT_STORE and the store."""
    signers, other = FilesystemStore(tmp_path / "shared"), FilesystemStore(tmp_path / "not-shared")
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds
        if now[0] >= 1.0:
            mark_signer_store(signers)  # a signer starting alongside

    require_signer_store(signers, wait=5.0, clock=lambda: now[0], sleep=sleep)
    assert now[0] < 5.0
    with pytest.raises(ConfigurationError, match="EMD_DOCUMENT_STORE") as info:
        require_signer_store(other, wait=2.0, clock=lambda: now[0], sleep=sleep)
    assert str(other) in info.value.message and "holds no mark of a signer" in info.value.message


# --- size limits: refused before the bytes are read (issue #20, memory) ------------------------------


def test_an_event_over_the_size_limit_is_refused_before_anything_is_fetched(tmp_path):
    """The event's size over max_bytes: DOCUMENT_TOO_LARGE without touching a store (there need not be one)."""
    field = {"sha256": "0" * 64, "size": 2_000_000, "mediaType": "text/xml", "ref": "file:///nowhere"}
    with pytest.raises(PermanentError) as refused:
        document_bytes(field, None, max_bytes=1_000_000)
    assert (refused.value.reason, refused.value.details["size"]) == ("DOCUMENT_TOO_LARGE", 2_000_000)


def test_a_stored_object_larger_than_its_event_says_is_refused_before_it_is_read(tmp_path, monkeypatch):
    """A МИС whose event says 100 bytes but references a 5,000-byte object: the file store refuses it by the
    file's size, before reading a byte of it."""
    store = FilesystemStore(tmp_path / "docs")
    big = b"<x/>" * 1250
    ref = store.put(big)
    field = {"sha256": hashlib.sha256(big).hexdigest(), "size": 100, "mediaType": "text/xml", "ref": ref}

    def no_read(self):
        raise AssertionError(f"{self} was read")

    monkeypatch.setattr(Path, "read_bytes", no_read)
    with pytest.raises(PermanentError) as refused:
        document_bytes(field, store, max_bytes=1000)
    assert (refused.value.reason, refused.value.details["size"]) == ("DOCUMENT_TOO_LARGE", 5000)


def test_an_inline_document_longer_than_the_limit_is_refused_before_it_is_decoded(monkeypatch):
    """Inline base64 text that would decode to more than max_bytes is refused by its length, not decoded."""
    import services.documents.store as docstore

    data = b"a" * 3000
    field = {"sha256": hashlib.sha256(data).hexdigest(), "size": 10, "mediaType": "text/xml"}
    field["inline"] = base64.b64encode(data).decode()
    monkeypatch.setattr(docstore.base64, "b64decode", lambda *a, **k: pytest.fail("decoded"))
    with pytest.raises(PermanentError) as refused:
        document_bytes(field, None, max_bytes=1000)
    assert refused.value.reason == "DOCUMENT_TOO_LARGE"


def test_an_s3_object_over_the_limit_is_refused_after_at_most_the_limit_and_one_chunk():
    """S3 GET with a limit streams: an object announced larger is refused by its Content-Length, and one that does
    not announce its length is cut off once more than the limit has arrived, the rest never read."""
    limit, chunk = 10_000, 1024
    sent: list[int] = []

    def body():
        for _ in range(100):  # 100 KiB on offer
            sent.append(chunk)
            yield b"x" * chunk

    def server(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("a" * 64):
            return httpx.Response(200, headers={"content-length": str(10**9)}, content=b"")
        return httpx.Response(200, content=body())

    store = S3Store(
        endpoint="http://s3",
        bucket="b",
        access_key="AK",
        secret_key="SK",
        client=httpx.Client(transport=httpx.MockTransport(server)),
    )
    for digest in ("a" * 64, "b" * 64):
        with pytest.raises(PermanentError) as refused:
            store.get(f"s3://b/{digest}", max_bytes=limit)
        assert refused.value.reason == "DOCUMENT_TOO_LARGE"
    assert sum(sent) <= limit + chunk

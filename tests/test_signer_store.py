"""Requests signed by our signer, judged by a real SeaweedFS S3 server."""

from __future__ import annotations

import base64
import hashlib
import zlib
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit
from xml.etree import ElementTree

import httpx
import pytest

from signproxy.chunked import (
    ChunkSigner,
    Resigner,
    StreamEncoder,
    checksum_trailer_lengths,
    encoded_length,
)
from signproxy.seaweed import Identity, LocalStore
from signproxy.sigv4 import (
    EMPTY_SHA256,
    STREAMING_SIGNED,
    STREAMING_SIGNED_TRAILER,
    STREAMING_UNSIGNED_TRAILER,
    UNSIGNED_PAYLOAD,
    Credentials,
    SignedRequest,
    Signer,
)

SIGNER = Signer("us-east-1")
CHUNK = 64 * 1024


class S3:
    """A tiny S3 client whose every signature comes from our Signer."""

    def __init__(self, endpoint: str, credentials: Credentials):
        self.endpoint = endpoint
        self.host = urlsplit(endpoint).netloc
        self.credentials = credentials
        self.http = httpx.Client(timeout=30.0)

    def sign(
        self,
        method: str,
        path: str,
        query: str = "",
        headers: Sequence[tuple[str, str]] = (),
        payload_hash: str = EMPTY_SHA256,
    ) -> tuple[SignedRequest, list[tuple[str, str]]]:
        all_headers = [("host", self.host), *headers]
        signed = SIGNER.sign(
            method,
            path,
            query,
            all_headers,
            payload_hash,
            self.credentials,
            datetime.now(UTC),
        )
        return signed, [*all_headers, *signed.headers]

    def url(self, signed: SignedRequest) -> str:
        query = f"?{signed.query}" if signed.query else ""
        return f"{self.endpoint}{signed.path}{query}"

    def send(
        self,
        method: str,
        path: str,
        query: str = "",
        headers: Sequence[tuple[str, str]] = (),
        body: bytes | Iterator[bytes] = b"",
        payload_hash: str | None = None,
    ) -> httpx.Response:
        if payload_hash is None:
            assert isinstance(body, bytes)
            payload_hash = hashlib.sha256(body).hexdigest()
        signed, wire_headers = self.sign(method, path, query, headers, payload_hash)
        return self.http.request(
            method, self.url(signed), headers=wire_headers, content=body
        )

    def presigned_url(self, method: str, path: str, expires: int = 300) -> str:
        signed = SIGNER.presign(
            method,
            path,
            "",
            [("host", self.host)],
            self.credentials,
            datetime.now(UTC),
            expires,
        )
        return self.url(signed)


@pytest.fixture(scope="module")
def s3(store: LocalStore, store_identity: Identity) -> Iterator[S3]:
    client = S3(
        store.endpoint,
        Credentials(store_identity.access_key, store_identity.secret_key),
    )
    yield client
    client.http.close()


@pytest.fixture
def bucket(s3: S3, bucket_name: str) -> str:
    response = s3.send("PUT", f"/{bucket_name}")
    assert response.status_code == 200, response.text
    return bucket_name


def listed_keys(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    root = ElementTree.fromstring(response.content)  # noqa: S314 - our own store
    return [
        element.text or "" for element in root.iter() if element.tag.endswith("Key")
    ]


def object_path(bucket: str, key: str) -> str:
    """The raw path a typical client sends: the key percent-encoded once."""
    return f"/{bucket}/{quote(key, safe='/~')}"


# --- plain requests with awkward keys ---------------------------------------

AWKWARD_KEYS = [
    "plain.txt",
    "with space.txt",
    "plus+sign.txt",
    "tilde~name",
    "equals=sign&amp",
    "unicode-한글-é.txt",
    "dir/sub/file",
    "semi;colon,comma@at!bang'quote(paren)*star$dollar",
    "percent%25literal",
]


@pytest.mark.parametrize("key", AWKWARD_KEYS)
def test_put_get_head_delete_awkward_keys(s3: S3, bucket: str, key: str) -> None:
    body = f"content of {key}".encode()
    path = object_path(bucket, key)

    assert s3.send("PUT", path, body=body).status_code == 200
    got = s3.send("GET", path)
    assert (got.status_code, got.content) == (200, body)
    head = s3.send("HEAD", path)
    assert head.status_code == 200
    assert head.headers["content-length"] == str(len(body))

    listing = s3.send("GET", f"/{bucket}", "list-type=2")
    assert listed_keys(listing) == [key]

    assert s3.send("DELETE", path).status_code == 204
    assert s3.send("GET", path).status_code == 404


def test_unencoded_raw_path_is_signed_as_forwarded(s3: S3, bucket: str) -> None:
    # a client that sends spaces and '+' raw: we canonicalize and forward that
    body = b"raw path"
    assert s3.send("PUT", f"/{bucket}/raw key+plus", body=body).status_code == 200
    got = s3.send("GET", object_path(bucket, "raw key+plus"))
    assert got.content == body


def test_encoded_slash_inside_a_segment_is_signed_as_sent(s3: S3, bucket: str) -> None:
    # We sign %2F as %2F, as AWS S3 does.  SeaweedFS 4.48 differs: it
    # canonicalizes the decoded path ("a/b"), so it refuses this signature.
    # A key with a slash is reachable with the slash sent plainly.
    refused = s3.send("PUT", f"/{bucket}/a%2Fb", body=b"encoded slash")
    assert refused.status_code == 403
    assert "SignatureDoesNotMatch" in refused.text
    assert s3.send("PUT", f"/{bucket}/a/b", body=b"plain slash").status_code == 200
    assert s3.send("GET", f"/{bucket}/a/b").content == b"plain slash"


@pytest.mark.parametrize("key", ["double//slash", "trailing/"])
def test_keys_with_empty_segments_are_signed_as_sent(
    s3: S3, bucket: str, key: str
) -> None:
    # No path normalization: the store accepts the signature over the exact
    # path.  (How SeaweedFS then names such objects is its own business.)
    response = s3.send("PUT", object_path(bucket, key), body=b"")
    assert response.status_code == 200, response.text
    assert s3.send("HEAD", object_path(bucket, key)).status_code == 200


def test_query_with_repeated_and_empty_values(s3: S3, bucket: str) -> None:
    for key in ("p/a", "p/b", "q/c"):
        s3.send("PUT", object_path(bucket, key), body=b"x")
    response = s3.send("GET", f"/{bucket}", "prefix=p%2F&list-type=2&delimiter=")
    assert listed_keys(response) == ["p/a", "p/b"]


def test_unsigned_payload(s3: S3, bucket: str) -> None:
    path = object_path(bucket, "unsigned")
    response = s3.send("PUT", path, body=b"abc", payload_hash=UNSIGNED_PAYLOAD)
    assert response.status_code == 200
    assert s3.send("GET", path).content == b"abc"


# --- integrity and refusals ---------------------------------------------------


def content_md5(body: bytes) -> str:
    return base64.b64encode(hashlib.md5(body).digest()).decode()  # noqa: S324


def test_content_md5_matching_body_is_accepted(s3: S3, bucket: str) -> None:
    body = b"checked by md5"
    path = object_path(bucket, "md5-ok")
    response = s3.send(
        "PUT", path, headers=[("content-md5", content_md5(body))], body=body
    )
    assert response.status_code == 200


def test_content_md5_mismatch_is_refused(s3: S3, bucket: str) -> None:
    path = object_path(bucket, "md5-bad")
    response = s3.send(
        "PUT", path, headers=[("content-md5", content_md5(b"other"))], body=b"body"
    )
    assert response.status_code == 400
    assert "BadDigest" in response.text
    assert s3.send("HEAD", path).status_code == 404


def test_wrong_secret_is_refused(s3: S3, bucket: str) -> None:
    wrong = S3(
        s3.endpoint,
        Credentials(s3.credentials.access_key, s3.credentials.secret_key + "x"),
    )
    response = wrong.send("GET", f"/{bucket}")
    assert response.status_code == 403
    assert "SignatureDoesNotMatch" in response.text


def test_tampered_path_is_refused(s3: S3, bucket: str) -> None:
    s3.send("PUT", object_path(bucket, "a"), body=b"a")
    _, headers = s3.sign("GET", object_path(bucket, "a"))
    response = s3.http.get(f"{s3.endpoint}/{bucket}/b", headers=headers)
    assert response.status_code == 403


# --- presigned URLs -----------------------------------------------------------


def test_presigned_put_then_get(s3: S3, bucket: str) -> None:
    path = object_path(bucket, "presigned key+é")
    put = httpx.put(s3.presigned_url("PUT", path), content=b"via presigned put")
    assert put.status_code == 200, put.text
    get = httpx.get(s3.presigned_url("GET", path))
    assert (get.status_code, get.content) == (200, b"via presigned put")


def test_presigned_url_with_wrong_secret_is_refused(s3: S3, bucket: str) -> None:
    wrong = S3(s3.endpoint, Credentials(s3.credentials.access_key, "not-the-secret"))
    response = httpx.get(wrong.presigned_url("GET", f"/{bucket}"))
    assert response.status_code == 403


# --- aws-chunked uploads ------------------------------------------------------


def chunked_headers(
    decoded: int, encoded: int, trailer_names: Sequence[str] = ()
) -> list[tuple[str, str]]:
    headers = [
        ("content-encoding", "aws-chunked"),
        ("x-amz-decoded-content-length", str(decoded)),
        ("content-length", str(encoded)),
    ]
    if trailer_names:
        headers.append(("x-amz-trailer", ",".join(trailer_names)))
    return headers


def put_chunked(
    s3: S3,
    path: str,
    data: bytes,
    payload_hash: str,
    trailer_names: Sequence[str] = (),
    *,
    chunk_size: int = CHUNK,
    trailers: Sequence[tuple[str, str]] | None = None,
) -> httpx.Response:
    signed_framing = payload_hash != STREAMING_UNSIGNED_TRAILER
    length = encoded_length(
        len(data),
        chunk_size,
        signed=signed_framing,
        trailer=checksum_trailer_lengths(trailer_names),
    )
    headers = chunked_headers(len(data), length, trailer_names)
    signed, wire_headers = s3.sign("PUT", path, "", headers, payload_hash)
    chunk_signer = (
        ChunkSigner(signed.signing_key, signed.amz_date, signed.scope, signed.signature)
        if signed_framing
        else None
    )
    encoder = StreamEncoder(chunk_size, chunk_signer, trailer_names)
    if trailers is not None:
        encoder.set_trailers(trailers)
    body = encoder(data) + encoder(b"")
    assert len(body) == length
    return s3.http.put(s3.url(signed), headers=wire_headers, content=body)


def test_three_chunk_signed_upload(s3: S3, bucket: str) -> None:
    data = bytes(range(256)) * 600  # 153600 bytes: 64 KiB, 64 KiB, 20 KiB
    path = object_path(bucket, "chunked three")
    response = put_chunked(s3, path, data, STREAMING_SIGNED)
    assert response.status_code == 200, response.text
    assert s3.send("GET", path).content == data


def test_bad_chunk_signature_is_refused(s3: S3, bucket: str) -> None:
    data = b"z" * (CHUNK + 10)
    path = object_path(bucket, "chunked-bad")
    headers = chunked_headers(len(data), encoded_length(len(data), CHUNK, signed=True))
    signed, wire_headers = s3.sign("PUT", path, "", headers, STREAMING_SIGNED)
    wrong_seed = ChunkSigner(
        signed.signing_key, signed.amz_date, signed.scope, "0" * 64
    )
    encoder = StreamEncoder(CHUNK, wrong_seed)
    response = s3.http.put(
        s3.url(signed), headers=wire_headers, content=encoder(data) + encoder(b"")
    )
    assert response.status_code >= 400
    assert s3.send("HEAD", path).status_code == 404


def crc32_b64(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


@pytest.mark.parametrize(
    "payload_hash", [STREAMING_SIGNED_TRAILER, STREAMING_UNSIGNED_TRAILER]
)
def test_chunked_upload_with_crc32_trailer(
    s3: S3, bucket: str, payload_hash: str
) -> None:
    data = b"trailer me " * 9000
    path = object_path(bucket, f"trailer-{payload_hash.lower()}")
    response = put_chunked(s3, path, data, payload_hash, ["x-amz-checksum-crc32"])
    assert response.status_code == 200, response.text
    assert s3.send("GET", path).content == data


@pytest.mark.parametrize(
    "payload_hash", [STREAMING_SIGNED_TRAILER, STREAMING_UNSIGNED_TRAILER]
)
def test_chunked_upload_with_wrong_crc32_is_refused(
    s3: S3, bucket: str, payload_hash: str
) -> None:
    data = b"trailer me " * 9000
    path = object_path(bucket, f"bad-trailer-{payload_hash.lower()}")
    response = put_chunked(
        s3,
        path,
        data,
        payload_hash,
        ["x-amz-checksum-crc32"],
        trailers=[("x-amz-checksum-crc32", crc32_b64(b"something else"))],
    )
    assert response.status_code == 400, response.text
    assert s3.send("HEAD", path).status_code == 404


@pytest.mark.parametrize(
    ("client_chunk", "trailer_names"),
    [(8192, ()), (100_000, ()), (8192, ("x-amz-checksum-crc32",))],
)
def test_resigned_client_stream_is_accepted(
    s3: S3, bucket: str, client_chunk: int, trailer_names: tuple[str, ...]
) -> None:
    # A client signed its aws-chunked body with dummy keys; we re-sign it.
    data = bytes(range(251)) * 700
    dummy = Signer("us-east-1").signing_key(Credentials("DUMMY", "dummy"), "20260101")
    client = StreamEncoder(
        client_chunk,
        ChunkSigner(dummy, "20260101T000000Z", "x", "1" * 64),
        trailer_names,
    )
    client_body = client(data) + client(b"")

    payload_hash = STREAMING_SIGNED_TRAILER if trailer_names else STREAMING_SIGNED
    length = encoded_length(
        len(data), CHUNK, signed=True, trailer=checksum_trailer_lengths(trailer_names)
    )
    path = object_path(bucket, f"resigned-{client_chunk}-{len(trailer_names)}")
    headers = chunked_headers(len(data), length, trailer_names)
    signed, wire_headers = s3.sign("PUT", path, "", headers, payload_hash)
    resigner = Resigner(
        CHUNK,
        ChunkSigner(
            signed.signing_key, signed.amz_date, signed.scope, signed.signature
        ),
        trailer_names,
        expected_length=len(data),
    )

    def stream() -> Iterator[bytes]:
        for start in range(0, len(client_body), 10_000):
            yield resigner(client_body[start : start + 10_000])
        yield resigner(b"")

    response = s3.http.put(s3.url(signed), headers=wire_headers, content=stream())
    assert response.status_code == 200, response.text
    assert s3.send("GET", path).content == data

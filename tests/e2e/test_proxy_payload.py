"""Every payload path of the proxy, driven by raw HTTP so each is chosen exactly.

A client is mimicked with httpx: dummy Authorization, and the body framing
under test.  Each upload carries Content-MD5 or a checksum trailer that
SeaweedFS verifies, and is read back byte for byte.  The proxy's debug log
names the payload plan it chose, so each test also proves which path ran.
"""

from __future__ import annotations

import base64
import hashlib
import os
import zlib
from collections.abc import Iterator

import httpx
import pytest

from signproxy import chunked, sigv4
from tests.fixtures.proxy import RunningProxy, StartProxy

DUMMY_AUTH = (
    "AWS4-HMAC-SHA256 Credential=AKIDUMMY/20240101/us-east-1/s3/aws4_request, "
    "SignedHeaders=host;x-amz-date, Signature=" + "0" * 64
)
CHUNK = 64 * 1024


def md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()  # noqa: S324


def crc32_b64(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def client_headers(**extra: str) -> dict[str, str]:
    return {
        "authorization": DUMMY_AUTH,
        "x-amz-date": "20240101T000000Z",
        **{k.replace("_", "-"): v for k, v in extra.items()},
    }


@pytest.fixture
def small_limit_proxy(start_proxy: StartProxy) -> RunningProxy:
    """A proxy that hashes at most 1 MiB, so larger bodies must stream."""
    return start_proxy(hash_limit="1MiB")


@pytest.fixture
def bucket(small_limit_proxy: RunningProxy, bucket_name: str) -> str:
    url = f"{small_limit_proxy.endpoint}/{bucket_name}"
    assert httpx.put(url, headers=client_headers()).status_code == 200
    return bucket_name


def object_url(proxy: RunningProxy, bucket: str, key: str) -> str:
    return f"{proxy.endpoint}/{bucket}/{key}"


def read_back(proxy: RunningProxy, bucket: str, key: str) -> bytes:
    response = httpx.get(object_url(proxy, bucket, key), headers=client_headers())
    assert response.status_code == 200, response.text
    return response.content


def plans_logged(proxy: RunningProxy) -> list[str]:
    return [
        line.split("payload=")[1].split()[0]
        for line in proxy.log_text().splitlines()
        if "payload=" in line and "signproxy.addon" in line
    ]


def test_small_body_without_hash_is_buffered_and_hashed(small_limit_proxy, bucket):
    body = os.urandom(200 * 1024)
    url = object_url(small_limit_proxy, bucket, "hashed")
    response = httpx.put(
        url, content=body, headers=client_headers(content_md5=md5_b64(body))
    )

    assert response.status_code == 200, response.text
    assert read_back(small_limit_proxy, bucket, "hashed") == body
    assert "hashed" in plans_logged(small_limit_proxy)


def test_large_body_streams_as_signed_aws_chunked(small_limit_proxy, bucket):
    body = os.urandom(5 * 1024 * 1024 + 7)
    url = object_url(small_limit_proxy, bucket, "encoded")
    response = httpx.put(
        url, content=body, headers=client_headers(content_md5=md5_b64(body))
    )

    assert response.status_code == 200, response.text
    assert read_back(small_limit_proxy, bucket, "encoded") == body
    assert "chunked_signed" in plans_logged(small_limit_proxy)


def test_large_body_with_wrong_md5_is_refused_by_the_store(small_limit_proxy, bucket):
    body = os.urandom(3 * 1024 * 1024)
    url = object_url(small_limit_proxy, bucket, "bad-md5")
    headers = client_headers(content_md5=md5_b64(body + b"x"))
    response = httpx.put(url, content=body, headers=headers)

    assert response.status_code == 400
    assert b"BadDigest" in response.content


def test_client_sha256_is_reused_and_streamed(small_limit_proxy, bucket):
    body = os.urandom(3 * 1024 * 1024)
    url = object_url(small_limit_proxy, bucket, "client-hash")
    headers = client_headers(
        content_md5=md5_b64(body), x_amz_content_sha256=hashlib.sha256(body).hexdigest()
    )
    response = httpx.put(url, content=body, headers=headers)

    assert response.status_code == 200, response.text
    assert read_back(small_limit_proxy, bucket, "client-hash") == body
    assert "client_hash" in plans_logged(small_limit_proxy)


def unsigned_trailer_body(body: bytes, crc: str | None = None) -> bytes:
    encoder = chunked.StreamEncoder(CHUNK, None, ["x-amz-checksum-crc32"])
    if crc is not None:
        encoder.set_trailers([("x-amz-checksum-crc32", crc)])
    return encoder(body) + encoder(b"")


def unsigned_trailer_headers(body: bytes, framed: bytes) -> dict[str, str]:
    return client_headers(
        x_amz_content_sha256=sigv4.STREAMING_UNSIGNED_TRAILER,
        content_encoding="aws-chunked",
        x_amz_decoded_content_length=str(len(body)),
        x_amz_trailer="x-amz-checksum-crc32",
    )


def test_client_unsigned_trailer_passes_through(small_limit_proxy, bucket):
    # What boto3 and aws cli v2 send by default over https.
    body = os.urandom(2 * 1024 * 1024 + 5)
    framed = unsigned_trailer_body(body)
    url = object_url(small_limit_proxy, bucket, "unsigned-trailer")
    response = httpx.put(
        url, content=framed, headers=unsigned_trailer_headers(body, framed)
    )

    assert response.status_code == 200, response.text
    assert read_back(small_limit_proxy, bucket, "unsigned-trailer") == body
    assert response.headers.get("x-amz-checksum-crc32") in (None, crc32_b64(body))
    assert "chunked_resigned" in plans_logged(small_limit_proxy)


def test_client_unsigned_trailer_with_bad_crc_is_refused_by_the_store(
    small_limit_proxy, bucket
):
    body = os.urandom(100 * 1024)
    framed = unsigned_trailer_body(body, crc=crc32_b64(body + b"!"))
    url = object_url(small_limit_proxy, bucket, "bad-crc")
    response = httpx.put(
        url, content=framed, headers=unsigned_trailer_headers(body, framed)
    )

    assert response.status_code == 400, response.text


def dummy_signed_body(body: bytes, trailer: bool) -> tuple[bytes, dict[str, str]]:
    """aws-chunked signed with a key the store does not know, as a client would."""
    signer = chunked.ChunkSigner(
        b"k" * 32, "20240101T000000Z", "20240101/us-east-1/s3/aws4_request", "1" * 64
    )
    names = ["x-amz-checksum-crc32"] if trailer else []
    encoder = chunked.StreamEncoder(CHUNK, signer, names)
    framed = encoder(body) + encoder(b"")
    headers = client_headers(
        x_amz_content_sha256=(
            sigv4.STREAMING_SIGNED_TRAILER if trailer else sigv4.STREAMING_SIGNED
        ),
        content_encoding="aws-chunked",
        x_amz_decoded_content_length=str(len(body)),
        content_md5=md5_b64(body),
    )
    if trailer:
        headers["x-amz-trailer"] = "x-amz-checksum-crc32"
    return framed, headers


@pytest.mark.parametrize("trailer", [False, True], ids=["signed", "signed-trailer"])
def test_client_signed_chunks_are_resigned(small_limit_proxy, bucket, trailer):
    body = os.urandom(1024 * 1024 + 3)
    framed, headers = dummy_signed_body(body, trailer)
    url = object_url(small_limit_proxy, bucket, f"resigned-{trailer}")
    response = httpx.put(url, content=framed, headers=headers)

    assert response.status_code == 200, response.text
    assert read_back(small_limit_proxy, bucket, f"resigned-{trailer}") == body
    assert "chunked_resigned" in plans_logged(small_limit_proxy)


def test_payload_sign_turns_unsigned_trailer_into_signed(start_proxy, bucket_name):
    proxy = start_proxy(payload="sign")
    assert (
        httpx.put(
            f"{proxy.endpoint}/{bucket_name}", headers=client_headers()
        ).status_code
        == 200
    )
    body = os.urandom(300 * 1024)
    framed = unsigned_trailer_body(body)
    url = object_url(proxy, bucket_name, "now-signed")
    response = httpx.put(
        url, content=framed, headers=unsigned_trailer_headers(body, framed)
    )

    assert response.status_code == 200, response.text
    assert read_back(proxy, bucket_name, "now-signed") == body
    assert "chunked_resigned" in plans_logged(proxy)


def test_payload_unsigned_policy(start_proxy, bucket_name):
    proxy = start_proxy(payload="unsigned")
    assert (
        httpx.put(
            f"{proxy.endpoint}/{bucket_name}", headers=client_headers()
        ).status_code
        == 200
    )
    body = os.urandom(64 * 1024)
    url = object_url(proxy, bucket_name, "unsigned")
    response = httpx.put(
        url, content=body, headers=client_headers(content_md5=md5_b64(body))
    )

    assert response.status_code == 200, response.text
    assert read_back(proxy, bucket_name, "unsigned") == body
    assert "unsigned" in plans_logged(proxy)


def test_unknown_length_small_body_is_buffered(small_limit_proxy, bucket):
    body = os.urandom(300 * 1024)
    url = object_url(small_limit_proxy, bucket, "unknown-length")

    def pieces() -> Iterator[bytes]:
        yield from (body[i : i + 50_000] for i in range(0, len(body), 50_000))

    headers = client_headers(content_md5=md5_b64(body))
    response = httpx.put(url, content=pieces(), headers=headers)

    assert response.status_code == 200, response.text
    assert read_back(small_limit_proxy, bucket, "unknown-length") == body
    assert "hashed" in plans_logged(small_limit_proxy)


def test_unknown_length_large_body_is_refused_411(small_limit_proxy, bucket):
    url = object_url(small_limit_proxy, bucket, "too-long")

    def pieces() -> Iterator[bytes]:
        for _ in range(40):
            yield b"x" * 50_000

    response = httpx.put(url, content=pieces(), headers=client_headers())

    assert response.status_code == 411
    assert response.headers["server"] == "signproxy"
    assert b"<Code>MissingContentLength</Code>" in response.content


@pytest.fixture
def remote_proxy(start_proxy: StartProxy, emulator, request) -> RunningProxy:
    """The remote signer (object-store-authorization from the STS emulator)."""
    return start_proxy(
        signer="remote",
        hash_limit="1MiB",
        payload=request.param,
        static_keys=False,
        env=emulator.env(),
    )


@pytest.mark.parametrize("remote_proxy", ["sign"], indirect=True)
def test_remote_signer_refuses_large_body_when_unsigned_is_forbidden(
    remote_proxy, bucket_name
):
    bucket_url = f"{remote_proxy.endpoint}/{bucket_name}"
    assert httpx.put(bucket_url, headers=client_headers()).status_code == 200
    small = b"small enough to hash"
    url = object_url(remote_proxy, bucket_name, "small")
    response = httpx.put(
        url, content=small, headers=client_headers(content_md5=md5_b64(small))
    )
    assert response.status_code == 200, response.text

    body = os.urandom(2 * 1024 * 1024)
    url = object_url(remote_proxy, bucket_name, "large")
    response = httpx.put(
        url, content=body, headers=client_headers(content_md5=md5_b64(body))
    )

    assert response.status_code == 501
    assert response.headers["server"] == "signproxy"
    assert b"<Code>NotImplemented</Code>" in response.content
    assert b"--payload sign" in response.content
    missing = httpx.head(url, headers=client_headers())
    assert missing.status_code == 404


@pytest.mark.parametrize("remote_proxy", ["auto"], indirect=True)
def test_remote_signer_sends_large_body_unsigned_when_allowed(
    remote_proxy, bucket_name
):
    bucket_url = f"{remote_proxy.endpoint}/{bucket_name}"
    assert httpx.put(bucket_url, headers=client_headers()).status_code == 200
    body = os.urandom(2 * 1024 * 1024)
    url = object_url(remote_proxy, bucket_name, "large")
    response = httpx.put(
        url, content=body, headers=client_headers(content_md5=md5_b64(body))
    )

    assert response.status_code == 200, response.text
    assert read_back(remote_proxy, bucket_name, "large") == body
    assert "unsigned" in plans_logged(remote_proxy)

"""Client-key verification: botocore-signed requests in, verdicts out.

Requests are signed by botocore (an independent SigV4 implementation) with a
client key, and by AWS's own published streaming example, then checked by
`ClientVerifier` with the time injected.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials

from signproxy import chunked, sigv4
from signproxy.clientauth import (
    ChunkSignatureMismatch,
    ClientAuthError,
    ClientKeys,
    ClientVerifier,
    VerifyingDecoder,
    load_client_keys,
    read_keys_file,
)

ACCESS_KEY = "PROXYCLIENT01"
SECRET = "client-secret-Zq8v/4xL+never-logged"
OTHER_KEY = "PROXYCLIENT02"
OTHER_SECRET = "another-client-secret-77"
KEYS = ClientKeys({ACCESS_KEY: SECRET, OTHER_KEY: OTHER_SECRET})
ENDPOINT = "http://127.0.0.1:8080"

EXAMPLE = json.loads(
    (Path(__file__).parent / "vectors" / "s3" / "chunked-put-object.json").read_text()
)


def boto_signed(
    method: str,
    url: str,
    *,
    secret: str = SECRET,
    access_key: str = ACCESS_KEY,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    presign_expires: int | None = None,
) -> tuple[str, str, str, list[tuple[str, str]]]:
    """(method, path, query, headers) of a request signed by botocore."""
    request = AWSRequest(method=method, url=url, data=body, headers=headers or {})
    credentials = BotoCredentials(access_key, secret)
    if presign_expires is None:
        S3SigV4Auth(credentials, "s3", "us-east-1").add_auth(request)
    else:
        S3SigV4QueryAuth(
            credentials, "s3", "us-east-1", expires=presign_expires
        ).add_auth(request)
    prepared = request.prepare()
    parts = urlsplit(prepared.url)
    fields = [(name, value) for name, value in prepared.headers.items()]
    fields.append(("Host", parts.netloc))
    return method, parts.path, parts.query, fields


def verify(request: tuple[str, str, str, list[tuple[str, str]]], now=None):
    method, path, query, headers = request
    return ClientVerifier(KEYS).verify(
        method, path, query, headers, now or datetime.now(UTC)
    )


def test_botocore_header_signature_is_accepted() -> None:
    request = boto_signed(
        "PUT",
        f"{ENDPOINT}/bucket/some/key.txt?tagging",
        body=b"hello world",
        headers={"Content-Type": "text/plain", "x-amz-meta-colour": "  blue   sky "},
    )
    verified = verify(request)
    assert verified.access_key == ACCESS_KEY
    assert not verified.presigned
    assert verified.payload_hash == sigv4.hashlib.sha256(b"hello world").hexdigest()
    assert ACCESS_KEY in repr(verified)
    assert SECRET not in repr(verified)


@pytest.mark.parametrize(
    "key",
    [
        "with space.txt",
        "unicodé/ключ/キー.bin",
        "plus+sign",
        "percent%20literal",
        "equals=sign&amp",
        "double//slash",
        "tilde~star*(parens)",
    ],
)
def test_awkward_keys_verify(key: str) -> None:
    from urllib.parse import quote

    url = f"{ENDPOINT}/bucket/{quote(key, safe='/~')}?list-type=2&prefix=a%2Bb"
    assert verify(boto_signed("GET", url)).access_key == ACCESS_KEY


def test_second_client_key_is_accepted() -> None:
    request = boto_signed(
        "GET", f"{ENDPOINT}/bucket", access_key=OTHER_KEY, secret=OTHER_SECRET
    )
    assert verify(request).access_key == OTHER_KEY


def test_wrong_secret_is_signature_mismatch() -> None:
    request = boto_signed("GET", f"{ENDPOINT}/bucket/key", secret="not-the-secret")
    with pytest.raises(ClientAuthError, match="SignatureDoesNotMatch") as caught:
        verify(request)
    assert caught.value.status == 403
    assert SECRET not in str(caught.value)


def test_unknown_key_is_invalid_access_key_id() -> None:
    request = boto_signed("GET", f"{ENDPOINT}/bucket/key", access_key="NOBODY123")
    with pytest.raises(ClientAuthError, match=r"InvalidAccessKeyId.*NOBODY123"):
        verify(request)


@pytest.mark.parametrize(
    "tamper",
    ["path", "query", "method", "signed_header", "host", "drop_signed_header"],
)
def test_tampered_request_is_signature_mismatch(tamper: str) -> None:
    method, path, query, headers = boto_signed(
        "PUT",
        f"{ENDPOINT}/bucket/key?acl",
        body=b"x",
        headers={"x-amz-meta-a": "1"},
    )
    if tamper == "path":
        path = "/bucket/other-key"
    elif tamper == "query":
        query = "acl&versionId=1"
    elif tamper == "method":
        method = "DELETE"
    elif tamper == "signed_header":
        headers = [(n, "2" if n == "x-amz-meta-a" else v) for n, v in headers]
    elif tamper == "host":
        headers = [(n, "evil:1" if n == "Host" else v) for n, v in headers]
    else:
        headers = [(n, v) for n, v in headers if n != "x-amz-meta-a"]
    with pytest.raises(ClientAuthError, match="SignatureDoesNotMatch"):
        verify((method, path, query, headers))


def test_unsigned_header_may_change() -> None:
    method, path, query, headers = boto_signed("GET", f"{ENDPOINT}/bucket/key")
    headers.append(("X-Forwarded-For", "10.0.0.1"))
    assert verify((method, path, query, headers)).access_key == ACCESS_KEY


@pytest.mark.parametrize("minutes", [16, -16])
def test_skewed_date_is_refused(minutes: int) -> None:
    request = boto_signed("GET", f"{ENDPOINT}/bucket/key")
    later = datetime.now(UTC) + timedelta(minutes=minutes)
    with pytest.raises(ClientAuthError, match="RequestTimeTooSkewed") as caught:
        verify(request, later)
    assert caught.value.status == 403


def test_date_within_skew_is_accepted() -> None:
    request = boto_signed("GET", f"{ENDPOINT}/bucket/key")
    assert verify(request, datetime.now(UTC) + timedelta(minutes=14)).access_key


def test_presigned_url_replayed_within_validity_then_expired() -> None:
    request = boto_signed("GET", f"{ENDPOINT}/bucket/key.bin", presign_expires=60)
    assert "X-Amz-Signature=" in request[2]
    now = datetime.now(UTC)
    first = verify(request, now)
    again = verify(request, now + timedelta(seconds=30))  # a replay: S3 allows it
    assert first.presigned
    assert again.presigned
    assert again.access_key == ACCESS_KEY
    with pytest.raises(ClientAuthError, match="Request has expired") as caught:
        verify(request, now + timedelta(seconds=120))
    assert (caught.value.status, caught.value.code) == (403, "AccessDenied")


def test_presigned_url_with_wrong_secret_or_tampered_query() -> None:
    wrong = boto_signed("GET", f"{ENDPOINT}/b/k", presign_expires=60, secret="nope")
    with pytest.raises(ClientAuthError, match="SignatureDoesNotMatch"):
        verify(wrong)
    method, path, query, headers = boto_signed(
        "GET", f"{ENDPOINT}/b/k", presign_expires=60
    )
    longer = query.replace("X-Amz-Expires=60", "X-Amz-Expires=600")
    with pytest.raises(ClientAuthError, match="SignatureDoesNotMatch"):
        verify((method, path, longer, headers))


def test_request_without_signature_is_access_denied() -> None:
    with pytest.raises(ClientAuthError, match=r"AccessDenied.*Anonymous") as caught:
        verify(("GET", "/bucket", "", [("Host", "127.0.0.1:8080")]))
    assert caught.value.status == 403


@pytest.mark.parametrize(
    ("authorization", "match"),
    [
        ("AWS AKID:c2lnbmF0dXJl", "Signature Version 4 only"),
        ("Bearer abc", "unsupported algorithm"),
        (f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/20240101/r/s3", "lacks"),
        (
            f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/x/r/s3/aws4_request, "
            "SignedHeaders=x-amz-date, Signature=" + "0" * 64,
            "including host",
        ),
        (
            f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/20240101/r/s3/aws4_request, "
            "SignedHeaders=host, Signature=XYZ",
            "64 lower-case hex",
        ),
    ],
)
def test_malformed_authorization_is_refused(authorization: str, match: str) -> None:
    headers = [
        ("Host", "h"),
        ("Authorization", authorization),
        ("x-amz-date", "20240101T000000Z"),
        ("x-amz-content-sha256", sigv4.EMPTY_SHA256),
    ]
    with pytest.raises(ClientAuthError, match=match):
        verify(("GET", "/b", "", headers))


def test_scope_date_must_match_x_amz_date() -> None:
    method, path, query, headers = boto_signed("GET", f"{ENDPOINT}/b/k")
    headers = [
        (n, "20200101T000000Z" if n.lower() == "x-amz-date" else v) for n, v in headers
    ]
    with pytest.raises(ClientAuthError, match="credential scope date"):
        verify((method, path, query, headers), datetime(2020, 1, 1, tzinfo=UTC))


# --- AWS's published streaming example: seed and every chunk ----------------


def example_request() -> tuple[list[tuple[str, str]], ClientVerifier]:
    seed = EXAMPLE["expected"]["signature"]
    names = [n.lower() for n, _ in EXAMPLE["headers"]]
    signed_headers = ";".join(sorted([*names, "x-amz-content-sha256", "x-amz-date"]))
    headers = [
        *EXAMPLE["headers"],
        ("x-amz-date", "20130524T000000Z"),
        ("x-amz-content-sha256", EXAMPLE["payload_hash"]),
        (
            "Authorization",
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/"
            f"s3/aws4_request,SignedHeaders={signed_headers},Signature={seed}",
        ),
    ]
    verifier = ClientVerifier(
        ClientKeys({"AKIAIOSFODNN7EXAMPLE": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"})
    )
    return headers, verifier


EXAMPLE_TIME = datetime(2013, 5, 24, 0, 5, tzinfo=UTC)


def example_body() -> bytes:
    """AWS's example body, built from the documented chunk signatures."""
    out = []
    data = b"a" * EXAMPLE["decoded_length"]
    size = EXAMPLE["chunk_size"]
    pieces = [data[i : i + size] for i in range(0, len(data), size)] + [b""]
    chunks = EXAMPLE["expected"]["chunks"]
    assert len(chunks) == len(pieces)
    for piece, chunk in zip(pieces, chunks, strict=True):
        out.append(f"{len(piece):x};chunk-signature={chunk['signature']}\r\n".encode())
        out.append(piece + b"\r\n")
    return b"".join(out)


def decode_verified(decoder: VerifyingDecoder, body: bytes, step: int) -> bytes:
    pieces = []
    for i in range(0, len(body), step):
        pieces += decoder.feed(body[i : i + step])
    decoder.finish()
    return b"".join(pieces)


def test_aws_streaming_example_seed_verifies() -> None:
    headers, verifier = example_request()
    verified = verifier.verify("PUT", EXAMPLE["path"], "", headers, EXAMPLE_TIME)
    assert verified.signature == EXAMPLE["expected"]["signature"]
    assert verified.payload_hash == sigv4.STREAMING_SIGNED


@pytest.mark.parametrize("step", [1, 7, 8192, 1 << 20])
def test_aws_streaming_example_chunks_verify(step: int) -> None:
    headers, verifier = example_request()
    client = verifier.verify("PUT", EXAMPLE["path"], "", headers, EXAMPLE_TIME)
    body = example_body()
    assert len(body) == EXAMPLE["encoded_length"]
    decoder = VerifyingDecoder(client)
    assert decode_verified(decoder, body, step) == b"a" * EXAMPLE["decoded_length"]
    assert decoder.verified_chunks == 3


@pytest.mark.parametrize("where", ["data", "signature", "final_signature"])
def test_tampered_chunk_is_refused(where: str) -> None:
    headers, verifier = example_request()
    client = verifier.verify("PUT", EXAMPLE["path"], "", headers, EXAMPLE_TIME)
    body = bytearray(example_body())
    if where == "data":
        body[200] = ord("b")
    elif where == "signature":
        index = body.index(b"chunk-signature=") + len(b"chunk-signature=")
        body[index] = ord("0") if body[index] != ord("0") else ord("1")
    else:
        index = body.rindex(b"chunk-signature=") + len(b"chunk-signature=")
        body[index + 5] = ord("0") if body[index + 5] != ord("0") else ord("1")
    with pytest.raises(ChunkSignatureMismatch, match="does not match the client key"):
        decode_verified(VerifyingDecoder(client), bytes(body), 4096)


def test_unsigned_chunk_in_signed_stream_is_refused() -> None:
    headers, verifier = example_request()
    client = verifier.verify("PUT", EXAMPLE["path"], "", headers, EXAMPLE_TIME)
    with pytest.raises(ChunkSignatureMismatch, match="no chunk-signature"):
        decode_verified(VerifyingDecoder(client), b"3\r\nabc\r\n0\r\n\r\n", 100)


def test_signed_trailer_verifies_and_tampered_trailer_is_refused() -> None:
    signer = sigv4.Signer("us-east-1")
    now = datetime.now(UTC)
    signed = signer.sign(
        "PUT",
        "/b/k",
        "",
        [("host", "h"), ("x-amz-trailer", "x-amz-checksum-crc32")],
        sigv4.STREAMING_SIGNED_TRAILER,
        sigv4.Credentials(ACCESS_KEY, SECRET),
        now,
    )
    headers = [
        ("host", "h"),
        ("x-amz-trailer", "x-amz-checksum-crc32"),
        *signed.headers,
    ]
    client = ClientVerifier(KEYS).verify("PUT", "/b/k", "", headers, now)
    seed = chunked.ChunkSigner(
        signed.signing_key, signed.amz_date, signed.scope, signed.signature
    )
    encoder = chunked.StreamEncoder(8192, seed, trailer_names=("x-amz-checksum-crc32",))
    data = bytes(range(256)) * 100
    body = encoder(data) + encoder(b"")
    assert decode_verified(VerifyingDecoder(client), body, 1000) == data
    # Change one character of the checksum value itself.
    start = body.index(b"x-amz-checksum-crc32:") + len(b"x-amz-checksum-crc32:")
    flipped = bytearray(body)
    flipped[start] = ord("A") if flipped[start] != ord("A") else ord("B")
    with pytest.raises(ChunkSignatureMismatch, match="trailer signature"):
        decode_verified(VerifyingDecoder(client), bytes(flipped), 1000)


# --- loading keys --------------------------------------------------------------


def test_keys_from_env_and_repr_hides_secrets() -> None:
    keys = load_client_keys(
        [ACCESS_KEY], environ={f"SIGNPROXY_CLIENT_SECRET_{ACCESS_KEY}": SECRET}
    )
    assert keys.secret(ACCESS_KEY) == SECRET
    assert SECRET not in repr(keys)
    assert ACCESS_KEY in repr(keys)


def test_key_without_secret_names_the_variable() -> None:
    with pytest.raises(ValueError, match=r"--client-key.*SIGNPROXY_CLIENT_SECRET_ABC1"):
        load_client_keys(["ABC1"], environ={})


def test_bad_access_key_is_named() -> None:
    with pytest.raises(ValueError, match="--client-key: invalid access key 'a/b'"):
        load_client_keys(["a/b"], environ={})


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("keys.toml", f'{ACCESS_KEY} = "{SECRET}"\n{OTHER_KEY} = "{OTHER_SECRET}"\n'),
        ("keys.json", json.dumps({ACCESS_KEY: SECRET, OTHER_KEY: OTHER_SECRET})),
        ("keys.toml", f'[client_keys]\n{ACCESS_KEY} = "{SECRET}"\n'
                      f'{OTHER_KEY} = "{OTHER_SECRET}"\n'),
    ],
)  # fmt: skip
def test_keys_file(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    keys = load_client_keys([ACCESS_KEY], path, environ={})
    assert keys.secret(ACCESS_KEY) == SECRET
    assert keys.secret(OTHER_KEY) == OTHER_SECRET


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (f'{ACCESS_KEY} = "{SECRET}', "not valid TOML or JSON"),
        ("{}", "want a table"),
        (f"{ACCESS_KEY} = 5", "must be a non-empty string"),
        ('"bad key" = "x"', "invalid access key 'bad key'"),
    ],
)
def test_bad_keys_file_is_named_without_secret(
    tmp_path: Path, text: str, match: str
) -> None:
    path = tmp_path / "keys.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=match) as caught:
        read_keys_file(path)
    assert "--client-keys-file" in str(caught.value)
    assert SECRET not in str(caught.value)


def test_missing_keys_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"--client-keys-file.*cannot read"):
        read_keys_file(tmp_path / "nope.toml")


def test_verifier_needs_keys() -> None:
    with pytest.raises(ValueError, match="at least one client key"):
        ClientVerifier(ClientKeys({}))


# --- through a running proxy: real processes, real store ----------------------


@pytest.fixture
def guarded_proxy(start_proxy, tmp_path: Path):
    """A proxy that requires client keys: one from env, one from a file."""
    keys_file = tmp_path / "client-keys.toml"
    keys_file.write_text(f'{OTHER_KEY} = "{OTHER_SECRET}"\n')
    return start_proxy(
        extra_args=["--client-key", ACCESS_KEY, "--client-keys-file", str(keys_file)],
        env={f"SIGNPROXY_CLIENT_SECRET_{ACCESS_KEY}": SECRET},
        hash_limit="1MiB",
    )


def client_s3(
    endpoint: str, access_key: str = ACCESS_KEY, secret: str = SECRET, **config
):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        config=Config(
            s3={"addressing_style": "path"}, retries={"max_attempts": 1}, **config
        ),
    )


def test_proxy_serves_holders_of_client_keys(guarded_proxy, bucket_name) -> None:
    import base64
    import hashlib

    import httpx

    s3 = client_s3(guarded_proxy.endpoint)
    s3.create_bucket(Bucket=bucket_name)
    small = b"small body " * 100
    s3.put_object(
        Bucket=bucket_name,
        Key="small",
        Body=small,
        ContentMD5=base64.b64encode(hashlib.md5(small).digest()).decode(),  # noqa: S324
    )
    big = bytes(range(256)) * (12 * 4096)  # 12 MiB: streamed
    s3.put_object(Bucket=bucket_name, Key="big", Body=big)
    other = client_s3(guarded_proxy.endpoint, OTHER_KEY, OTHER_SECRET)
    assert other.get_object(Bucket=bucket_name, Key="small")["Body"].read() == small
    assert s3.get_object(Bucket=bucket_name, Key="big")["Body"].read() == big
    params = {"Bucket": bucket_name, "Key": "small"}
    v4 = client_s3(guarded_proxy.endpoint, signature_version="s3v4")
    url = v4.generate_presigned_url("get_object", Params=params, ExpiresIn=300)
    # A presigned URL may be used again while it is valid (S3 semantics).
    assert httpx.get(url, timeout=30).content == small
    assert httpx.get(url, timeout=30).content == small
    # boto3's default presigning is Signature Version 2: not a client key proof.
    v2_url = s3.generate_presigned_url("get_object", Params=params, ExpiresIn=300)
    refused = httpx.get(v2_url, timeout=30)
    assert refused.status_code == 403
    assert "Signature Version 4 only" in refused.text
    assert "client authentication on: 2 client key(s)" in guarded_proxy.log_text()


@pytest.mark.parametrize(
    ("access_key", "secret", "code"),
    [
        (ACCESS_KEY, "wrong-secret", "SignatureDoesNotMatch"),
        ("NOTAPROXYKEY", SECRET, "InvalidAccessKeyId"),
    ],
)
def test_proxy_refuses_wrong_keys(
    guarded_proxy, bucket_name, access_key: str, secret: str, code: str
) -> None:
    from botocore.exceptions import ClientError

    s3 = client_s3(guarded_proxy.endpoint, access_key, secret)
    with pytest.raises(ClientError, match=code) as caught:
        s3.create_bucket(Bucket=bucket_name)
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert SECRET not in guarded_proxy.log_text()


def _ours_signed(endpoint: str, path: str, now: datetime, **presign: int):
    host = urlsplit(endpoint).netloc
    signer = sigv4.Signer("us-east-1")
    credentials = sigv4.Credentials(ACCESS_KEY, SECRET)
    if presign:
        signed = signer.presign(
            "GET", path, "", [("host", host)], credentials, now, presign["expires"]
        )
        return f"{endpoint}{signed.path}?{signed.query}", {}
    signed = signer.sign(
        "GET", path, "", [("host", host)], sigv4.EMPTY_SHA256, credentials, now
    )
    return f"{endpoint}{signed.path}", dict(signed.headers)


def test_proxy_refuses_stale_expired_and_anonymous(guarded_proxy, bucket_name):
    import httpx

    client_s3(guarded_proxy.endpoint).create_bucket(Bucket=bucket_name)
    path = f"/{bucket_name}"
    now = datetime.now(UTC)
    url, headers = _ours_signed(guarded_proxy.endpoint, path, now)
    assert httpx.get(url, headers=headers, timeout=30).status_code == 200
    url, headers = _ours_signed(
        guarded_proxy.endpoint, path, now - timedelta(minutes=20)
    )
    answer = httpx.get(url, headers=headers, timeout=30)
    assert answer.status_code == 403
    assert "<Code>RequestTimeTooSkewed</Code>" in answer.text
    url, _ = _ours_signed(
        guarded_proxy.endpoint, path, now - timedelta(hours=1), expires=60
    )
    answer = httpx.get(url, timeout=30)
    assert answer.status_code == 403
    assert "<Message>Request has expired</Message>" in answer.text
    answer = httpx.get(f"{guarded_proxy.endpoint}{path}", timeout=30)
    assert answer.status_code == 403
    assert "<Code>AccessDenied</Code>" in answer.text


def _signed_stream_put(endpoint: str, path: str, data: bytes, tamper: bool):
    import httpx

    host = urlsplit(endpoint).netloc
    chunk_size = 64 * 1024
    headers = [
        ("host", host),
        ("content-encoding", "aws-chunked"),
        ("x-amz-decoded-content-length", str(len(data))),
    ]
    signed = sigv4.Signer("us-east-1").sign(
        "PUT",
        path,
        "",
        headers,
        sigv4.STREAMING_SIGNED,
        sigv4.Credentials(ACCESS_KEY, SECRET),
        datetime.now(UTC),
    )
    encoder = chunked.StreamEncoder(
        chunk_size,
        chunked.ChunkSigner(
            signed.signing_key, signed.amz_date, signed.scope, signed.signature
        ),
    )
    body = bytearray(encoder(data) + encoder(b""))
    if tamper:
        body[body.index(b"\r\n") + 100] ^= 0x01  # one bit of the first chunk
    sent = dict(headers[1:]) | dict(signed.headers)
    sent["content-length"] = str(len(body))
    return httpx.put(f"{endpoint}{path}", content=bytes(body), headers=sent, timeout=60)


def test_client_chunk_signatures_are_verified(guarded_proxy, bucket_name) -> None:
    s3 = client_s3(guarded_proxy.endpoint)
    s3.create_bucket(Bucket=bucket_name)
    data = bytes(range(256)) * 4096  # 1 MiB in 16 signed chunks
    good = _signed_stream_put(guarded_proxy.endpoint, f"/{bucket_name}/ok", data, False)
    assert good.status_code == 200, good.text
    assert s3.get_object(Bucket=bucket_name, Key="ok")["Body"].read() == data
    import httpx

    # The forged chunk is found mid-stream: the proxy drops the connection
    # (the store sees a truncated body); no answer can follow a half body.
    with pytest.raises(httpx.TransportError, match=r"disconnected|reset|closed"):
        _signed_stream_put(guarded_proxy.endpoint, f"/{bucket_name}/bad", data, True)
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError, match=r"404|Not Found|NoSuchKey"):
        s3.head_object(Bucket=bucket_name, Key="bad")
    assert "chunk signature 1 does not match the client key" in (
        guarded_proxy.log_text()
    )


def test_client_key_without_secret_stops_start_up(tmp_path: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "signproxy.cli", "run", "--upstream",
         "http://127.0.0.1:9", "--signer", "local", "--client-key", "NOSECRET1"],
        capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "SCP_ACCESS_KEY": "AKX", "SCP_SECRET_KEY": "s"},
    )  # fmt: skip
    assert result.returncode == 2
    assert "SIGNPROXY_CLIENT_SECRET_NOSECRET1" in result.stderr

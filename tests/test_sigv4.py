"""The SigV4 signer against AWS's published examples and its own rules."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from signproxy.sigv4 import (
    EMPTY_SHA256,
    STREAMING_SIGNED,
    UNSIGNED_PAYLOAD,
    Credentials,
    Signer,
    SigningError,
    amz_date,
    canonical_headers,
    canonical_path,
    canonical_query,
    parse_amz_date,
    sign_url,
)

VECTORS = Path(__file__).parent / "vectors"
S3_EXAMPLES = sorted((VECTORS / "s3").glob("*.json"))

# The key pair and moment every S3 documentation example uses.
DOC_CREDENTIALS = Credentials(
    "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
)
DOC_NOW = datetime(2013, 5, 24, tzinfo=UTC)
HOST = ("host", "examplebucket.s3.amazonaws.com")


def load(path: Path) -> dict:
    return json.loads(path.read_text())


# --- published S3 examples ------------------------------------------------


@pytest.mark.parametrize("path", S3_EXAMPLES, ids=[p.stem for p in S3_EXAMPLES])
def test_s3_documentation_example(path: Path) -> None:
    vector = load(path)
    signer = Signer("us-east-1", sign_content_length=vector.get("sign_length", False))
    headers = [tuple(pair) for pair in vector["headers"]]
    expected = vector["expected"]
    if vector.get("presign_expires"):
        signed = signer.presign(
            vector["method"],
            vector["path"],
            vector["query"],
            headers,
            DOC_CREDENTIALS,
            DOC_NOW,
            vector["presign_expires"],
        )
        assert signed.query.endswith(f"&X-Amz-Signature={expected['signature']}")
    else:
        signed = signer.sign(
            vector["method"],
            vector["path"],
            vector["query"],
            headers,
            vector["payload_hash"],
            DOC_CREDENTIALS,
            DOC_NOW,
        )
        assert signed.authorization.endswith(f"Signature={expected['signature']}")
    assert signed.canonical_request == "\n".join(expected["canonical_request"])
    assert signed.string_to_sign == "\n".join(expected["string_to_sign"])
    assert signed.signature == expected["signature"]


def test_s3_examples_are_all_present() -> None:
    names = {path.stem for path in S3_EXAMPLES}
    assert {
        "get-object-range",
        "put-object",
        "get-bucket-lifecycle",
        "get-bucket-list-objects",
    } <= names


def test_authorization_header_layout() -> None:
    signed = Signer("us-east-1").sign(
        "GET", "/test.txt", "", [HOST], EMPTY_SHA256, DOC_CREDENTIALS, DOC_NOW
    )
    assert signed.authorization == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/"
        "aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, "
        f"Signature={signed.signature}"
    )
    assert dict(signed.headers) == {
        "x-amz-content-sha256": EMPTY_SHA256,
        "x-amz-date": "20130524T000000Z",
        "authorization": signed.authorization,
    }


# --- canonical forms ------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        # already canonical: returned as is
        ("/", "/"),
        ("/bucket/key.txt", "/bucket/key.txt"),
        ("/b/a%20b", "/b/a%20b"),
        # no normalization: S3 keys may contain these
        ("/b//a", "/b//a"),
        ("/b/a/", "/b/a/"),
        ("/b/../a/./c", "/b/../a/./c"),
        # encoded once; an encoded slash stays inside its segment
        ("/b/a b", "/b/a%20b"),
        ("/b/a+b", "/b/a%2Bb"),
        ("/b/a%2Fb", "/b/a%2Fb"),
        ("/b/a%2fb", "/b/a%2Fb"),
        ("/b/a~b", "/b/a~b"),
        ("/b/a%7Eb", "/b/a~b"),
        ("/b/%41", "/b/A"),
        ("/b/é", "/b/%C3%A9"),
        ("/b/%C3%A9", "/b/%C3%A9"),
        ("/b/a=b&c", "/b/a%3Db%26c"),
        ("/b/100%", "/b/100%25"),
        ("/b/%zz", "/b/%25zz"),
        ("/test$file.text", "/test%24file.text"),
        ("", "/"),
    ],
)
def test_canonical_path(raw: str, canonical: str) -> None:
    assert canonical_path(raw) == canonical


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("", ""),
        ("a=1", "a=1"),
        ("b=2&a=1", "a=1&b=2"),
        ("lifecycle", "lifecycle="),
        ("uploads&prefix=x", "prefix=x&uploads="),
        ("a=2&a=1&a=", "a=&a=1&a=2"),
        ("a=1&&b=2", "a=1&b=2"),
        ("prefix=a+b", "prefix=a%2Bb"),
        ("prefix=a%20b", "prefix=a%20b"),
        ("prefix=a b", "prefix=a%20b"),
        ("prefix=a%2fb", "prefix=a%2Fb"),
        ("k=a=b", "k=a%3Db"),
        ("%41=%7e", "A=~"),
        ("Param2=value2&Param1=value1", "Param1=value1&Param2=value2"),
        # sorted by encoded key first, then value: "a-" sorts before "a=" would
        ("a=1&a-=2", "a=1&a-=2"),
        ("a-=2&a=1", "a=1&a-=2"),
        ("x=é", "x=%C3%A9"),
    ],
)
def test_canonical_query(raw: str, canonical: str) -> None:
    assert canonical_query(raw) == canonical


def test_canonical_headers_trim_fold_join_and_exclude() -> None:
    headers = [
        ("Host", "h"),
        ("X-Amz-Meta-A", "  one   two  "),
        ("x-amz-meta-a", "three"),
        ("User-Agent", "aws-cli"),
        ("Connection", "keep-alive"),
        ("X-Forwarded-For", "10.0.0.1"),
        ("X-Amzn-Trace-Id", "Root=1"),
        ("Expect", "100-continue"),
        ("Authorization", "AWS4-HMAC-SHA256 old"),
        ("Transfer-Encoding", "chunked"),
        ("Content-Length", "5"),
        ("Content-MD5", "abc=="),
        ("Content-Type", "text/plain"),
        ("Range", "bytes=0-1"),
        ("X-Amz-Date", "19990101T000000Z"),
    ]
    assert canonical_headers(headers) == {
        "host": "h",
        "x-amz-meta-a": "one two,three",
        "content-md5": "abc==",
        "content-type": "text/plain",
        "range": "bytes=0-1",
    }


def test_incoming_signature_headers_are_replaced() -> None:
    signer = Signer("us-east-1")
    clean = signer.sign("GET", "/k", "", [HOST], EMPTY_SHA256, DOC_CREDENTIALS, DOC_NOW)
    dirty = signer.sign(
        "GET",
        "/k",
        "",
        [
            HOST,
            ("Authorization", "AWS4-HMAC-SHA256 Credential=dummy"),
            ("X-Amz-Date", "19990101T000000Z"),
            ("X-Amz-Content-SHA256", UNSIGNED_PAYLOAD),
            ("X-Amz-Security-Token", "client-dummy-token"),
        ],
        EMPTY_SHA256,
        DOC_CREDENTIALS,
        DOC_NOW,
    )
    assert dirty.signature == clean.signature
    assert "x-amz-security-token" not in dict(dirty.headers)


def test_session_token_is_signed_and_set() -> None:
    credentials = Credentials("AKIDEXAMPLE", "secret", "the-token")
    signed = Signer("us-east-1").sign(
        "GET", "/k", "", [HOST], EMPTY_SHA256, credentials, DOC_NOW
    )
    assert dict(signed.headers)["x-amz-security-token"] == "the-token"
    assert "x-amz-security-token:the-token\n" in signed.canonical_request
    assert signed.signed_headers == (
        "host;x-amz-content-sha256;x-amz-date;x-amz-security-token"
    )


def test_content_length_is_signed_only_when_asked() -> None:
    headers = [HOST, ("Content-Length", "10")]
    default = Signer("us-east-1").sign(
        "PUT", "/k", "", headers, EMPTY_SHA256, DOC_CREDENTIALS, DOC_NOW
    )
    with_length = Signer("us-east-1", sign_content_length=True).sign(
        "PUT", "/k", "", headers, EMPTY_SHA256, DOC_CREDENTIALS, DOC_NOW
    )
    assert "content-length" not in default.signed_headers
    assert with_length.signed_headers.startswith("content-length;host")


# --- dates ----------------------------------------------------------------


def test_amz_date_converts_to_utc() -> None:
    seoul = timezone(timedelta(hours=9))
    assert amz_date(datetime(2026, 1, 1, 9, 0, 5, tzinfo=seoul)) == "20260101T000005Z"


def test_parse_amz_date_round_trips() -> None:
    moment = datetime(2026, 2, 28, 23, 59, 59, tzinfo=UTC)
    assert parse_amz_date(amz_date(moment)) == moment


@pytest.mark.parametrize(
    "value",
    ["", "20260101", "20260101T000000", "2026-01-01T00:00:00Z", "20261301T000000Z"],
)
def test_parse_amz_date_rejects_malformed(value: str) -> None:
    with pytest.raises(SigningError, match="malformed x-amz-date"):
        parse_amz_date(value)


# --- signing key cache ----------------------------------------------------


def test_signing_key_is_cached_and_bounded() -> None:
    signer = Signer("us-east-1", key_cache_size=2)
    first = signer.signing_key(DOC_CREDENTIALS, "20130524")
    assert signer.signing_key(DOC_CREDENTIALS, "20130524") is first
    signer.signing_key(DOC_CREDENTIALS, "20130525")
    signer.signing_key(DOC_CREDENTIALS, "20130526")
    assert len(signer._key_cache) == 2
    again = signer.signing_key(DOC_CREDENTIALS, "20130524")
    assert again == first
    assert again is not first  # evicted and derived afresh


def test_signing_key_depends_on_secret_date_region_service() -> None:
    base = Signer("us-east-1").signing_key(DOC_CREDENTIALS, "20130524")
    other_secret = Credentials("AKIAIOSFODNN7EXAMPLE", "other")
    assert Signer("us-east-1").signing_key(other_secret, "20130524") != base
    assert Signer("us-east-1").signing_key(DOC_CREDENTIALS, "20130525") != base
    assert Signer("kr-west-1").signing_key(DOC_CREDENTIALS, "20130524") != base
    assert Signer("us-east-1", "sts").signing_key(DOC_CREDENTIALS, "20130524") != base


# --- secrets stay out of sight ---------------------------------------------


def test_reprs_hide_secrets() -> None:
    credentials = Credentials("AKID", "very-secret-key", "very-secret-token")
    signed = Signer("us-east-1").sign(
        "GET", "/", "", [HOST], EMPTY_SHA256, credentials, DOC_NOW
    )
    for text in (repr(credentials), repr(signed)):
        assert "very-secret" not in text
    assert "AKID" in repr(credentials)


# --- bad input --------------------------------------------------------------


def sign(**overrides: object):
    arguments: dict = {
        "method": "GET",
        "path": "/k",
        "query": "",
        "headers": [HOST],
        "payload_hash": EMPTY_SHA256,
        "credentials": DOC_CREDENTIALS,
        "now": DOC_NOW,
    }
    arguments.update(overrides)
    return Signer("us-east-1").sign(**arguments)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"headers": [HOST, ("x-amz-meta-a", "a\r\nb")]}, "'x-amz-meta-a' value"),
        ({"headers": [HOST, ("x-amz-meta-a", "a\nb")]}, "contains CR, LF"),
        ({"headers": [HOST, ("x-bad\n", "v")]}, "invalid header name"),
        ({"headers": [HOST, ("x-é", "v")]}, "invalid header name 'x-é'"),
        ({"headers": [HOST, ("", "v")]}, "invalid header name ''"),
        ({"headers": [HOST, ("a b", "v")]}, "invalid header name 'a b'"),
        ({"headers": [("x-amz-meta-a", "v")]}, "missing host header"),
        ({"payload_hash": "ABC"}, "malformed payload hash 'ABC'"),
        ({"payload_hash": EMPTY_SHA256.upper()}, "malformed payload hash"),
        ({"now": datetime(2026, 1, 1)}, "timezone-aware"),
        ({"path": "k"}, "must start with '/'"),
        ({"method": "GE T"}, "invalid HTTP method 'GE T'"),
        ({"credentials": Credentials("", "s")}, "access key '' is empty"),
        ({"credentials": Credentials("AK/ID", "s")}, "access key 'AK/ID'"),
        ({"credentials": Credentials("AKID", "")}, "secret key for access key"),
        (
            {"credentials": Credentials("AKID", "s", "tok\nen")},
            "session token is empty or contains",
        ),
    ],
)
def test_bad_input_is_refused(overrides: dict, message: str) -> None:
    with pytest.raises(SigningError, match=message):
        sign(**overrides)


def test_errors_never_show_secrets() -> None:
    credentials = Credentials("AKID", "sekrit-value", "tok\nsekrit-token")
    with pytest.raises(SigningError, match="session token") as caught:
        sign(credentials=credentials)
    assert "sekrit" not in str(caught.value)
    with pytest.raises(SigningError, match="'authorization' value") as caught:
        sign(headers=[HOST, ("authorization", "Bearer sekrit\r\nx")])
    assert "sekrit" not in str(caught.value)


@pytest.mark.parametrize("expires", [0, -1, 604801, True, 1.5])
def test_presign_expiry_out_of_range(expires: object) -> None:
    with pytest.raises(
        SigningError, match=r"expires must be an integer in 1\.\.604800"
    ):
        Signer("us-east-1").presign(
            "GET",
            "/k",
            "",
            [HOST],
            DOC_CREDENTIALS,
            DOC_NOW,
            expires,  # type: ignore[arg-type]
        )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("not a url", "unparseable URL 'not a url'"),
        ("ftp://h/k", "unparseable URL 'ftp://h/k'"),
        ("http:///k", "unparseable URL"),
        ("http://h:99999/k", "unparseable URL 'http://h:99999/k'"),
        ("http://[::1/k", "unparseable URL"),
    ],
)
def test_sign_url_rejects_unparseable(url: str, message: str) -> None:
    with pytest.raises(SigningError, match=message):
        sign_url(
            Signer("us-east-1"), "GET", url, [], EMPTY_SHA256, DOC_CREDENTIALS, DOC_NOW
        )


@pytest.mark.parametrize(
    ("url", "host"),
    [
        (
            "https://examplebucket.s3.amazonaws.com/test.txt",
            "examplebucket.s3.amazonaws.com",
        ),
        ("http://127.0.0.1:8333/b/k", "127.0.0.1:8333"),
        ("http://h:80/b/k", "h"),
        ("https://h:443/b/k", "h"),
        ("https://h:80/b/k", "h:80"),
        ("http://[::1]:9000/b", "[::1]:9000"),
    ],
)
def test_sign_url_adds_host(url: str, host: str) -> None:
    signed = sign_url(
        Signer("us-east-1"), "GET", url, [], STREAMING_SIGNED, DOC_CREDENTIALS, DOC_NOW
    )
    assert f"\nhost:{host}\n" in signed.canonical_request


def test_sign_url_keeps_given_host_and_splits_query() -> None:
    signed = sign_url(
        Signer("us-east-1"),
        "GET",
        "http://127.0.0.1:1/b/a b?z=1&a=2",
        [("Host", "other:2")],
        EMPTY_SHA256,
        DOC_CREDENTIALS,
        DOC_NOW,
    )
    assert (signed.path, signed.query) == ("/b/a%20b", "a=2&z=1")
    assert "\nhost:other:2\n" in signed.canonical_request


# --- AWS SigV4 test suite (generic SigV4, header signing) --------------------

SUITE = VECTORS / "aws-sig-v4-test-suite"
SUITE_CASES = sorted(SUITE.glob("*.header-signed-request.txt"))


def parse_signed_request(text: str) -> tuple[str, str, list, str, str]:
    """method, target, headers without Authorization, authorization, body."""
    head, _, body = text.partition("\n\n")
    request_line, *header_lines = head.split("\n")
    # The target may hold a space (get-space): it runs up to the last one.
    method, _, rest = request_line.partition(" ")
    target = rest.rsplit(" ", 1)[0]
    headers, authorization = [], ""
    for line in header_lines:
        name, _, value = line.partition(":")
        if name.lower() == "authorization":
            authorization = value
        else:
            headers.append((name, value))
    return method, target, headers, authorization, body


@pytest.mark.parametrize(
    "path", SUITE_CASES, ids=[p.name.split(".")[0] for p in SUITE_CASES]
)
def test_aws_sigv4_test_suite(path: Path) -> None:
    context = load(SUITE / "context.json")
    method, target, headers, authorization, body = parse_signed_request(
        path.read_text(encoding="utf-8")
    )
    raw_path, _, raw_query = target.partition("?")
    names = {name.lower() for name, _ in headers}
    keys = context["credentials"]
    credentials = Credentials(
        keys["access_key_id"],
        keys["secret_access_key"],
        keys["token"] if "x-amz-security-token" in names else None,
    )
    expected_signed = authorization.split("SignedHeaders=")[1].split(",")[0]
    signer = Signer(
        context["region"],
        context["service"],
        sign_content_length="content-length" in expected_signed.split(";"),
    )
    signed = signer.sign(
        method,
        raw_path,
        raw_query,
        headers,
        hashlib.sha256(body.encode()).hexdigest(),
        credentials,
        datetime.fromisoformat(context["timestamp"]),
        content_sha256_header="x-amz-content-sha256" in expected_signed,
    )
    assert signed.signed_headers == expected_signed
    # The signature is an HMAC over the SHA-256 of the canonical request, so
    # equal signatures mean equal canonical requests and strings to sign.
    assert signed.authorization == f"AWS4-HMAC-SHA256 {authorization.split(' ', 1)[1]}"

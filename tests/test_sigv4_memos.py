"""The signer's hot-path memos never change a signature.

`Signer.sign` remembers the last x-amz-date (per second), the last
credentials snapshot and date with their signing key, the methods and
credentials already checked.  Signing a sequence that switches credentials,
crosses seconds and midnight, and mixes payload hashes must give exactly what
a fresh signer gives for each request alone.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from signproxy import sigv4

A = sigv4.Credentials("AKIDMEMOA0001", "secret-a/0123456789")
B = sigv4.Credentials("AKIDMEMOB0002", "secret-b/0123456789", "session-token-b")
MIDNIGHT = datetime(2026, 1, 1, 23, 59, 59, 900000, tzinfo=UTC)
HASH = "ab" * 32


def test_a_shared_signer_signs_like_a_fresh_one() -> None:
    shared = sigv4.Signer("kr-west1")
    steps = [
        (A, MIDNIGHT, "GET", "/b/k", "", sigv4.EMPTY_SHA256),
        (B, MIDNIGHT, "PUT", "/b/k%20x", "z=1&a=2", HASH),
        (A, MIDNIGHT, "GET", "/b/k", "", sigv4.EMPTY_SHA256),
        (A, MIDNIGHT + timedelta(seconds=0.2), "HEAD", "/b/%41", "", HASH),
        (B, MIDNIGHT + timedelta(seconds=1), "PUT", "/b//./k~", "", HASH),
        (A, MIDNIGHT + timedelta(days=1), "GET", "", "a&b=", sigv4.UNSIGNED_PAYLOAD),
        (A, MIDNIGHT, "GET", "/b/k", "", sigv4.EMPTY_SHA256),
    ]
    for credentials, now, method, path, query, payload_hash in steps:
        headers = [("Host", "store.example"), ("X-Amz-Meta-A", " two  spaces ")]
        got = shared.sign(method, path, query, headers, payload_hash, credentials, now)
        fresh = sigv4.Signer("kr-west1").sign(
            method, path, query, headers, payload_hash, credentials, now
        )
        assert got == fresh, (method, path, now)
        assert got.amz_date == sigv4.amz_date(now)
    with pytest.raises(sigv4.SigningError, match=r"path must start with '/'"):
        shared.sign("GET", "b/k", "", [("host", "h")], HASH, A, MIDNIGHT)


def test_a_bad_payload_hash_is_refused_after_good_ones() -> None:
    signer = sigv4.Signer("kr-west1")
    headers = [("host", "store.example")]
    signer.sign("PUT", "/b/k", "", headers, HASH, A, MIDNIGHT)
    for bad in ("AB" * 32, "ab" * 31, "g" * 64, "ab" * 32 + " "):
        with pytest.raises(sigv4.SigningError, match=r"malformed payload hash"):
            signer.sign("PUT", "/b/k", "", headers, bad, A, MIDNIGHT)


def test_header_templates_sign_like_the_general_path() -> None:
    """Per-name-set templates: repeats, folding, tokens, bad values, generators."""
    shared = sigv4.Signer("kr-west1")
    header_sets = [
        [("Host", "h"), ("X-Amz-Meta-A", "1")],
        [("Host", "h"), ("X-Amz-Meta-A", " two  spaces ")],
        [("Host", "h"), ("X-Amz-Meta-A", "a |b"), ("User-Agent", "x  y")],
        [("Host", "h"), ("X-Amz-Meta-A", "tab\there")],
        [("Host", "h"), ("x-amz-meta-a", "1"), ("X-Amz-Meta-A", "2")],
        [("Host", "h"), ("Content-Length", "5"), ("X-Amz-Date", "x")],
        [("Host", "h"), ("X-100%", "v%s")],
    ]
    for credentials in (A, B, A):
        for headers in header_sets:
            for sha_header in (True, False):
                got = shared.sign(
                    "PUT", "/b/k", "", iter(headers), HASH, credentials, MIDNIGHT,
                    content_sha256_header=sha_header,
                )  # fmt: skip
                fresh = sigv4.Signer("kr-west1")
                want_headers = sigv4.canonical_headers(headers)
                assert "x-amz-date:" in got.canonical_request
                assert got.signed_headers.split(";") == sorted(
                    [*want_headers, "x-amz-date"]
                    + (["x-amz-content-sha256"] if sha_header else [])
                    + (["x-amz-security-token"] if credentials.session_token else [])
                )
                for name, value in want_headers.items():
                    assert f"\n{name}:{value}\n" in got.canonical_request
                assert got == fresh.sign(
                    "PUT", "/b/k", "", headers, HASH, credentials, MIDNIGHT,
                    content_sha256_header=sha_header,
                )  # fmt: skip
    with pytest.raises(sigv4.SigningError, match=r"'x-amz-meta-a' value contains"):
        shared.sign(
            "GET", "/b/k", "", [("Host", "h"), ("X-Amz-Meta-A", "a\nb")], HASH, A,
            MIDNIGHT,
        )  # fmt: skip
    with pytest.raises(sigv4.SigningError, match=r"invalid header name 'B\(d'"):
        shared.sign(
            "GET", "/b/k", "", [("B(d", "x"), ("X-Amz-Meta-A", "a\nb")], HASH, A,
            MIDNIGHT,
        )  # fmt: skip
    with pytest.raises(sigv4.SigningError, match=r"missing host header"):
        shared.sign("GET", "/b/k", "", [("X-Amz-Meta-A", "1")], HASH, A, MIDNIGHT)

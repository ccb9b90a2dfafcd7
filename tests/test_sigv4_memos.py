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

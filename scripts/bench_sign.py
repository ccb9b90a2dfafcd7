"""Signatures per second: our Signer against botocore's S3SigV4Auth.

An interim benchmark (a later `signproxy bench` supersedes it): both sign the
same 8-header PUT, ours with a warm signing-key cache, in one run on one core.
Run: .venv/bin/python scripts/bench_sign.py [--seconds 4] [--rounds 8]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from datetime import UTC, datetime
from unittest import mock

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials

from signproxy.sigv4 import Credentials, Signer

URL = "http://127.0.0.1:8333/bucket/photos/2026/01/holiday%20photo.jpg"
PATH = "/bucket/photos/2026/01/holiday%20photo.jpg"
PAYLOAD_HASH = "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"
HEADERS = [
    ("host", "127.0.0.1:8333"),
    ("content-type", "image/jpeg"),
    ("content-md5", "1B2M2Y8AsgTpgAmY7PhCfg=="),
    ("cache-control", "max-age=3600"),
    ("x-amz-meta-camera", "X100V"),
    ("x-amz-meta-album", "holiday 2026"),
    ("x-amz-storage-class", "STANDARD"),
    ("x-amz-acl", "private"),
]
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def rate(operation: Callable[[], object], seconds: float) -> float:
    """Calls per second, measured over at least `seconds`."""
    calls, batch = 0, 100
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(batch):
            operation()
        calls += batch
    return calls / elapsed


def ours() -> Callable[[], object]:
    signer = Signer("us-east-1")
    credentials = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    signer.signing_key(credentials, "20260101")  # warm the key cache

    def sign() -> object:
        return signer.sign("PUT", PATH, "", HEADERS, PAYLOAD_HASH, credentials, NOW)

    return sign


def botocore() -> Callable[[], object]:
    credentials = BotoCredentials(
        "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
    )
    auth = S3SigV4Auth(credentials, "s3", "us-east-1")

    def sign() -> object:
        request = AWSRequest(method="PUT", url=URL, headers=dict(HEADERS[1:]))
        request.headers["X-Amz-Content-SHA256"] = PAYLOAD_HASH
        auth.add_auth(request)
        return request

    return sign


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="per signer")
    parser.add_argument("--rounds", type=int, default=8, help="alternating rounds")
    args = parser.parse_args()

    # Alternate short rounds and keep each side's best, so that load from
    # other processes on a shared machine skews both sides alike.
    our_sign, boto_sign = ours(), botocore()
    our_rate = boto_rate = 0.0
    with mock.patch(
        "botocore.auth.get_current_datetime", return_value=NOW.replace(tzinfo=None)
    ):
        for _ in range(args.rounds):
            boto_rate = max(boto_rate, rate(boto_sign, args.seconds / args.rounds))
            our_rate = max(our_rate, rate(our_sign, args.seconds / args.rounds))
    print(f"signproxy Signer (warm key cache): {our_rate:>10,.0f} signatures/s")
    print(f"botocore S3SigV4Auth:              {boto_rate:>10,.0f} signatures/s")
    print(f"ratio:                             {our_rate / boto_rate:>10.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

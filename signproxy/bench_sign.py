"""`signproxy bench sign`: signatures per second, ours against botocore's.

All signers sign the same four representative S3 requests (an 8-header
PUT with a small body, a ranged GET, a ListObjectsV2 with a query, a HEAD)
in the same process and run:

- `sign/botocore`: botocore's `S3SigV4Auth.add_auth` on prepared requests
  (the cheapest way to use it: the request objects are built once; building
  them per signature measured no slower);
- `sign/local-warm`: our `sigv4.Signer` with its signing-key cache warm;
- `sign/local-cold`: the same with every signature deriving its key;
- `sign/remote-hit` / `sign/remote-miss`: the remote signer (see
  `bench_remote`) against the STS emulator on loopback.

Both sides hash the body and read the clock on every signature.  Before
timing, every request is signed by both and the Authorization values must
be equal; a mismatch refuses the run.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from signproxy import sigv4
from signproxy.bench import Budget, Case, Failures, Progress, rate

logger = logging.getLogger(__name__)

REGION = "kr-west1"
HOST = "127.0.0.1:9000"
BOTOCORE = "sign/botocore"


@dataclass(frozen=True)
class SampleRequest:
    """One request as a client would send it, before signing."""

    method: str
    path: str
    query: str
    headers: tuple[tuple[str, str], ...]
    body: bytes = b""

    @property
    def url(self) -> str:
        query = f"?{self.query}" if self.query else ""
        return f"http://{HOST}{self.path}{query}"


SAMPLE_REQUESTS = (
    SampleRequest(
        "PUT",
        "/bench-bucket/reports/2024/q3/summary-0001.json",
        "",
        (
            ("host", HOST),
            ("content-type", "application/json"),
            ("content-md5", "1B2M2Y8AsgTpgAmY7PhCfg=="),
            ("cache-control", "no-cache"),
            ("x-amz-meta-owner", "analytics"),
            ("x-amz-meta-purpose", "quarterly-summary"),
            ("x-amz-storage-class", "STANDARD"),
            ("user-agent", "signproxy-bench/1"),
        ),
        b'{"rows": 1}' * 93,
    ),
    SampleRequest(
        "GET",
        "/bench-bucket/photos/2024/img%20001.jpg",
        "",
        (("host", HOST), ("range", "bytes=0-65535"), ("accept", "*/*")),
    ),
    SampleRequest(
        "GET",
        "/bench-bucket",
        "list-type=2&prefix=photos%2F2024%2F&max-keys=100",
        (("host", HOST), ("accept", "application/xml")),
    ),
    SampleRequest(
        "HEAD", "/bench-bucket/photos/2024/img-002.jpg", "", (("host", HOST),)
    ),
)


def bench_credentials() -> sigv4.Credentials:
    # Fixed, made-up keys: nothing is sent anywhere.
    return sigv4.Credentials(
        "AKBENCHEXAMPLE000001", "bench/secret+key/0123456789abcdefghij"
    )


def payload_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest() if body else sigv4.EMPTY_SHA256


def local_signer_op(
    signer: sigv4.Signer, credentials: list[sigv4.Credentials]
) -> Callable[[int], object]:
    """Signs request i with credentials i (modulo), clock read each time."""
    requests = SAMPLE_REQUESTS
    count = len(requests)
    keys = len(credentials)

    def sign(i: int) -> object:
        request = requests[i % count]
        return signer.sign(
            request.method,
            request.path,
            request.query,
            request.headers,
            payload_hash(request.body),
            credentials[i % keys],
            datetime.now(UTC),
        )

    return sign


def _botocore() -> tuple[Any, Any, Any]:
    try:
        from botocore.auth import S3SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials as BotoCredentials
    except ImportError as error:
        raise RuntimeError(
            "bench sign needs botocore for its baseline: pip install 'signproxy[bench]'"
        ) from error
    return S3SigV4Auth, AWSRequest, BotoCredentials


def botocore_op(credentials: sigv4.Credentials) -> Callable[[int], object]:
    """botocore's S3SigV4Auth.add_auth on prepared requests (re-signing each)."""
    s3_sigv4_auth, aws_request, boto_credentials = _botocore()
    auth = s3_sigv4_auth(
        boto_credentials(credentials.access_key, credentials.secret_key),
        "s3",
        REGION,
    )
    prepared = [
        aws_request(
            method=request.method,
            url=request.url,
            headers=dict(request.headers),
            data=request.body,
        )
        for request in SAMPLE_REQUESTS
    ]
    count = len(prepared)

    def sign(i: int) -> object:
        return auth.add_auth(prepared[i % count])

    return sign


def cross_check(credentials: sigv4.Credentials) -> Failures:
    """Sign every sample with both; the Authorization values must agree."""
    s3_sigv4_auth, aws_request, boto_credentials = _botocore()
    auth = s3_sigv4_auth(
        boto_credentials(credentials.access_key, credentials.secret_key),
        "s3",
        REGION,
    )
    signer = sigv4.Signer(REGION)
    failures = Failures()
    for request in SAMPLE_REQUESTS:
        theirs = aws_request(
            method=request.method,
            url=request.url,
            headers=dict(request.headers),
            data=request.body,
        )
        auth.add_auth(theirs)
        now = sigv4.parse_amz_date(theirs.headers["X-Amz-Date"])
        ours = signer.sign(
            request.method,
            request.path,
            request.query,
            request.headers,
            payload_hash(request.body),
            credentials,
            now,
        )
        if ours.authorization != theirs.headers["Authorization"]:
            failures.record(
                f"{request.method} {request.path}: our signature differs from "
                f"botocore's (signed headers ours={ours.signed_headers!r})"
            )
    return failures


def run_local(budget: Budget, rounds: int, progress: Progress) -> list[Case]:
    """botocore, local-warm and local-cold, interleaved round by round."""
    credentials = bench_credentials()
    cross_check(credentials).check("sign/cross-check", len(SAMPLE_REQUESTS))

    # Cold: a one-entry key cache and two alternating key pairs, so every
    # signature derives its signing key (four HMACs) before signing.
    other = sigv4.Credentials("AKBENCHEXAMPLE000002", credentials.secret_key + "2")
    operations = {
        BOTOCORE: botocore_op(credentials),
        "sign/local-warm": local_signer_op(sigv4.Signer(REGION), [credentials]),
        "sign/local-cold": local_signer_op(
            sigv4.Signer(REGION, key_cache_size=1), [credentials, other]
        ),
    }
    samples: dict[str, list[float]] = {name: [] for name in operations}
    with progress.task("sign: local and botocore", rounds * len(operations)) as step:
        for _ in range(rounds):
            # Interleaving rounds spreads machine noise over all signers.
            for name, operation in operations.items():
                samples[name].append(rate(operation, budget))
                step()
    details = {"requests": [f"{r.method} {r.path}" for r in SAMPLE_REQUESTS]}
    return [
        Case(
            name,
            "sig/s",
            values,
            baseline=None if name == BOTOCORE else BOTOCORE,
            details=details,
        )
        for name, values in samples.items()
    ]

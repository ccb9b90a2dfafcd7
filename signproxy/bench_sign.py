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

import asyncio
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from signproxy import sigv4
from signproxy.bench import Budget, Case, Failures, Progress, rate
from signproxy.bench_load import cpu_seconds, own_cpu_seconds

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


# --- the remote signer --------------------------------------------------------


@dataclass
class RemoteRound:
    rate: float
    latencies: list[float]
    signed_by: dict[str, int]
    own_cpu: float = 0.0
    sts_cpu: float = 0.0


async def _remote_round(
    signer: Any,
    requests: Callable[[int], Any],
    budget: Budget,
    concurrency: int,
    failures: Failures,
    sts_pids: list[int],
) -> RemoteRound:
    """`concurrency` tasks signing requests(i) until the budget is spent."""
    import time

    from signproxy.signers import SigningFailed

    latencies: list[float] = []
    signed_by: dict[str, int] = {}
    counter = iter(range(1 << 62))
    quota = budget.count
    start = time.perf_counter()
    deadline = start + budget.seconds

    async def worker() -> None:
        while True:
            i = next(counter)
            if quota is not None and i >= quota:
                return
            if quota is None and time.perf_counter() >= deadline:
                return
            began = time.perf_counter()
            try:
                signed = await signer.sign(requests(i))
            except SigningFailed as error:
                failures.record(f"remote signing failed: {error.status} {error}")
                continue
            latencies.append(time.perf_counter() - began)
            signed_by[signed.signed_by] = signed_by.get(signed.signed_by, 0) + 1

    own_before, sts_before = own_cpu_seconds(), cpu_seconds(sts_pids)
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    return RemoteRound(
        len(latencies) / elapsed,
        latencies,
        signed_by,
        own_cpu_seconds() - own_before,
        cpu_seconds(sts_pids) - sts_before,
    )


def remote_headers(sample: SampleRequest) -> tuple[tuple[str, str], ...]:
    """The sample's headers less x-amz-* ones, which remote signing refuses.

    STS object-store-authorization signs host, x-amz-date and
    x-amz-content-sha256 only, so a request carrying other x-amz-* headers
    (which S3 requires signed) cannot be signed remotely.
    """
    return tuple((n, v) for n, v in sample.headers if not n.startswith("x-amz-"))


def _signing_request(sample: SampleRequest, path: str | None = None) -> Any:
    from signproxy.signers import SigningRequest

    return SigningRequest(
        sample.method,
        path or sample.path,
        sample.query,
        remote_headers(sample),
        payload_hash(sample.body),
        scheme="http",
    )


async def _remote_cases(
    endpoint: str,
    sts_pids: list[int],
    identity: Any,
    account_id: str,
    budget: Budget,
    rounds: int,
    concurrency: int,
    progress: Progress,
) -> list[Case]:
    from signproxy.signers import SignerSettings, create_signer
    from signproxy.sts import ScpCredentials

    settings = SignerSettings(
        mode="remote",
        region=REGION,
        sts_endpoint=endpoint,
        scp_credentials=ScpCredentials(
            identity.access_key, identity.secret_key, account_id
        ),
    )
    frozen = datetime.now(UTC)
    # Hit path: a frozen clock, so after the first call per request every
    # signature comes from the authorization cache.
    hit_signer = create_signer(settings, clock=lambda: frozen)
    miss_signer = create_signer(settings)
    hit_requests = [_signing_request(sample) for sample in SAMPLE_REQUESTS]
    failures = Failures()
    await hit_signer.start()
    await miss_signer.start()
    try:
        await _check_remote(hit_signer, identity, failures)
        failures.check("sign/remote-check", len(SAMPLE_REQUESTS))
        paths = iter(range(1 << 62))
        plans = {
            "sign/remote-hit": (hit_signer, lambda i: hit_requests[i % 4]),
            # Miss path: every request a new object, so every signature is an
            # STS object-store-authorization call over loopback.
            "sign/remote-miss": (
                miss_signer,
                lambda i: _signing_request(
                    SAMPLE_REQUESTS[0],
                    f"/bench-bucket/miss/{next(paths)}-{i}.json",
                ),
            ),
        }
        results: dict[str, list[RemoteRound]] = {name: [] for name in plans}
        with progress.task("sign: remote", rounds * len(plans)) as step:
            for _ in range(rounds):
                for name, (signer, requests) in plans.items():
                    results[name].append(
                        await _remote_round(
                            signer, requests, budget, concurrency, failures, sts_pids
                        )
                    )
                    step()
        total = sum(len(r.latencies) for rs in results.values() for r in rs)
        failures.check("sign/remote", total + failures.count)
    finally:
        await hit_signer.close()
        await miss_signer.close()
    return [_remote_case(name, rs, concurrency) for name, rs in results.items()]


def _remote_case(name: str, rounds: list[RemoteRound], concurrency: int) -> Case:
    from signproxy.bench import percentile

    latencies = [value for r in rounds for value in r.latencies]
    calls = len(latencies)
    signed_by: dict[str, int] = {}
    for r in rounds:
        for by, count in r.signed_by.items():
            signed_by[by] = signed_by.get(by, 0) + count
    return Case(
        name,
        "sig/s",
        [r.rate for r in rounds],
        baseline=BOTOCORE,
        details={
            "concurrency": concurrency,
            "latency_p50_us": percentile(latencies, 0.50) * 1e6,
            "latency_p99_us": percentile(latencies, 0.99) * 1e6,
            "signed_by": signed_by,
            # CPU of this process (signer + STS client) and of the emulator.
            "signer_cpu_us_per_signature": sum(r.own_cpu for r in rounds) / calls * 1e6,
            "sts_cpu_us_per_signature": sum(r.sts_cpu for r in rounds) / calls * 1e6,
        },
    )


async def _check_remote(signer: Any, identity: Any, failures: Failures) -> None:
    """The emulator's signatures must equal ours with the same key and date."""
    from signproxy.signers import SigningFailed

    local = sigv4.Signer(REGION)
    credentials = sigv4.Credentials(identity.access_key, identity.secret_key)
    for sample in SAMPLE_REQUESTS:
        try:
            signed = (await signer.sign(_signing_request(sample))).request
        except SigningFailed as error:
            failures.record(f"remote signing failed: {error.status} {error}")
            continue
        # Remote signatures cover host and the x-amz-* headers only.
        host_only = [(n, v) for n, v in sample.headers if n == "host"]
        ours = local.sign(
            sample.method,
            sample.path,
            sample.query,
            host_only,
            payload_hash(sample.body),
            credentials,
            sigv4.parse_amz_date(signed.amz_date),
        )
        if ours.authorization != signed.authorization:
            failures.record(
                f"{sample.method} {sample.path}: the remote signature differs "
                "from the local signer's with the same key and date"
            )


def run_remote(
    budget: Budget, rounds: int, concurrency: int, progress: Progress
) -> list[Case]:
    """Start the emulator in its own process and time the remote signer."""
    from signproxy.bench_services import Services, random_identity

    identity = random_identity()
    with Services() as services:
        emulator = services.emulator(identity)
        return asyncio.run(
            _remote_cases(
                emulator.endpoint,
                [emulator.pid],
                identity,
                emulator.facts["account_id"],
                budget,
                rounds,
                concurrency,
                progress,
            )
        )

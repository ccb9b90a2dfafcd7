"""`signproxy bench proxy`: small GETs and PUTs end to end, three ways.

The bench starts its own SeaweedFS store (or uses `--store`), its own
`signproxy run` (local signer, the store's keys as static keys) and a stock
`mitmdump --mode reverse:STORE` with no addon, then drives each with the
load generator of `bench_load` in a separate process:

- `proxy/<op>-c<N>`: through signproxy; the client signs with dummy keys
  and the proxy re-signs every request;
- `proxy/mitmdump-<op>-c<N>`: through stock mitmdump, requests signed by
  the client for the store (mitmdump passes them unchanged);
- `proxy/direct-<op>-c<N>`: straight to the store, signed for it.  This is
  also the load generator's own ceiling: if the generator's CPU (in the
  case's details) is near one core, it is the bottleneck, not the store.

The generator signs each request once per case and replays it (the store
accepts a signature for 15 minutes), so its own cost stays out of the
figures.  Per case and round it reports req/s, p50 and p99 latency, and
the CPU (utime + stime) the process under test spent per request.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx

from signproxy import sigv4
from signproxy.bench import (
    LOWER,
    Budget,
    Case,
    Failures,
    Progress,
    describe_http_error,
)
from signproxy.bench_load import LoadResult, LoadSpec, RoundResult
from signproxy.bench_services import Services, random_identity, signproxy_command
from signproxy.seaweed import Identity, LocalStore, free_port

logger = logging.getLogger(__name__)

REGION = "us-east-1"
BUCKET = "signproxy-bench"
SMALL_KEY = "small.bin"
DUMMY = sigv4.Credentials("AKIDUMMYCLIENTKEY000", "dummy-client-secret-key")
WARMUP_SECONDS = 0.3

# How each target's cases are named, and which target each is compared to.
PREFIX = {"signproxy": "", "mitmdump": "mitmdump-", "direct": "direct-"}
BASELINE = {"signproxy": "mitmdump", "mitmdump": "direct", "direct": None}


@dataclass(frozen=True)
class Target:
    """Where requests go, which Host they carry and whose keys sign them."""

    name: str
    host: str
    port: int
    host_header: str
    credentials: sigv4.Credentials
    cpu_pids: tuple[int, ...]


@dataclass(frozen=True)
class StoreAccess:
    endpoint: str
    identity: Identity
    pid: int | None


def raw_request(
    method: str,
    path: str,
    host_header: str,
    credentials: sigv4.Credentials,
    body: bytes = b"",
    region: str = REGION,
) -> bytes:
    """A whole HTTP/1.1 request, SigV4-signed now, keep-alive."""
    digest = hashlib.sha256(body).hexdigest()
    headers = [("host", host_header), ("user-agent", "signproxy-bench/1")]
    signed = sigv4.Signer(region).sign(
        method, path, "", headers, digest, credentials, datetime.now(UTC)
    )
    lines = [f"{method} {signed.path} HTTP/1.1", *(f"{n}: {v}" for n, v in headers)]
    lines += [f"{name}: {value}" for name, value in signed.headers]
    if method in ("PUT", "POST"):
        lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def store_request(
    access: StoreAccess, method: str, path: str, body: bytes = b""
) -> httpx.Response:
    """One signed request straight to the store, for setting the bench up."""
    host = access.endpoint.split("://", 1)[1]
    credentials = sigv4.Credentials(
        access.identity.access_key, access.identity.secret_key
    )
    raw = raw_request(method, path, host, credentials, body)
    head, _, _ = raw.partition(b"\r\n\r\n")
    headers = [tuple(line.split(": ", 1)) for line in head.decode().split("\r\n")[1:]]
    return httpx.request(
        method,
        access.endpoint + path,
        headers=[(n, v) for n, v in headers if n not in ("host", "content-length")],
        content=body,
        timeout=30,
    )


def prepare_store(access: StoreAccess, object_size: int) -> None:
    """The bucket and the small object every GET reads."""
    failures = Failures()
    created = store_request(access, "PUT", f"/{BUCKET}")
    if created.status_code not in (200, 409):
        error = describe_http_error(created.status_code, created.content)
        failures.record(f"PUT /{BUCKET}: {error}")
    else:
        put = store_request(
            access, "PUT", f"/{BUCKET}/{SMALL_KEY}", payload(object_size)
        )
        if put.status_code != 200:
            error = describe_http_error(put.status_code, put.content)
            failures.record(f"PUT /{BUCKET}/{SMALL_KEY}: {error}")
    failures.check("proxy/setup", 2)


def payload(size: int) -> bytes:
    return (b"signproxy-bench." * (size // 16 + 1))[:size]


# --- driving the load ----------------------------------------------------------


def run_load(spec: LoadSpec) -> LoadResult:
    """Run `bench_load` in its own process and parse what it reports."""
    deadline = spec.rounds * (spec.seconds + spec.timeout) + 120
    completed = subprocess.run(
        [sys.executable, "-m", "signproxy.bench_load"],
        input=json.dumps(spec.__dict__),
        capture_output=True,
        text=True,
        timeout=deadline,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"the load generator failed ({completed.returncode}): "
            f"{completed.stderr[-2000:]}"
        )
    data = json.loads(completed.stdout)
    return LoadResult(
        rounds=[RoundResult(**r) for r in data["rounds"]],
        first_error=data["first_error"],
        latency_p50_ms=data["latency_p50_ms"],
        latency_p99_ms=data["latency_p99_ms"],
        warmup_failed=data["warmup_failed"],
    )


def check_load(case: str, result: LoadResult) -> None:
    """Refuse a case in which any request failed."""
    failures = Failures()
    failed = result.warmup_failed + sum(r.failed for r in result.rounds)
    failures.merge(failed, result.first_error)
    failures.check(case, failed + sum(r.done for r in result.rounds))


def load_spec(
    target: Target,
    requests: list[bytes],
    concurrency: int,
    budget: Budget,
    rounds: int,
) -> LoadSpec:
    return LoadSpec(
        host=target.host,
        port=target.port,
        requests=[base64.b64encode(r).decode() for r in requests],
        concurrency=concurrency,
        rounds=rounds,
        seconds=budget.seconds,
        count=budget.count,
        cpu_pids=list(target.cpu_pids),
        warmup=WARMUP_SECONDS if budget.count is None else 0.0,
    )


def scenario_requests(
    target: Target, op: str, concurrency: int, object_size: int
) -> list[bytes]:
    """The requests one scenario replays; PUTs go to one key per connection."""
    if op == "get":
        path = f"/{BUCKET}/{SMALL_KEY}"
        return [raw_request("GET", path, target.host_header, target.credentials)]
    body = payload(object_size)
    return [
        raw_request(
            "PUT",
            f"/{BUCKET}/put-{target.name}-{index}.bin",
            target.host_header,
            target.credentials,
            body,
        )
        for index in range(concurrency)
    ]


def cases_for(
    target: Target, op: str, concurrency: int, object_size: int, result: LoadResult
) -> list[Case]:
    """req/s, p50 and p99 latency, and CPU per request of one run."""
    name = f"proxy/{PREFIX[target.name]}{op}-c{concurrency}"
    base_target = BASELINE[target.name]
    base = f"proxy/{PREFIX[base_target]}{op}-c{concurrency}" if base_target else None
    direct = f"proxy/direct-{op}-c{concurrency}" if target.name != "direct" else None
    rounds = result.rounds
    elapsed = sum(r.elapsed for r in rounds)
    requests = sum(r.done for r in rounds)
    details = {
        "concurrency": concurrency,
        "requests": requests,
        "failed": 0,
        "object_size": object_size,
        # Share of one core the load generator used: near 1.0, it was the limit.
        "loadgen_cpu_share": sum(r.loadgen_cpu_seconds for r in rounds) / elapsed,
    }
    cases = [
        Case(
            name, "req/s", [r.done / r.elapsed for r in rounds], base, details=details
        ),
        Case(
            f"{name}-p50",
            "ms",
            [r.latency_p50_ms for r in rounds],
            f"{direct}-p50" if direct else None,
            better=LOWER,
        ),
        Case(
            f"{name}-p99",
            "ms",
            [r.latency_p99_ms for r in rounds],
            f"{direct}-p99" if direct else None,
            better=LOWER,
        ),
    ]
    if target.cpu_pids:
        cpu_base = f"{base}-cpu" if target.name == "signproxy" and base else None
        cases.append(
            Case(
                f"{name}-cpu",
                "ms CPU/req",
                [r.target_cpu_seconds * 1000 / max(r.done, 1) for r in rounds],
                cpu_base,
                better=LOWER,
            )
        )
    return cases


# --- the processes ---------------------------------------------------------------


@contextmanager
def bench_store(
    endpoint: str | None, identity: Identity | None
) -> Iterator[StoreAccess]:
    """The store to bench against: the given one, or a fresh local SeaweedFS."""
    if endpoint is not None:
        assert identity is not None
        yield StoreAccess(endpoint.rstrip("/"), identity, None)
        return
    identity = random_identity()
    with LocalStore([identity]) as store:
        process = getattr(store, "_process", None)  # LocalStore keeps no public pid
        yield StoreAccess(store.endpoint, identity, process.pid if process else None)


def start_signproxy(
    services: Services, access: StoreAccess, workers: int | None, signer: str
) -> Target:
    port = free_port()
    args = ["run", "--upstream", access.endpoint, "--listen", f"127.0.0.1:{port}"]
    args += ["--signer", signer, "--region", REGION, "--log-level", "warning"]
    if workers is not None:
        args += ["--workers", str(workers)]
    env = {
        "SCP_ACCESS_KEY": access.identity.access_key,
        "SCP_SECRET_KEY": access.identity.secret_key,
    }
    service = services.start("signproxy", signproxy_command(*args), port, env=env)
    return Target(
        "signproxy", service.host, port, service.host_header, DUMMY, (service.pid,)
    )


def start_mitmdump(services: Services, access: StoreAccess) -> Target:
    service = services.mitmdump(access.endpoint)
    return Target(
        "mitmdump",
        service.host,
        service.port,
        access.endpoint.split("://", 1)[1],
        _store_credentials(access),
        (service.pid,),
    )


def direct_target(access: StoreAccess) -> Target:
    host_port = access.endpoint.split("://", 1)[1]
    host, _, port = host_port.rpartition(":")
    return Target(
        "direct",
        host,
        int(port),
        host_port,
        _store_credentials(access),
        (access.pid,) if access.pid else (),
    )


def _store_credentials(access: StoreAccess) -> sigv4.Credentials:
    return sigv4.Credentials(access.identity.access_key, access.identity.secret_key)


def run_proxy(
    budget: Budget,
    rounds: int,
    concurrencies: list[int],
    progress: Progress,
    *,
    object_size: int = 1024,
    workers: int | None = None,
    store_endpoint: str | None = None,
    store_identity: Identity | None = None,
    ops: tuple[str, ...] = ("get", "put"),
) -> list[Case]:
    cases: list[Case] = []
    with bench_store(store_endpoint, store_identity) as access, Services() as services:
        prepare_store(access, object_size)
        targets = [
            start_signproxy(services, access, workers, "local"),
            start_mitmdump(services, access),
            direct_target(access),
        ]
        plan = [(op, c) for op in ops for c in concurrencies]
        with progress.task("proxy: small requests", len(plan) * len(targets)) as step:
            for op, concurrency in plan:
                for target in targets:
                    spec = load_spec(
                        target,
                        scenario_requests(target, op, concurrency, object_size),
                        concurrency,
                        budget,
                        rounds,
                    )
                    result = run_load(spec)
                    name = f"proxy/{PREFIX[target.name]}{op}-c{concurrency}"
                    check_load(name, result)
                    cases += cases_for(target, op, concurrency, object_size, result)
                    step()
    return cases

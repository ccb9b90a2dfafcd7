"""Prometheus metrics and the management port (/metrics, /healthz, /readyz).

Every metric is declared on the registry of one `Metrics` instance, so each
proxy (and each test) gets its own.  Labels come from small closed sets only:
never a bucket, key or access key.  Every known label combination is created
at start, so a series exists (at zero) before the first event it counts.

The management port is a tiny HTTP/1.1 server on asyncio streams, meant to run
inside the proxy's own event loop; it answers one request per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import logging
import platform
from collections.abc import Callable
from datetime import datetime
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from signproxy import __version__

logger = logging.getLogger(__name__)

METHODS = ("GET", "PUT", "POST", "HEAD", "DELETE", "OTHER")
OUTCOMES = ("forwarded", "refused", "sign_error", "upstream_error")
STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx")
SIGNERS = ("local", "remote", "cache")
STS_OPERATIONS = (
    "assume_role",
    "assume_role_with_saml",
    "object_store_authorization",
)
STS_OUTCOMES = ("ok", "client_error", "unavailable")
REFRESH_OUTCOMES = ("ok", "error")
PAYLOAD_MODES = (
    "empty",
    "client_hash",
    "hashed",
    "unsigned",
    "chunked_signed",
    "chunked_resigned",
)
CACHE_RESULTS = ("hit", "miss")

# From 100 us (a cached local signature) to a minute (a large upload).
DURATION_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)


def method_label(method: str) -> str:
    """The request method as a bounded label: one of METHODS."""
    upper = method.upper()
    return upper if upper in METHODS else "OTHER"


def status_class(status: int) -> str:
    """`2xx` .. `5xx` for a status code; `other` for anything outside."""
    if 200 <= status <= 599:
        return f"{status // 100}xx"
    return "other"


def _check(field: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"metrics: {field} {value!r} is not one of {allowed}")
    return value


def _distribution_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class Metrics:
    """All signproxy metrics, on one registry (a fresh one by default)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.draining = False
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self._declare_requests()
        self._declare_signing()
        self._declare_credentials()
        self._declare_state()
        self._initialise_series()

    # -- declarations -------------------------------------------------------

    def _declare_requests(self) -> None:
        self._requests = Counter(
            "signproxy_requests_total",
            "Requests answered, by method, outcome and status class.",
            ("method", "outcome", "status_class"),
            registry=self.registry,
        )
        self._request_duration = Histogram(
            "signproxy_request_duration_seconds",
            "Time from request headers received to response complete.",
            ("method",),
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self._upstream_duration = Histogram(
            "signproxy_upstream_duration_seconds",
            "Time the upstream store took, request sent to response received.",
            ("method",),
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self._payload_requests = Counter(
            "signproxy_payload_requests_total",
            "Requests by how their payload was hashed or framed.",
            ("mode",),
            registry=self.registry,
        )
        self._payload_bytes = Counter(
            "signproxy_payload_bytes_total",
            "Request payload bytes sent upstream, by payload mode.",
            ("mode",),
            registry=self.registry,
        )

    def _declare_signing(self) -> None:
        self._signing_duration = Histogram(
            "signproxy_signing_duration_seconds",
            "Time to produce a signature, by the signer that produced it.",
            ("signer",),
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self._sts_calls = Counter(
            "signproxy_sts_requests_total",
            "Calls to the SCP STS, by operation and outcome.",
            ("operation", "outcome"),
            registry=self.registry,
        )
        self._sts_duration = Histogram(
            "signproxy_sts_request_duration_seconds",
            "Duration of SCP STS calls, retries included.",
            ("operation",),
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self._auth_cache = Counter(
            "signproxy_auth_cache_lookups_total",
            "Remote authorization cache lookups, by result (hit or miss).",
            ("result",),
            registry=self.registry,
        )

    def _declare_credentials(self) -> None:
        self._credentials_expiry = Gauge(
            "signproxy_credentials_expiry_timestamp_seconds",
            "Unix time the current temporary credentials expire; "
            "0 when the signer holds no expiring credentials.",
            registry=self.registry,
        )
        self._credential_refreshes = Counter(
            "signproxy_credential_refreshes_total",
            "Temporary credential refreshes, by outcome.",
            ("outcome",),
            registry=self.registry,
        )

    def _declare_state(self) -> None:
        self._build_info = Gauge(
            "signproxy_build_info",
            "Always 1; labels name the signproxy, Python and mitmproxy versions.",
            ("version", "python", "mitmproxy"),
            registry=self.registry,
        )
        self._draining = Gauge(
            "signproxy_draining",
            "1 while the proxy drains before stopping, else 0.",
            registry=self.registry,
        )
        self._ready = Gauge(
            "signproxy_ready",
            "1 when the proxy can sign requests (as /readyz reports), else 0.",
            registry=self.registry,
        )

    def _initialise_series(self) -> None:
        for method in METHODS:
            self._request_duration.labels(method)
            self._upstream_duration.labels(method)
            for outcome in OUTCOMES:
                for klass in STATUS_CLASSES:
                    self._requests.labels(method, outcome, klass)
        for mode in PAYLOAD_MODES:
            self._payload_requests.labels(mode)
            self._payload_bytes.labels(mode)
        for signer in SIGNERS:
            self._signing_duration.labels(signer)
        for operation in STS_OPERATIONS:
            self._sts_duration.labels(operation)
            for outcome in STS_OUTCOMES:
                self._sts_calls.labels(operation, outcome)
        for result in CACHE_RESULTS:
            self._auth_cache.labels(result)
        for outcome in REFRESH_OUTCOMES:
            self._credential_refreshes.labels(outcome)
        self._build_info.labels(
            __version__,
            platform.python_version(),
            _distribution_version("mitmproxy"),
        ).set(1)

    # -- recording ----------------------------------------------------------

    def _child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, looked up once per label set.

        prometheus-client's `labels()` costs ~12 us per request on the hot
        path; every label set here is from a bounded, checked set, so the
        memo is bounded too.
        """
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def request_done(
        self,
        method: str,
        outcome: str,
        status: int,
        total_seconds: float,
        upstream_seconds: float | None,
    ) -> None:
        """One request answered: forwarded, refused, unsignable or failed upstream."""
        label = method_label(method)
        _check("outcome", outcome, OUTCOMES)
        self._child(self._requests, label, outcome, status_class(status)).inc()
        self._child(self._request_duration, label).observe(total_seconds)
        if upstream_seconds is not None:
            self._child(self._upstream_duration, label).observe(upstream_seconds)

    def signing(self, signer: str, seconds: float) -> None:
        """One signature produced by `signer` (local, remote or cache)."""
        _check("signer", signer, SIGNERS)
        self._child(self._signing_duration, signer).observe(seconds)

    def sts_call(self, operation: str, outcome: str, seconds: float) -> None:
        """One STS operation finished (after its retries)."""
        _check("operation", operation, STS_OPERATIONS)
        _check("outcome", outcome, STS_OUTCOMES)
        self._child(self._sts_calls, operation, outcome).inc()
        self._child(self._sts_duration, operation).observe(seconds)

    def auth_cache(self, hit: bool) -> None:
        """One lookup in the remote authorization cache."""
        self._child(self._auth_cache, "hit" if hit else "miss").inc()

    def credentials_expiry(self, expires_at: datetime | None) -> None:
        """The expiry of the credentials now in use; None for none that expire."""
        if expires_at is None:
            self._credentials_expiry.set(0)
            return
        if expires_at.tzinfo is None:
            raise ValueError(
                f"metrics: expires_at {expires_at.isoformat()} has no time zone"
            )
        self._credentials_expiry.set(expires_at.timestamp())

    def credential_refresh(self, outcome: str) -> None:
        """One refresh of temporary credentials: ok or error."""
        _check("outcome", outcome, REFRESH_OUTCOMES)
        self._child(self._credential_refreshes, outcome).inc()

    def payload(self, mode: str, size: int | None) -> None:
        """How one request's payload went; `size` in bytes when known."""
        _check("mode", mode, PAYLOAD_MODES)
        self._child(self._payload_requests, mode).inc()
        if size is not None:
            if size < 0:
                raise ValueError(f"metrics: payload size {size} is negative")
            self._child(self._payload_bytes, mode).inc(size)

    def set_draining(self, draining: bool) -> None:
        """Mark the proxy as draining; /readyz answers 503 from then on."""
        self.draining = draining
        self._draining.set(1 if draining else 0)

    def set_ready(self, ready: bool) -> None:
        """Record the latest readiness answer (the management port calls this)."""
        self._ready.set(1 if ready else 0)

    def exposition(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)


Readiness = Callable[[], tuple[bool, str]]

_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Unavailable"}
_HEAD_LIMIT = 16 * 1024
_READ_TIMEOUT = 10.0


class ManagementServer:
    """The management port: /metrics, /healthz and /readyz over HTTP/1.1.

    `readiness()` says whether the proxy can sign now, and why not; it is asked
    on each /readyz and each /metrics scrape.  While `metrics` is draining the
    answer is 503 whatever `readiness()` says, so load balancers move away.
    """

    def __init__(
        self,
        host: str,
        port: int,
        metrics: Metrics,
        readiness: Readiness,
    ) -> None:
        self.host = host
        self.port = port
        self.metrics = metrics
        self.readiness = readiness
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Bind and serve; `port` is the bound port afterwards (for port 0)."""
        self._server = await asyncio.start_server(
            self._handle, self.host, self.port, limit=_HEAD_LIMIT
        )
        self.port = self._server.sockets[0].getsockname()[1]
        logger.info("management port listening on %s:%s", self.host, self.port)

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        with contextlib.suppress(Exception):
            await self._server.wait_closed()
        self._server = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    # -- one request --------------------------------------------------------

    async def _handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _READ_TIMEOUT)
            method, path = _request_line(head)
            status, content_type, body = self._answer(method, path)
            writer.write(_response(status, content_type, body, method == "HEAD"))
            await writer.drain()
        except (ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            logger.debug("management port: malformed request ignored")
        except (TimeoutError, ConnectionError):
            logger.debug("management port: client went away")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _answer(self, method: str, path: str) -> tuple[int, str, bytes]:
        if method not in ("GET", "HEAD"):
            return 405, "text/plain; charset=utf-8", b"method not allowed\n"
        route = path.split("?", 1)[0]
        if route == "/metrics":
            self._check_ready()
            return 200, CONTENT_TYPE_LATEST, self.metrics.exposition()
        if route == "/healthz":
            return 200, "text/plain; charset=utf-8", b"ok\n"
        if route == "/readyz":
            ready, reason = self._check_ready()
            status = 200 if ready else 503
            text = "ready" if ready and not reason else reason
            return status, "text/plain; charset=utf-8", f"{text}\n".encode()
        return 404, "text/plain; charset=utf-8", b"not found\n"

    def _check_ready(self) -> tuple[bool, str]:
        if self.metrics.draining:
            ready, reason = False, "draining"
        else:
            try:
                ready, reason = self.readiness()
            except Exception:
                logger.exception("readiness check failed")
                ready, reason = False, "readiness check failed"
        self.metrics.set_ready(ready)
        return ready, reason


def _request_line(head: bytes) -> tuple[str, str]:
    line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise ValueError(f"bad request line {line[:80]!r}")
    return parts[0], parts[1]


def _response(status: int, content_type: str, body: bytes, head_only: bool) -> bytes:
    lines = [
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Cache-Control: no-store",
        "Connection: close",
        "",
        "",
    ]
    return "\r\n".join(lines).encode("latin-1") + (b"" if head_only else body)

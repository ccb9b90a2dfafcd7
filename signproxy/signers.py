"""Signing strategies: local SigV4, remote STS authorization, and auto.

- `LocalSigner` signs with `sigv4.Signer` and a frozen credentials snapshot
  from a `CredentialProvider`.  It covers every request and can stream
  (it hands out the signing key for aws-chunked bodies).
- `RemoteSigner` asks SCP STS `object-store-authorization` for the
  Authorization value of each request, keeping answers in a bounded cache.
  It never holds a signing key, so it cannot stream signed chunks, and it
  covers only requests whose signature needs no header beyond
  `host;x-amz-content-sha256;x-amz-date` (see `headers_remote_cannot_sign`).
- `AutoSigner` prefers one and falls back to the other: local when
  credentials can be had, remote otherwise.

A request that cannot be signed raises `SigningFailed`, which the addon turns
into an S3 XML error; nothing is ever forwarded unsigned.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from cachetools import TTLCache

from signproxy import sigv4, sts
from signproxy.credentials import (
    AssumeRoleProvider,
    Clock,
    CredentialProvider,
    CredentialsUnavailable,
    SamlProvider,
    StaticProvider,
    utc_now,
)

if TYPE_CHECKING:
    from signproxy.metrics import Metrics

logger = logging.getLogger(__name__)

MODES = ("local", "remote", "auto")

# The headers an object-store-authorization signature covers: the operation
# takes only method, URL, x-amz-date and x-amz-content-sha256.
REMOTE_SIGNED_HEADERS = ("host", "x-amz-content-sha256", "x-amz-date")

# S3 refuses a request carrying an x-amz-* header its signature leaves out;
# every other header (content-type, content-md5, range, if-match, ...) may
# travel unsigned.  So the remote signature covers a request exactly when its
# only x-amz-* headers are the two it signs itself.
_REMOTE_OWN_AMZ = frozenset({"x-amz-content-sha256", "x-amz-date"})

# The store refuses a date more than 15 minutes from its clock; a cached
# remote authorization must be reused well inside that.
STORE_CLOCK_SKEW = 900.0

DEFAULT_RETRY_AFTER = 5
# How often an unreachable STS is tried again, with no request waiting on it.
DEFAULT_PROBE_INTERVAL = 5.0

Closer = Callable[[], Awaitable[None]]


# -- what goes in, what comes out -------------------------------------------


@dataclass(frozen=True, slots=True)
class SigningRequest:
    """One request to sign, as it will be forwarded.

    `path` is raw as received; `query` is raw with the client's presign
    parameters removed; `headers` include `host` and no longer carry the
    client's authorization, x-amz-date or x-amz-security-token.  `scheme` is
    the upstream's; it only shapes the URL given to STS (SigV4 does not sign
    it).
    """

    method: str
    path: str
    query: str
    headers: tuple[tuple[str, str], ...]
    payload_hash: str
    scheme: str = "https"


@dataclass(frozen=True, slots=True)
class Signed:
    """A signed request and which signer made it: local, remote or cache."""

    request: sigv4.SignedRequest
    signed_by: str


class SigningFailed(Exception):
    """A request that cannot be signed; becomes an S3 XML error answer.

    The message is shown to the client: it names what went wrong and never
    carries a secret.
    """

    def __init__(
        self, status: int, code: str, message: str, retry_after: int | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return f"SigningFailed({self.status}, {self.code!r}, {self.message!r})"


class RequestSigner(Protocol):
    name: str

    def can_stream(self) -> bool:
        """Whether sign() can give a signing key for aws-chunked bodies."""

    def covers(self, request: SigningRequest) -> bool:
        """Whether this signer can sign `request` at all."""

    async def sign(self, request: SigningRequest) -> Signed: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def ready(self) -> tuple[bool, str]: ...


# -- local ------------------------------------------------------------------


class LocalSigner:
    """SigV4 with credentials from a provider; covers everything, streams."""

    name = "local"

    def __init__(
        self,
        provider: CredentialProvider,
        region: str,
        service: str = "s3",
        *,
        clock: Clock = utc_now,
        metrics: Metrics | None = None,
    ) -> None:
        self.provider = provider
        self.signer = sigv4.Signer(region, service)
        self._clock = clock
        self._metrics = metrics
        self.on_close: list[Closer] = []

    def can_stream(self) -> bool:
        return True

    def covers(self, request: SigningRequest) -> bool:
        return True

    async def sign(self, request: SigningRequest) -> Signed:
        try:
            credentials = await self.provider.credentials()
        except CredentialsUnavailable as exc:
            raise SigningFailed(
                503, "ServiceUnavailable", exc.message, exc.retry_after
            ) from exc

        started = time.perf_counter()
        try:
            signed = self.signer.sign(
                request.method,
                request.path,
                request.query,
                request.headers,
                request.payload_hash,
                credentials,
                self._clock(),
            )
        except sigv4.SigningError as exc:
            raise SigningFailed(400, "InvalidRequest", str(exc)) from exc
        if self._metrics:
            self._metrics.signing("local", time.perf_counter() - started)
        return Signed(signed, "local")

    async def start(self) -> None:
        await self.provider.start()

    async def close(self) -> None:
        await self.provider.close()
        await _run_all(self.on_close)

    def ready(self) -> tuple[bool, str]:
        return self.provider.ready()

    def __repr__(self) -> str:
        return f"LocalSigner({self.provider!r}, region={self.signer.region!r})"


# -- remote -----------------------------------------------------------------


def headers_remote_cannot_sign(headers: Sequence[tuple[str, str]]) -> list[str]:
    """The x-amz-* headers a remote signature would leave unsigned, sorted."""
    names = {name.lower() for name, _ in headers}
    return sorted(
        name
        for name in names
        if name.startswith("x-amz-") and name not in _REMOTE_OWN_AMZ
    )


def needs_signing_key(payload_hash: str) -> bool:
    """Signed aws-chunked bodies need the key for every chunk signature."""
    return payload_hash.startswith("STREAMING-AWS4-HMAC-SHA256-PAYLOAD")


def remote_refusal(request: SigningRequest) -> str | None:
    """Why the remote signer cannot sign `request`, or None if it can."""
    if needs_signing_key(request.payload_hash):
        return (
            f"payload {request.payload_hash} needs a signing key for its chunk "
            "signatures, which the remote signer never holds"
        )
    uncovered = headers_remote_cannot_sign(request.headers)
    if uncovered:
        return (
            "the remote signer signs only "
            + ";".join(REMOTE_SIGNED_HEADERS)
            + ", but S3 requires these headers to be signed: "
            + ", ".join(uncovered)
        )
    return None


class _Entry:
    """One cached STS answer, as the signed request it makes, ready to hand out.

    A plain slotted class: the hit path reads two attributes and returns
    `hit`, built once when STS answered.
    """

    __slots__ = ("hit", "request", "signed_at")

    def __init__(self, request: sigv4.SignedRequest) -> None:
        self.request = request
        # x-amz-date has whole seconds; the age is judged from it.
        self.signed_at = sigv4.parse_amz_date(request.amz_date).timestamp()
        self.hit = Signed(request, "cache")


_CacheKey = tuple[str, str, str, str, str, str]
_NAME_MEMO = 512  # distinct header names remembered as neither host nor x-amz-*


class RemoteSigner:
    """STS object-store-authorization per request, with a bounded cache.

    The cache maps (method, scheme, host, raw path, raw query, payload hash)
    to the signed request STS's (x-amz-date, Authorization) answer makes, and
    reuses it while the date is at most `cache_ttl` seconds old, well inside
    the store's 15-minute clock skew window.  Keyed on the raw path and query,
    a hit canonicalizes nothing: it is a cache look-up, a clock read and the
    `Signed` built when STS answered.  The cache is a `cachetools.TTLCache`
    on the injected clock: bounded, and entries leave it `cache_ttl` seconds
    after they were stored; the age of the signed date itself is checked on
    every hit, since STS answered a little after that date.  Identical
    concurrent misses share one STS call; a caller that joins a call in
    flight counts as a cache hit, since it caused no call of its own.
    """

    name = "remote"

    def __init__(
        self,
        client: sts.StsClient,
        region: str,
        service: str = "s3",
        *,
        cache_size: int = 10000,
        cache_ttl: float = 300.0,
        retry_after: int = DEFAULT_RETRY_AFTER,
        probe_interval: float = DEFAULT_PROBE_INTERVAL,
        clock: Clock = utc_now,
        metrics: Metrics | None = None,
    ) -> None:
        _check_cache(cache_size, cache_ttl)
        self.client = client
        self.region = region
        self.service = service
        self._cache_ttl = cache_ttl
        self._retry_after = retry_after
        self._clock = clock
        self._metrics = metrics
        self.on_close: list[Closer] = []
        self._cache: TTLCache[_CacheKey, _Entry] | None = (
            TTLCache(cache_size, cache_ttl, timer=self._timestamp)
            if cache_size > 0 and cache_ttl > 0
            else None
        )
        self._in_flight: dict[_CacheKey, asyncio.Task[_Entry]] = {}
        # Header names seen that are neither host nor an x-amz-* one the
        # remote signature would leave out (bounded, never secret).
        self._plain_names: set[str] = set()
        # Why STS was last found unreachable; None while it answers.
        self._unreachable: str | None = None
        self._probe_interval = probe_interval
        self._probe: asyncio.Task[None] | None = None

    def can_stream(self) -> bool:
        return False

    def covers(self, request: SigningRequest) -> bool:
        return remote_refusal(request) is None

    async def sign(self, request: SigningRequest) -> Signed:
        started = time.perf_counter()
        key = self._cache_key(request)
        cache = self._cache
        if cache is not None:
            entry = cache.get(key)
            if (
                entry is not None
                and 0 <= self._clock().timestamp() - entry.signed_at <= self._cache_ttl
            ):
                if self._metrics:
                    self._count(hit=True)
                    self._metrics.signing("cache", time.perf_counter() - started)
                return entry.hit
        return await self._sign_uncached(key, request, started)

    def _cache_key(self, request: SigningRequest) -> _CacheKey:
        """The cache key; raises SigningFailed when remote cannot sign it."""
        host = None
        plain = self._plain_names
        for name, value in request.headers:
            if name in plain:
                continue
            lname = name.lower()
            if lname == "host":
                if host is None:
                    host = value
                continue
            if lname.startswith("x-amz-") and lname not in _REMOTE_OWN_AMZ:
                raise SigningFailed(400, "InvalidRequest", remote_refusal(request))
            if len(plain) < _NAME_MEMO:
                plain.add(name)
        if needs_signing_key(request.payload_hash):
            raise SigningFailed(400, "InvalidRequest", remote_refusal(request))
        if not host:
            raise SigningFailed(400, "InvalidRequest", "missing host header")
        return (
            request.method,
            request.scheme,
            host,
            request.path,
            request.query,
            request.payload_hash,
        )

    async def _sign_uncached(
        self, key: _CacheKey, request: SigningRequest, started: float
    ) -> Signed:
        task = self._in_flight.get(key)
        signed_by = "cache"
        if task is None:
            signed_by = "remote"
            url, path, query = _url(key)
            amz_date = sigv4.amz_date(self._clock())
            task = asyncio.create_task(self._call(key, url, path, query, amz_date))
            task.add_done_callback(lambda done: self._call_done(key, done))
            self._in_flight[key] = task
        self._count(hit=signed_by == "cache")
        # shield: a caller that goes away must not cancel the others' call.
        entry = await asyncio.shield(task)
        if self._metrics:
            self._metrics.signing(signed_by, time.perf_counter() - started)
        return entry.hit if signed_by == "cache" else Signed(entry.request, "remote")

    def _count(self, *, hit: bool) -> None:
        if self._metrics:
            self._metrics.auth_cache(hit)

    def _call_done(self, key: _CacheKey, task: asyncio.Task[_Entry]) -> None:
        if self._in_flight.get(key) is task:
            del self._in_flight[key]
        if not task.cancelled():
            task.exception()  # retrieved here, so nobody waiting is not an error

    async def _call(
        self, key: _CacheKey, url: str, path: str, query: str, amz_date: str
    ) -> _Entry:
        method, payload_hash = key[0], key[5]
        started = time.perf_counter()
        outcome = "unavailable"
        try:
            value = await self.client.object_store_authorization(
                method,
                url,
                amz_date,
                payload_hash,
                region=self.region,
                service=self.service,
            )
            outcome = "ok"
        except sts.StsUnavailable as exc:
            logger.warning("remote signing unavailable: %s", exc)
            self._mark_unreachable(exc.code, key, url, path, query)
            raise SigningFailed(
                503,
                "ServiceUnavailable",
                f"the signing service (STS) is unavailable: {exc.code}",
                self._retry_after,
            ) from exc
        except sts.StsError as exc:
            outcome = "client_error"
            self._unreachable = None  # it answered, if only to refuse
            raise _refused(exc) from exc
        finally:
            if self._metrics:
                seconds = time.perf_counter() - started
                self._metrics.sts_call("object_store_authorization", outcome, seconds)
        self._unreachable = None

        _check_authorization(value)
        entry = _Entry(_signed_request(path, query, payload_hash, amz_date, value))
        if self._cache is not None:
            self._cache[key] = entry
        return entry

    def _timestamp(self) -> float:
        return self._clock().timestamp()

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        tasks = list(self._in_flight.values())
        if self._probe is not None:
            tasks.append(self._probe)
        for task in tasks:
            task.cancel()
        self._in_flight.clear()
        await _run_all(self.on_close)

    def ready(self) -> tuple[bool, str]:
        if self._unreachable is not None:
            return False, (
                f"STS at {self.client.endpoint} unreachable: {self._unreachable}"
            )
        return True, f"remote signing through STS at {self.client.endpoint}"

    def _mark_unreachable(
        self, reason: str, key: _CacheKey, url: str, path: str, query: str
    ) -> None:
        """Not ready until STS answers again, which a probe finds out.

        An unready instance gets no traffic (that is what readiness is for),
        so no request would ever find STS back: the failed call is repeated
        in the background, with a fresh date, until STS answers.
        """
        self._unreachable = reason
        if self._probe is None or self._probe.done():
            self._probe = asyncio.create_task(self._probe_sts(key, url, path, query))

    async def _probe_sts(self, key: _CacheKey, url: str, path: str, query: str) -> None:
        while self._unreachable is not None:
            await asyncio.sleep(self._probe_interval)
            amz_date = sigv4.amz_date(self._clock())
            try:
                await self._call(key, url, path, query, amz_date)
            except SigningFailed:
                continue  # still unreachable, or reachable and refusing: see _call
        logger.info("remote signing: STS at %s answers again", self.client.endpoint)

    def __repr__(self) -> str:
        return (
            f"RemoteSigner(endpoint={self.client.endpoint!r}, region={self.region!r})"
        )


def _url(key: _CacheKey) -> tuple[str, str, str]:
    """The URL for STS, and the canonical path and query it carries."""
    _, scheme, host, raw_path, raw_query, _ = key
    try:
        path = sigv4.canonical_path(raw_path)
        query = sigv4.canonical_query(raw_query)
    except sigv4.SigningError as exc:
        raise SigningFailed(400, "InvalidRequest", str(exc)) from exc
    url = f"{scheme}://{host}{path}" + (f"?{query}" if query else "")
    return url, path, query


def _refused(exc: sts.StsError) -> SigningFailed:
    """STS refused the proxy's own call: a 4xx, or an answer we cannot use.

    Answered 502: the fault lies between the proxy and its signing service
    (the proxy's SCP key, its permissions, its configuration), so it is not
    the client's 403 to fix by changing its dummy keys, and not a 503 that
    would clear by retrying soon.
    """
    if isinstance(exc, sts.StsRequestInvalid):
        logger.error("remote signing request not sent: %s", exc)
        return SigningFailed(
            500,
            "InternalError",
            f"the proxy could not ask STS for a signature ({exc.field} invalid)",
        )
    logger.error("remote signing refused: %s", exc)
    reference = f" (STS request id {exc.request_id})" if exc.request_id else ""
    return SigningFailed(
        502,
        "SigningServiceError",
        f"the signing service refused the proxy's request: "
        f"{exc.status} {exc.code}{reference}",
    )


def _check_authorization(value: str) -> None:
    if not value.startswith(sigv4.ALGORITHM + " ") or "Signature=" not in value:
        logger.error("STS answered an Authorization value that is not SigV4")
        raise SigningFailed(
            502,
            "SigningServiceError",
            "the signing service answered an Authorization value that is not "
            f"{sigv4.ALGORITHM}",
        )


def _signed_request(
    path: str, query: str, payload_hash: str, amz_date: str, authorization: str
) -> sigv4.SignedRequest:
    fields = _authorization_fields(authorization)
    credential = fields.get("Credential", "")
    return sigv4.SignedRequest(
        path=path,
        query=query,
        headers=(
            ("x-amz-date", amz_date),
            ("x-amz-content-sha256", payload_hash),
            ("authorization", authorization),
        ),
        authorization=authorization,
        signature=fields.get("Signature", ""),
        amz_date=amz_date,
        scope=credential.partition("/")[2],
        signed_headers=fields.get("SignedHeaders", ""),
        signing_key=b"",
        # STS does not tell what it canonicalized; only the store knows.
        canonical_request="",
        string_to_sign="",
    )


def _authorization_fields(value: str) -> dict[str, str]:
    """Credential, SignedHeaders and Signature out of a SigV4 Authorization."""
    _, _, rest = value.partition(" ")
    fields = {}
    for part in rest.split(","):
        name, _, field_value = part.strip().partition("=")
        fields[name] = field_value
    return fields


# -- auto -------------------------------------------------------------------


class AutoSigner:
    """One signer preferred, the other as fallback.

    `start()` tries the local signer's first fetch when local is preferred;
    if it fails, remote leads and local stays behind it, able to recover.
    Each request goes to the first signer that covers it; with `failover` a
    5xx failure (STS down, credentials unavailable) passes the request on to
    the other signer.  4xx failures are the request's own and are not retried.
    """

    def __init__(
        self,
        local: LocalSigner | None,
        remote: RemoteSigner | None,
        *,
        prefer: str = "local",
        failover: bool = True,
        name: str = "auto",
    ) -> None:
        if local is None and remote is None:
            raise ValueError("AutoSigner needs a local or a remote signer")
        if prefer not in ("local", "remote"):
            raise ValueError(f"prefer must be 'local' or 'remote', not {prefer!r}")
        self.name = name
        self.local = local
        self.remote = remote
        self._prefer = prefer
        self._failover = failover
        self.on_close: list[Closer] = []
        self.order: list[LocalSigner | RemoteSigner] = self._ordered(prefer)

    def _ordered(self, first: str) -> list[LocalSigner | RemoteSigner]:
        pair = (
            [self.local, self.remote]
            if first == "local"
            else [
                self.remote,
                self.local,
            ]
        )
        return [signer for signer in pair if signer is not None]

    def can_stream(self) -> bool:
        return self.local is not None

    def covers(self, request: SigningRequest) -> bool:
        return any(signer.covers(request) for signer in self.order)

    async def start(self) -> None:
        if self.remote is not None:
            await self.remote.start()
        if self.local is None:
            return
        try:
            await self.local.start()
        except CredentialsUnavailable as exc:
            if self.remote is None:
                raise
            logger.warning(
                "local signing unavailable at start (%s); remote signing leads",
                exc.message,
            )
            self.order = self._ordered("remote")
            return
        self.order = self._ordered(self._prefer)
        logger.info("%s signer: %s first", self.name, self.order[0].name)

    async def sign(self, request: SigningRequest) -> Signed:
        candidates = [signer for signer in self.order if signer.covers(request)]
        if not candidates:
            raise SigningFailed(400, "InvalidRequest", self._uncovered(request))
        if not self._failover:
            candidates = candidates[:1]
        failure: SigningFailed | None = None
        for signer in candidates:
            try:
                return await signer.sign(request)
            except SigningFailed as exc:
                if exc.status < 500:
                    raise
                failure = failure or exc
                if signer is not candidates[-1]:
                    logger.warning(
                        "%s signing failed (%s %s); trying the next signer",
                        signer.name,
                        exc.status,
                        exc.code,
                    )
        assert failure is not None
        raise failure  # the preferred signer's failure

    def _uncovered(self, request: SigningRequest) -> str:
        reason = remote_refusal(request) or "no signer covers this request"
        return f"{reason}; no local signer is configured (use --signer local or auto)"

    async def close(self) -> None:
        for signer in self.order:
            await signer.close()
        await _run_all(self.on_close)

    def ready(self) -> tuple[bool, str]:
        reasons = []
        for signer in self.order:
            ok, reason = signer.ready()
            if ok:
                return True, f"{signer.name}: {reason}"
            reasons.append(f"{signer.name}: {reason}")
        return False, "; ".join(reasons)

    def __repr__(self) -> str:
        return f"AutoSigner({', '.join(s.name for s in self.order)})"


# -- settings and the factory -----------------------------------------------


@dataclass
class SignerSettings:
    """Everything the `signproxy run` signer options map to."""

    mode: str = "auto"
    region: str = "kr-west1"
    service: str = "s3"
    sts_endpoint: str | None = None
    api_version: str = "1.1"
    force_deprecated: bool = False
    scp_credentials: sts.ScpCredentials | None = None
    role_indicator: str | None = None
    role_session_name: str = "signproxy"
    duration_seconds: int = 3600
    principal_indicator: str | None = None
    saml_assertion_file: Path | None = None
    advisory_refresh: float = 900
    mandatory_refresh: float = 300
    auth_cache_size: int = 10000
    auth_cache_ttl: float = 300

    def check(self) -> None:
        """Raise ValueError naming the first bad setting and its value."""
        if self.mode not in MODES:
            raise ValueError(
                f"invalid signer mode {self.mode!r}: expected local, remote or auto"
            )
        if self.duration_seconds <= 0:
            raise ValueError(
                f"duration_seconds must be positive, not {self.duration_seconds!r}"
            )
        if self.mandatory_refresh < 0 or self.advisory_refresh < self.mandatory_refresh:
            raise ValueError(
                f"refresh windows: need advisory_refresh ({self.advisory_refresh!r}) "
                f">= mandatory_refresh ({self.mandatory_refresh!r}) >= 0"
            )
        _check_cache(self.auth_cache_size, self.auth_cache_ttl)
        saml = (self.principal_indicator, self.saml_assertion_file)
        if any(saml) and not all(saml):
            raise ValueError(
                "SAML needs both principal_indicator and saml_assertion_file "
                f"(got principal_indicator={self.principal_indicator!r}, "
                f"saml_assertion_file={self.saml_assertion_file!r})"
            )
        if all(saml) and not self.role_indicator:
            raise ValueError("SAML needs role_indicator too")

    @property
    def role_configured(self) -> bool:
        return bool(self.role_indicator)


def create_signer(
    settings: SignerSettings,
    *,
    metrics: Metrics | None = None,
    clock: Clock = utc_now,
    environ: Mapping[str, str] = os.environ,
) -> RequestSigner:
    """Build the STS client, the provider and the strategy `settings` ask for.

    SCP credentials come from `settings.scp_credentials`, else from
    SCP_ACCESS_KEY/SCP_SECRET_KEY in `environ`.  The returned signer owns the
    STS client and closes it in `close()`; call `start()` before signing.
    """
    settings.check()
    scp = settings.scp_credentials or sts.ScpCredentials.from_env(environ)
    endpoint = _endpoint(settings, environ)
    client = (
        sts.StsClient(
            endpoint,
            scp,
            api_version=settings.api_version,
            force_deprecated=settings.force_deprecated,
            clock=clock,
        )
        if endpoint is not None
        else None
    )

    local = None
    if settings.mode != "remote" or settings.role_configured:
        provider = _provider(settings, scp, client, clock, metrics)
        local = LocalSigner(
            provider, settings.region, settings.service, clock=clock, metrics=metrics
        )
    remote = None
    if settings.mode != "local" and client is not None:
        remote = RemoteSigner(
            client,
            settings.region,
            settings.service,
            cache_size=settings.auth_cache_size,
            cache_ttl=settings.auth_cache_ttl,
            clock=clock,
            metrics=metrics,
        )

    signer: LocalSigner | RemoteSigner | AutoSigner
    if settings.mode == "local" and local is not None:
        signer = local
    elif settings.mode == "remote" and local is None and remote is not None:
        signer = remote
    else:
        # remote with a role: the local signer takes what remote cannot cover,
        # but does not stand in when STS fails (that is what auto is for).
        signer = AutoSigner(
            local,
            remote,
            prefer="remote" if settings.mode == "remote" else "local",
            failover=settings.mode == "auto",
            name=settings.mode,
        )
    if client is not None:
        signer.on_close.append(client.aclose)
    logger.info("signer %r ready to start", signer)
    return signer


def _endpoint(settings: SignerSettings, environ: Mapping[str, str]) -> str | None:
    """The STS endpoint, or None when nothing needs STS and none is set.

    An endpoint that is given but invalid is an error in every mode.
    """
    given = (
        settings.sts_endpoint
        or environ.get("SCP_STS_ENDPOINT")
        or environ.get("SCP_ENV")
    )
    needs_sts = settings.mode == "remote" or settings.role_configured
    if not given and not needs_sts:
        logger.info("no STS endpoint configured: signing with static keys only")
        return None
    return sts.resolve_endpoint(settings.sts_endpoint, environ)


def _provider(
    settings: SignerSettings,
    scp: sts.ScpCredentials,
    client: sts.StsClient | None,
    clock: Clock,
    metrics: Metrics | None,
) -> CredentialProvider:
    if not settings.role_configured:
        return StaticProvider.from_scp(scp)
    assert client is not None  # _endpoint raised otherwise
    assert settings.role_indicator is not None
    refresh = {
        "clock": clock,
        "advisory_refresh": settings.advisory_refresh,
        "mandatory_refresh": settings.mandatory_refresh,
        "metrics": metrics,
    }
    if settings.saml_assertion_file is not None:
        assert settings.principal_indicator is not None
        return SamlProvider(
            client,
            settings.role_indicator,
            settings.principal_indicator,
            settings.saml_assertion_file,
            settings.duration_seconds,
            **refresh,
        )
    return AssumeRoleProvider(
        client,
        settings.role_indicator,
        settings.role_session_name,
        settings.duration_seconds,
        **refresh,
    )


def _check_cache(size: int, ttl: float) -> None:
    if size < 0:
        raise ValueError(f"auth_cache_size must be >= 0, not {size!r}")
    if not 0 <= ttl < STORE_CLOCK_SKEW:
        raise ValueError(
            f"auth_cache_ttl must be >= 0 and below the store's clock skew "
            f"window of {STORE_CLOCK_SKEW:.0f} s, not {ttl!r}"
        )


async def _run_all(closers: Sequence[Closer]) -> None:
    for close in closers:
        try:
            await close()
        except Exception:
            logger.warning("error while closing %r", close, exc_info=True)


__all__ = [
    "MODES",
    "AutoSigner",
    "LocalSigner",
    "RemoteSigner",
    "RequestSigner",
    "Signed",
    "SignerSettings",
    "SigningFailed",
    "SigningRequest",
    "create_signer",
]

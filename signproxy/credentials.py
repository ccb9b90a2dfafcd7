"""Credentials for local signing, kept fresh ahead of their expiry.

Three providers hand out frozen `sigv4.Credentials` snapshots:

- `StaticProvider`: the SCP access key pair itself, which SCP Object Storage
  accepts as S3 credentials; used when no role is configured.  Never expires.
- `AssumeRoleProvider`: temporary credentials from STS `assume-role`.
- `SamlProvider`: temporary credentials from STS `assume-role-with-saml`; the
  assertion file is read again at every refresh, so an outside process can
  replace it.

The two STS providers refresh ahead of expiry in two windows, measured back
from the expiration:

- advisory window (default 15 min): the current snapshot is served and one
  refresh runs in the background.  If it fails, a WARNING is logged, later
  attempts back off, and the current snapshot keeps being served;
- mandatory window (default 5 min), or once expired: callers wait for one
  shared refresh (single flight: any number of concurrent callers cause one
  STS call) and get `CredentialsUnavailable`, carrying a `retry_after`, if it
  fails.  While backing off after a failure, such callers are answered at
  once instead of calling STS again.

A window at least as long as the credentials' lifetime would refresh them
at once, on every request: such a window shrinks to half (advisory) or a
quarter (mandatory) of the lifetime, so a 900 s session with the default
15 min advisory window is refreshed after 450 s.  Shorter windows are kept as
configured (`--advisory-refresh 895` on 900 s credentials refreshes after
5 s).

Each refreshed secret key and session token (and SAML assertion) is
registered with `logs.register_secret` under this provider's slots, so logs
redact the current and the previous one.

Time comes from an injected clock (a callable returning a timezone-aware
`datetime`), which lets tests move time by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from signproxy import logs, sigv4, sts

if TYPE_CHECKING:
    from signproxy.metrics import Metrics

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]
T = TypeVar("T")

DEFAULT_ADVISORY_REFRESH = 900.0
DEFAULT_MANDATORY_REFRESH = 300.0
DEFAULT_REFRESH_INTERVAL = 30.0


def utc_now() -> datetime:
    """The real clock: now, timezone-aware, in UTC."""
    return datetime.now(UTC)


class CredentialsUnavailable(Exception):
    """No usable credentials right now; the caller may retry after a while."""

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class CredentialProvider(Protocol):
    """Where a local signer gets its credentials from."""

    async def start(self) -> None:
        """First fetch; raises `CredentialsUnavailable` on failure."""

    async def credentials(self) -> sigv4.Credentials:
        """A frozen snapshot, refreshed as the windows above describe."""

    def expiration(self) -> datetime | None:
        """When the current snapshot expires, or None if it never does."""

    def ready(self) -> tuple[bool, str]:
        """Whether requests can be signed now, and why (for /readyz)."""

    async def close(self) -> None:
        """Stop background work."""


class StaticProvider:
    """A fixed key pair that never expires (the SCP access key pair)."""

    kind = "static"

    def __init__(
        self, access_key: str, secret_key: str, session_token: str | None = None
    ) -> None:
        if not access_key or not secret_key:
            raise ValueError("static credentials need an access key and a secret key")
        self._credentials = sigv4.Credentials(access_key, secret_key, session_token)

    @classmethod
    def from_scp(cls, scp: sts.ScpCredentials) -> StaticProvider:
        return cls(scp.access_key, scp.secret_key)

    async def start(self) -> None:
        return None

    async def credentials(self) -> sigv4.Credentials:
        return self._credentials

    def expiration(self) -> datetime | None:
        return None

    def ready(self) -> tuple[bool, str]:
        return True, "static SCP access key configured"

    async def close(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"StaticProvider(access_key={self._credentials.access_key!r})"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Credentials with the moments their refresh windows open."""

    credentials: sigv4.Credentials
    expiration: datetime
    advisory_at: datetime
    mandatory_at: datetime


class RefreshingProvider:
    """Temporary credentials refreshed ahead of expiry; subclasses fetch them."""

    kind = "temporary"

    def __init__(
        self,
        *,
        clock: Clock = utc_now,
        advisory_refresh: float = DEFAULT_ADVISORY_REFRESH,
        mandatory_refresh: float = DEFAULT_MANDATORY_REFRESH,
        refresh_interval: float | None = DEFAULT_REFRESH_INTERVAL,
        backoff_base: float = 1.0,
        backoff_max: float = 30.0,
        metrics: Metrics | None = None,
    ) -> None:
        _check_windows(advisory_refresh, mandatory_refresh)
        if refresh_interval is not None and refresh_interval <= 0:
            raise ValueError(
                f"refresh_interval must be positive or None, not {refresh_interval!r}"
            )
        self._clock = clock
        self._advisory = advisory_refresh
        self._mandatory = mandatory_refresh
        self._refresh_interval = refresh_interval
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._metrics = metrics
        self._snapshot: Snapshot | None = None
        self._refresh: asyncio.Task[Snapshot] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._failures = 0
        self._retry_at: datetime | None = None
        self._last_error: str | None = None

    async def _fetch(self) -> tuple[sigv4.Credentials, datetime]:
        raise NotImplementedError("a refreshing provider must implement _fetch")

    # -- the provider protocol ------------------------------------------------

    async def start(self) -> None:
        """Fetch the first credentials, then watch the windows in the background."""
        await self._wait_for_refresh(self._clock())
        if self._refresh_interval is not None and self._watcher is None:
            self._watcher = asyncio.create_task(self._watch())

    async def credentials(self) -> sigv4.Credentials:
        snapshot = self._snapshot
        now = self._clock()
        if snapshot is not None and now < snapshot.mandatory_at:
            if now >= snapshot.advisory_at:
                self._refresh_in_background(now)
            return snapshot.credentials
        if snapshot is not None:
            logger.debug(
                "%s credentials in their mandatory window (expire at %s): "
                "waiting for the shared refresh",
                self.kind,
                snapshot.expiration.isoformat(),
            )
        fresh = await self._wait_for_refresh(now)
        return fresh.credentials

    def expiration(self) -> datetime | None:
        return self._snapshot.expiration if self._snapshot else None

    def ready(self) -> tuple[bool, str]:
        snapshot = self._snapshot
        if snapshot is None:
            reason = self._last_error or "not fetched yet"
            return False, f"no {self.kind} credentials: {reason}"
        now = self._clock()
        until = snapshot.expiration.isoformat()
        if now >= snapshot.expiration:
            return False, f"{self.kind} credentials expired at {until}" + (
                f"; last refresh failed: {self._last_error}" if self._last_error else ""
            )
        if now >= snapshot.mandatory_at and self._backing_off(now):
            return False, (
                f"{self.kind} credentials expire at {until} and refresh failed: "
                f"{self._last_error}"
            )
        return True, f"{self.kind} credentials valid until {until}"

    async def close(self) -> None:
        for task in (self._watcher, self._refresh):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(
                    asyncio.CancelledError, CredentialsUnavailable
                ):
                    await task
        self._watcher = None
        self._refresh = None

    # -- refresh machinery ----------------------------------------------------

    def _backing_off(self, now: datetime) -> bool:
        return self._retry_at is not None and now < self._retry_at

    def _refresh_in_background(self, now: datetime) -> None:
        """Start a refresh unless one runs or a failure asks to wait."""
        if self._refresh is None and not self._backing_off(now):
            self._start_refresh()

    async def _wait_for_refresh(self, now: datetime) -> Snapshot:
        """Join the refresh in flight, or start one; single flight."""
        if self._refresh is None:
            if self._retry_at is not None and now < self._retry_at:
                wait = (self._retry_at - now).total_seconds()
                raise CredentialsUnavailable(
                    f"{self.kind} credentials unavailable: {self._last_error}",
                    retry_after=max(1, math.ceil(wait)),
                )
            self._start_refresh()
        assert self._refresh is not None
        # shield: one caller giving up must not cancel the others' refresh.
        return await asyncio.shield(self._refresh)

    def _start_refresh(self) -> None:
        task = asyncio.create_task(self._run_refresh())
        task.add_done_callback(self._refresh_done)
        self._refresh = task

    @staticmethod
    def _refresh_done(task: asyncio.Task[Snapshot]) -> None:
        if not task.cancelled():
            task.exception()  # retrieved here, so a background failure is quiet

    async def _run_refresh(self) -> Snapshot:
        try:
            credentials, expiration = await self._fetch()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise self._refresh_failed(exc) from exc
        finally:
            # Cleared before the outcome is known to anyone: a caller arriving
            # after it finds no finished refresh to join by mistake.
            if self._refresh is asyncio.current_task():
                self._refresh = None
        snapshot = self._store(credentials, expiration)
        logger.info(
            "refreshed %s credentials for %s, valid until %s",
            self.kind,
            credentials.access_key,
            expiration.isoformat(),
        )
        return snapshot

    def _store(self, credentials: sigv4.Credentials, expiration: datetime) -> Snapshot:
        self._register_secrets(credentials)
        now = self._clock()
        lifetime = max(0.0, (expiration - now).total_seconds())
        advisory, mandatory = self._windows(lifetime)
        snapshot = Snapshot(
            credentials=credentials,
            expiration=expiration,
            advisory_at=expiration - timedelta(seconds=advisory),
            mandatory_at=expiration - timedelta(seconds=mandatory),
        )
        self._snapshot = snapshot
        self._failures = 0
        self._retry_at = None
        self._last_error = None
        if self._metrics:
            self._metrics.credential_refresh("ok")
            self._metrics.credentials_expiry(expiration)
        return snapshot

    def _windows(self, lifetime: float) -> tuple[float, float]:
        """The advisory and mandatory windows for credentials living `lifetime`."""
        advisory = self._advisory if self._advisory < lifetime else lifetime / 2
        mandatory = self._mandatory if self._mandatory < lifetime else lifetime / 4
        return advisory, min(mandatory, advisory)

    def _secret_slot(self, name: str) -> str:
        return f"{self.kind}@{id(self):x}/{name}"

    def _register_secrets(self, credentials: sigv4.Credentials) -> None:
        logs.register_secret(credentials.secret_key, slot=self._secret_slot("secret"))
        logs.register_secret(credentials.session_token, slot=self._secret_slot("token"))

    def _refresh_failed(self, exc: Exception) -> CredentialsUnavailable:
        reason = _describe(exc)
        self._failures += 1
        delay = min(self._backoff_max, self._backoff_base * 2 ** (self._failures - 1))
        self._retry_at = self._clock() + timedelta(seconds=delay)
        self._last_error = reason
        logger.warning(
            "unable to refresh %s credentials: %s; next attempt in %.1f s",
            self.kind,
            reason,
            delay,
            exc_info=not isinstance(exc, sts.StsError | OSError | ValueError),
        )
        if self._metrics:
            self._metrics.credential_refresh("error")
        return CredentialsUnavailable(
            f"unable to refresh {self.kind} credentials: {reason}",
            retry_after=max(1, math.ceil(delay)),
        )

    async def _watch(self) -> None:
        """Open the advisory window even when no request arrives to notice it."""
        assert self._refresh_interval is not None
        while True:
            await asyncio.sleep(self._refresh_interval)
            snapshot = self._snapshot
            now = self._clock()
            if snapshot is None or now >= snapshot.advisory_at:
                self._refresh_in_background(now)

    async def _sts_call(self, operation: str, call: Awaitable[T]) -> T:
        """Await one STS call, recording its outcome and duration."""
        started = time.perf_counter()
        outcome = "unavailable"
        try:
            result = await call
            outcome = "ok"
            return result
        except sts.StsUnavailable:
            raise
        except sts.StsError:
            outcome = "client_error"
            raise
        finally:
            if self._metrics:
                seconds = time.perf_counter() - started
                self._metrics.sts_call(operation, outcome, seconds)


class AssumeRoleProvider(RefreshingProvider):
    """Temporary credentials from STS `assume-role`."""

    kind = "assume-role"

    def __init__(
        self,
        client: sts.StsClient,
        role_indicator: str,
        role_session_name: str = "signproxy",
        duration_seconds: int | None = 3600,
        **refresh: Any,
    ) -> None:
        super().__init__(**refresh)
        self._client = client
        self.role_indicator = role_indicator
        self.role_session_name = role_session_name
        self.duration_seconds = duration_seconds

    async def _fetch(self) -> tuple[sigv4.Credentials, datetime]:
        result = await self._sts_call(
            "assume_role",
            self._client.assume_role(
                self.role_indicator, self.role_session_name, self.duration_seconds
            ),
        )
        return _snapshot_of(result.credentials)

    def __repr__(self) -> str:
        return f"AssumeRoleProvider(role_indicator={self.role_indicator!r})"


class SamlProvider(RefreshingProvider):
    """Temporary credentials from STS `assume-role-with-saml`.

    The assertion is read from its file at every refresh; a missing, unreadable
    or empty file is a refresh failure like an STS error, never a crash.
    """

    kind = "assume-role-with-saml"

    def __init__(
        self,
        client: sts.StsClient,
        role_indicator: str,
        principal_indicator: str,
        assertion_file: Path,
        duration_seconds: int | None = 3600,
        **refresh: Any,
    ) -> None:
        super().__init__(**refresh)
        self._client = client
        self.role_indicator = role_indicator
        self.principal_indicator = principal_indicator
        self.assertion_file = Path(assertion_file)
        self.duration_seconds = duration_seconds

    async def _fetch(self) -> tuple[sigv4.Credentials, datetime]:
        assertion = await asyncio.to_thread(self._read_assertion)
        logs.register_secret(assertion, slot=self._secret_slot("assertion"))
        result = await self._sts_call(
            "assume_role_with_saml",
            self._client.assume_role_with_saml(
                self.role_indicator,
                self.principal_indicator,
                assertion,
                self.duration_seconds,
            ),
        )
        logger.info(
            "SAML assertion from %s accepted for subject %s",
            self.assertion_file,
            result.subject,
        )
        return _snapshot_of(result.credentials)

    def _read_assertion(self) -> str:
        try:
            assertion = self.assertion_file.read_text(encoding="ascii").strip()
        except UnicodeDecodeError:
            raise ValueError(
                f"SAML assertion file {self.assertion_file} is not base64 text"
            ) from None
        except OSError as exc:
            raise OSError(
                f"unable to read SAML assertion file {self.assertion_file}: "
                f"{exc.strerror or exc}"
            ) from None
        if not assertion:
            raise ValueError(f"SAML assertion file {self.assertion_file} is empty")
        return assertion

    def __repr__(self) -> str:
        return (
            f"SamlProvider(role_indicator={self.role_indicator!r}, "
            f"assertion_file={str(self.assertion_file)!r})"
        )


def _snapshot_of(
    temporary: sts.TemporaryCredentials,
) -> tuple[sigv4.Credentials, datetime]:
    credentials = sigv4.Credentials(
        temporary.access_key_id,
        temporary.secret_access_key,
        temporary.session_token,
    )
    return credentials, temporary.expiration


def _describe(exc: Exception) -> str:
    """A one-line reason that names what failed and carries no secret."""
    if isinstance(exc, sts.StsError):
        return str(exc)  # sts.py sanitizes its messages
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, OSError | ValueError) else type(exc).__name__


def _check_windows(advisory: float, mandatory: float) -> None:
    if mandatory < 0:
        raise ValueError(f"mandatory_refresh must be >= 0 seconds, not {mandatory!r}")
    if advisory < mandatory:
        raise ValueError(
            f"advisory_refresh ({advisory!r} s) must be at least "
            f"mandatory_refresh ({mandatory!r} s)"
        )

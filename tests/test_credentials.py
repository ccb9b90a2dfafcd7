"""Credential providers: refresh windows, single flight, back-off, SAML files.

Time is a fake clock moved by hand.  STS is a small in-test fake with the
client's async methods, whose calls can be held open to make concurrency
visible; everything that talks to the real emulator lives in
tests/e2e/test_signers_store.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from signproxy import sts
from signproxy.credentials import (
    AssumeRoleProvider,
    CredentialsUnavailable,
    SamlProvider,
    StaticProvider,
)
from signproxy.logs import REDACTED, forget_secrets, redact, registered_secret_count
from signproxy.metrics import Metrics

ROLE = "dev2:afd580f490394896a6bceabf77683c6bd:signer-role"
PRINCIPAL = "dev2:afd580f490394896a6bceabf77683c6bd:saml-provider"
LIFETIME = 3600


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class FakeSts:
    """The STS client's assume operations, held open or failing on demand."""

    def __init__(self, clock: FakeClock, lifetime: float = LIFETIME) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.calls: list[tuple[str, ...]] = []
        self.failure: Exception | None = None
        self.gate = asyncio.Event()
        self.gate.set()

    def hold(self) -> None:
        self.gate.clear()

    def release(self) -> None:
        self.gate.set()

    async def assume_role(
        self, role_indicator: str, role_session_name: str, duration_seconds=None
    ) -> sts.AssumeRoleResult:
        self.calls.append(("assume_role", role_indicator, role_session_name))
        return sts.AssumeRoleResult(self._user(), await self._issue())

    async def assume_role_with_saml(
        self,
        role_indicator: str,
        principal_indicator: str,
        saml_assertion: str,
        duration_seconds=None,
    ) -> sts.AssumeRoleWithSamlResult:
        self.calls.append(
            ("assume_role_with_saml", principal_indicator, saml_assertion)
        )
        return sts.AssumeRoleWithSamlResult(
            self._user(),
            await self._issue(),
            audience="https://signproxy.test/saml",
            issuer="https://idp.test",
            subject="alice",
            subject_type="persistent",
        )

    def _user(self) -> sts.AssumedRoleUser:
        return sts.AssumedRoleUser("ARO123", "srn:scp:iam::role/signer-role")

    async def _issue(self) -> sts.TemporaryCredentials:
        await self.gate.wait()
        if self.failure is not None:
            raise self.failure
        number = len(self.calls)
        return sts.TemporaryCredentials(
            access_key_id=f"ASIATEMP{number:04d}",
            secret_access_key=f"secret-{number}-xxxxxxxxxxxxxxxx",
            session_token=f"token-{number}-yyyyyyyyyyyyyyyyyyyyyyyy",
            expiration=self.clock() + timedelta(seconds=self.lifetime),
        )


def unavailable() -> sts.StsUnavailable:
    return sts.StsUnavailable(
        "assume_role: 503 ServiceUnavailable", status=503, code="ServiceUnavailable"
    )


async def until(predicate: Callable[[], bool], what: str) -> None:
    """Let the event loop run until `predicate` holds, within a deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def fake_sts(clock: FakeClock) -> FakeSts:
    return FakeSts(clock)


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
async def provider(clock: FakeClock, fake_sts: FakeSts, metrics: Metrics):
    provider = AssumeRoleProvider(
        fake_sts,  # type: ignore[arg-type]
        ROLE,
        "signproxy-test",
        clock=clock,
        refresh_interval=None,
        metrics=metrics,
    )
    await provider.start()
    yield provider
    await provider.close()


def refreshes(metrics: Metrics, outcome: str) -> float:
    value = metrics.registry.get_sample_value(
        "signproxy_credential_refreshes_total", {"outcome": outcome}
    )
    return value or 0.0


# -- first fetch and the quiet period -----------------------------------------


async def test_start_fetches_once_and_serves_a_frozen_snapshot(
    provider: AssumeRoleProvider, fake_sts: FakeSts, clock: FakeClock
) -> None:
    first = await provider.credentials()
    clock.advance(LIFETIME - 901)  # one second before the advisory window
    again = await provider.credentials()

    assert fake_sts.calls == [("assume_role", ROLE, "signproxy-test")]
    assert again is first
    assert first.access_key == "ASIATEMP0001"
    assert first.session_token == "token-1-yyyyyyyyyyyyyyyyyyyyyyyy"
    assert provider.expiration() == clock.now + timedelta(seconds=901)


async def test_start_failure_raises_credentials_unavailable(
    clock: FakeClock, fake_sts: FakeSts
) -> None:
    fake_sts.failure = unavailable()
    provider = AssumeRoleProvider(fake_sts, ROLE, clock=clock, refresh_interval=None)  # type: ignore[arg-type]

    with pytest.raises(CredentialsUnavailable, match="503 ServiceUnavailable") as info:
        await provider.start()
    assert info.value.retry_after >= 1
    assert provider.ready() == (
        False,
        "no assume-role credentials: assume_role: 503 ServiceUnavailable",
    )


# -- advisory window ------------------------------------------------------------


async def test_advisory_window_refreshes_in_background_while_serving_old(
    provider: AssumeRoleProvider,
    fake_sts: FakeSts,
    clock: FakeClock,
    metrics: Metrics,
) -> None:
    old = await provider.credentials()
    clock.advance(LIFETIME - 600)  # inside advisory (900 s), outside mandatory
    fake_sts.hold()

    served = [await provider.credentials() for _ in range(5)]
    await until(lambda: len(fake_sts.calls) == 2, "the background refresh")

    assert all(creds is old for creds in served)  # not waiting on the held call
    assert len(fake_sts.calls) == 2  # five requests, one refresh
    fake_sts.release()
    await until(lambda: provider.expiration() != old_expiry(clock), "new snapshot")
    new = await provider.credentials()
    assert new.access_key == "ASIATEMP0002"
    assert refreshes(metrics, "ok") == 2
    expiry = metrics.registry.get_sample_value(
        "signproxy_credentials_expiry_timestamp_seconds"
    )
    assert expiry == (clock.now + timedelta(seconds=LIFETIME)).timestamp()


def old_expiry(clock: FakeClock) -> datetime:
    return clock.now + timedelta(seconds=600)


async def test_failed_background_refresh_logs_backs_off_and_keeps_serving(
    provider: AssumeRoleProvider,
    fake_sts: FakeSts,
    clock: FakeClock,
    metrics: Metrics,
    caplog: pytest.LogCaptureFixture,
) -> None:
    old = await provider.credentials()
    clock.advance(LIFETIME - 800)
    fake_sts.failure = unavailable()

    with caplog.at_level(logging.WARNING, logger="signproxy.credentials"):
        assert await provider.credentials() is old
        await until(lambda: refreshes(metrics, "error") == 1, "the failed refresh")

    assert "unable to refresh assume-role credentials" in caplog.text
    # Backing off: more requests in the next second cause no STS call.
    for _ in range(10):
        assert await provider.credentials() is old
    assert len(fake_sts.calls) == 2
    assert provider.ready()[0] is True

    clock.advance(1.5)  # past the first back-off step
    assert await provider.credentials() is old
    await until(lambda: refreshes(metrics, "error") == 2, "the second attempt")
    assert len(fake_sts.calls) == 3


# -- mandatory window -------------------------------------------------------------


async def test_mandatory_window_callers_wait_for_one_shared_refresh(
    provider: AssumeRoleProvider, fake_sts: FakeSts, clock: FakeClock
) -> None:
    clock.advance(LIFETIME - 120)  # inside the mandatory window (300 s)
    fake_sts.hold()

    callers = [asyncio.create_task(provider.credentials()) for _ in range(100)]
    await until(lambda: len(fake_sts.calls) == 2, "the shared refresh")
    assert not any(task.done() for task in callers)  # all are waiting

    fake_sts.release()
    results = await asyncio.gather(*callers)

    assert len(fake_sts.calls) == 2  # start + one refresh for 100 callers
    assert {creds.access_key for creds in results} == {"ASIATEMP0002"}


async def test_expired_credentials_wait_for_refresh(
    provider: AssumeRoleProvider, fake_sts: FakeSts, clock: FakeClock
) -> None:
    clock.advance(LIFETIME + 60)
    assert provider.ready() == (
        False,
        "assume-role credentials expired at 2026-03-01T13:00:00+00:00",
    )

    creds = await provider.credentials()

    assert creds.access_key == "ASIATEMP0002"
    assert provider.ready() == (
        True,
        "assume-role credentials valid until 2026-03-01T14:01:00+00:00",
    )


async def test_mandatory_failure_raises_for_every_waiter_then_recovers(
    provider: AssumeRoleProvider,
    fake_sts: FakeSts,
    clock: FakeClock,
    metrics: Metrics,
) -> None:
    clock.advance(LIFETIME - 60)
    fake_sts.failure = unavailable()
    fake_sts.hold()

    callers = [asyncio.create_task(provider.credentials()) for _ in range(100)]
    await until(lambda: len(fake_sts.calls) == 2, "the shared refresh")
    fake_sts.release()
    outcomes = await asyncio.gather(*callers, return_exceptions=True)

    assert len(fake_sts.calls) == 2
    assert all(isinstance(outcome, CredentialsUnavailable) for outcome in outcomes)
    assert {outcome.retry_after for outcome in outcomes} == {1}  # type: ignore[union-attr]
    assert refreshes(metrics, "error") == 1
    assert provider.ready()[0] is False

    # While backing off, callers are answered at once, without an STS call.
    with pytest.raises(CredentialsUnavailable, match="503 ServiceUnavailable"):
        await provider.credentials()
    assert len(fake_sts.calls) == 2

    # STS comes back; after the back-off the next caller refreshes.
    fake_sts.failure = None
    clock.advance(1)
    creds = await provider.credentials()
    assert creds.access_key == "ASIATEMP0003"
    assert provider.ready()[0] is True


async def test_backoff_grows_with_repeated_failures(
    provider: AssumeRoleProvider, fake_sts: FakeSts, clock: FakeClock
) -> None:
    clock.advance(LIFETIME + 1)
    fake_sts.failure = unavailable()
    retry_afters = []
    for _ in range(7):
        with pytest.raises(CredentialsUnavailable, match="unable to refresh") as info:
            await provider.credentials()
        retry_afters.append(info.value.retry_after)
        clock.advance(info.value.retry_after)

    assert retry_afters == [1, 2, 4, 8, 16, 30, 30]
    assert len(fake_sts.calls) == 8


# -- windows ----------------------------------------------------------------------


async def test_short_lived_credentials_shrink_the_windows(
    clock: FakeClock,
) -> None:
    fake_sts = FakeSts(clock, lifetime=900)  # STS's default duration
    provider = AssumeRoleProvider(fake_sts, ROLE, clock=clock, refresh_interval=None)  # type: ignore[arg-type]
    await provider.start()

    clock.advance(449)  # advisory opens at half the lifetime, not at once
    await provider.credentials()
    assert len(fake_sts.calls) == 1

    clock.advance(2)
    fake_sts.hold()
    await provider.credentials()
    await until(lambda: len(fake_sts.calls) == 2, "the advisory refresh")
    fake_sts.release()
    await provider.close()


async def test_windows_shorter_than_the_lifetime_are_kept_as_configured(
    clock: FakeClock,
) -> None:
    fake_sts = FakeSts(clock, lifetime=900)
    provider = AssumeRoleProvider(
        fake_sts,  # type: ignore[arg-type]
        ROLE,
        clock=clock,
        refresh_interval=None,
        advisory_refresh=895,
        mandatory_refresh=890,
    )
    await provider.start()
    clock.advance(4)
    await provider.credentials()
    assert len(fake_sts.calls) == 1

    clock.advance(2)  # 894 s left: inside the advisory window
    fake_sts.hold()
    first = await provider.credentials()
    await until(lambda: len(fake_sts.calls) == 2, "the advisory refresh")
    assert first.access_key == "ASIATEMP0001"  # still served while refreshing

    clock.advance(5)  # 889 s left: mandatory, callers join the refresh in flight
    waiting = asyncio.create_task(provider.credentials())
    await asyncio.sleep(0)
    assert not waiting.done()
    fake_sts.release()
    assert (await waiting).access_key == "ASIATEMP0002"
    assert len(fake_sts.calls) == 2
    await provider.close()


async def test_refreshed_secrets_are_registered_for_redaction(
    provider: AssumeRoleProvider, fake_sts: FakeSts, clock: FakeClock
) -> None:
    forget_secrets()
    try:
        await provider.credentials()  # started by the fixture
        for _ in range(5):
            clock.advance(LIFETIME)  # expired: the next call refreshes
            await provider.credentials()
        assert len(fake_sts.calls) == 6
        current = await provider.credentials()
        assert current.session_token is not None
        text = f"{current.secret_key} {current.session_token}"
        assert redact(text) == f"{REDACTED} {REDACTED}"
        assert redact("secret-5-xxxxxxxxxxxxxxxx") == REDACTED  # the previous one
        assert redact("secret-4-xxxxxxxxxxxxxxxx") == "secret-4-xxxxxxxxxxxxxxxx"
        assert registered_secret_count() == 4  # current and previous, no more
    finally:
        forget_secrets()


async def test_saml_assertion_is_registered_for_redaction(
    clock: FakeClock, fake_sts: FakeSts, tmp_path: Path
) -> None:
    assertion_file = tmp_path / "assertion.b64"
    assertion_file.write_text("PHNhbWxwOlJlc3BvbnNlIElEPSJmaXJzdCI+\n")
    provider = SamlProvider(
        fake_sts,  # type: ignore[arg-type]
        ROLE,
        PRINCIPAL,
        assertion_file,
        clock=clock,
        refresh_interval=None,
    )
    try:
        await provider.start()
        assert redact("PHNhbWxwOlJlc3BvbnNlIElEPSJmaXJzdCI+") == REDACTED
    finally:
        await provider.close()
        forget_secrets()


@pytest.mark.parametrize(
    ("advisory", "mandatory", "message"),
    [
        (100, 300, r"advisory_refresh \(100 s\) must be at least mandatory_refresh"),
        (900, -1, r"mandatory_refresh must be >= 0 seconds, not -1"),
    ],
)
def test_bad_windows_are_refused(
    fake_sts: FakeSts, advisory: float, mandatory: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        AssumeRoleProvider(
            fake_sts,  # type: ignore[arg-type]
            ROLE,
            advisory_refresh=advisory,
            mandatory_refresh=mandatory,
        )


async def test_watcher_refreshes_without_requests(
    clock: FakeClock, fake_sts: FakeSts
) -> None:
    provider = AssumeRoleProvider(fake_sts, ROLE, clock=clock, refresh_interval=0.001)  # type: ignore[arg-type]
    await provider.start()
    clock.advance(LIFETIME - 600)

    await until(lambda: len(fake_sts.calls) == 2, "the watcher's refresh")
    await until(
        lambda: provider.expiration() == clock.now + timedelta(seconds=LIFETIME),
        "the watcher's snapshot",
    )
    await provider.close()
    calls = len(fake_sts.calls)
    clock.advance(LIFETIME)
    for _ in range(100):
        await asyncio.sleep(0)
    assert len(fake_sts.calls) == calls  # closed: no more refreshes


# -- SAML -------------------------------------------------------------------------


async def test_saml_assertion_file_is_read_again_at_each_refresh(
    clock: FakeClock, fake_sts: FakeSts, tmp_path: Path
) -> None:
    assertion_file = tmp_path / "assertion.b64"
    assertion_file.write_text("UEhOaGJXeHdPbEpsYzNCdmJuTmxQZz09-first\n")
    provider = SamlProvider(
        fake_sts,  # type: ignore[arg-type]
        ROLE,
        PRINCIPAL,
        assertion_file,
        clock=clock,
        refresh_interval=None,
    )
    await provider.start()
    assertion_file.write_text("UEhOaGJXeHdPbEpsYzNCdmJuTmxQZz09-second\n")
    clock.advance(LIFETIME - 100)

    creds = await provider.credentials()

    assert [call[2] for call in fake_sts.calls] == [
        "UEhOaGJXeHdPbEpsYzNCdmJuTmxQZz09-first",
        "UEhOaGJXeHdPbEpsYzNCdmJuTmxQZz09-second",
    ]
    assert {call[1] for call in fake_sts.calls} == {PRINCIPAL}
    assert creds.access_key == "ASIATEMP0002"
    await provider.close()


async def test_saml_missing_file_fails_refresh_but_valid_creds_keep_serving(
    clock: FakeClock,
    fake_sts: FakeSts,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    assertion_file = tmp_path / "assertion.b64"
    assertion_file.write_text("c2VjcmV0LWFzc2VydGlvbg==")
    provider = SamlProvider(
        fake_sts,  # type: ignore[arg-type]
        ROLE,
        PRINCIPAL,
        assertion_file,
        clock=clock,
        refresh_interval=None,
    )
    await provider.start()
    old = await provider.credentials()
    assertion_file.unlink()
    clock.advance(LIFETIME - 800)  # advisory window

    with caplog.at_level(logging.WARNING, logger="signproxy.credentials"):
        assert await provider.credentials() is old
        await until(lambda: "unable to read SAML" in caplog.text, "the warning")
    assert provider.ready()[0] is True
    assert len(fake_sts.calls) == 1  # the file failed before any STS call

    clock.advance(600)  # mandatory window, past the back-off
    with pytest.raises(
        CredentialsUnavailable,
        match=r"unable to read SAML assertion file .*assertion\.b64: No such file",
    ) as info:
        await provider.credentials()
    assert "c2VjcmV0LWFzc2VydGlvbg" not in str(info.value)
    assert "c2VjcmV0LWFzc2VydGlvbg" not in caplog.text

    assertion_file.write_text("c2VjcmV0LWFzc2VydGlvbg==")
    clock.advance(info.value.retry_after)
    assert (await provider.credentials()).access_key == "ASIATEMP0002"
    await provider.close()


async def test_saml_empty_file_is_a_refresh_failure(
    clock: FakeClock, fake_sts: FakeSts, tmp_path: Path
) -> None:
    assertion_file = tmp_path / "empty.b64"
    assertion_file.write_text("  \n")
    provider = SamlProvider(fake_sts, ROLE, PRINCIPAL, assertion_file, clock=clock)  # type: ignore[arg-type]

    with pytest.raises(CredentialsUnavailable, match=r"empty\.b64 is empty"):
        await provider.start()
    assert fake_sts.calls == []


# -- static keys ------------------------------------------------------------------


async def test_static_provider_serves_the_scp_key_pair_forever() -> None:
    provider = StaticProvider.from_scp(
        sts.ScpCredentials("SCPACCESSKEY1234", "scp-secret-never-shown")
    )
    await provider.start()

    creds = await provider.credentials()

    assert (creds.access_key, creds.secret_key) == (
        "SCPACCESSKEY1234",
        "scp-secret-never-shown",
    )
    assert creds.session_token is None
    assert provider.expiration() is None
    assert provider.ready() == (True, "static SCP access key configured")
    assert "scp-secret-never-shown" not in repr(provider)
    assert "scp-secret-never-shown" not in repr(creds)


def test_static_provider_needs_both_keys() -> None:
    with pytest.raises(ValueError, match="need an access key and a secret key"):
        StaticProvider("AKID", "")

"""Signing strategies without a network: coverage rules, error mapping,
settings and the factory.  Signatures judged by a real store, and everything
that calls STS, are in tests/e2e/test_signers_store.py."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from signproxy import sigv4, sts
from signproxy.credentials import (
    AssumeRoleProvider,
    CredentialsUnavailable,
    SamlProvider,
    StaticProvider,
)
from signproxy.signers import (
    AutoSigner,
    LocalSigner,
    RemoteSigner,
    SignerSettings,
    SigningFailed,
    SigningRequest,
    create_signer,
    headers_remote_cannot_sign,
    remote_refusal,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SCP = sts.ScpCredentials("SCPKEY0123456789", "scp-secret-not-for-logs")
ROLE = "dev2:afd580f490394896a6bceabf77683c6bd:signer-role"
PRINCIPAL = "dev2:afd580f490394896a6bceabf77683c6bd:saml-provider"
EMPTY = sigv4.EMPTY_SHA256


def request(
    *headers: tuple[str, str], payload_hash: str = EMPTY, method: str = "GET"
) -> SigningRequest:
    return SigningRequest(
        method=method,
        path="/bucket/a key+b",
        query="list-type=2&prefix=a",
        headers=(("host", "store.test:9000"), *headers),
        payload_hash=payload_hash,
    )


class FailingProvider:
    """A provider whose refresh is failing, as the mandatory window sees it."""

    async def start(self) -> None:
        raise CredentialsUnavailable("STS down", retry_after=7)

    async def credentials(self) -> sigv4.Credentials:
        raise CredentialsUnavailable(
            "unable to refresh assume-role credentials: STS down", retry_after=7
        )

    def expiration(self) -> datetime | None:
        return None

    def ready(self) -> tuple[bool, str]:
        return False, "no assume-role credentials: STS down"

    async def close(self) -> None:
        return None


# -- which requests the remote signature covers ----------------------------------


@pytest.mark.parametrize(
    ("headers", "payload_hash", "uncovered"),
    [
        # only what object-store-authorization signs
        ((), EMPTY, None),
        ((("x-amz-content-sha256", EMPTY),), EMPTY, None),
        # headers S3 lets travel unsigned
        (
            (
                ("content-type", "text/plain"),
                ("content-md5", "1B2M2Y8AsgTpgAmY7PhCfg=="),
                ("range", "bytes=0-9"),
                ("content-length", "0"),
            ),
            EMPTY,
            None,
        ),
        ((), sigv4.UNSIGNED_PAYLOAD, None),
        # x-amz-* headers S3 requires to be signed
        (
            (("X-Amz-Meta-Colour", "blue"), ("x-amz-checksum-crc32", "AAAAAA==")),
            EMPTY,
            "x-amz-checksum-crc32, x-amz-meta-colour",
        ),
        ((("x-amz-copy-source", "/b/k"),), EMPTY, "x-amz-copy-source"),
        ((("x-amz-security-token", "left-over"),), EMPTY, "x-amz-security-token"),
        # signed chunks need the signing key
        ((), sigv4.STREAMING_SIGNED, "needs a signing key"),
        ((), sigv4.STREAMING_SIGNED_TRAILER, "needs a signing key"),
    ],
)
def test_remote_coverage(
    headers: tuple[tuple[str, str], ...], payload_hash: str, uncovered: str | None
) -> None:
    reason = remote_refusal(request(*headers, payload_hash=payload_hash))
    if uncovered is None:
        assert reason is None
    else:
        assert reason is not None
        assert uncovered in reason


def test_headers_remote_cannot_sign_names_each_once_lowercase() -> None:
    headers = [("X-Amz-Meta-A", "1"), ("x-amz-meta-a", "2"), ("X-Amz-Date", "x")]
    assert headers_remote_cannot_sign(headers) == ["x-amz-meta-a"]


# -- the local signer ---------------------------------------------------------------


async def test_local_signer_signs_with_the_provider_snapshot() -> None:
    signer = LocalSigner(StaticProvider.from_scp(SCP), "kr-west1", clock=lambda: NOW)
    await signer.start()

    signed = await signer.sign(request(("x-amz-meta-colour", "blue")))

    assert signed.signed_by == "local"
    assert signed.request.amz_date == "20260301T120000Z"
    assert signed.request.path == "/bucket/a%20key%2Bb"
    assert signed.request.authorization.startswith(
        "AWS4-HMAC-SHA256 Credential=SCPKEY0123456789/20260301/kr-west1/s3/aws4_request"
    )
    assert signed.request.signed_headers == (
        "host;x-amz-content-sha256;x-amz-date;x-amz-meta-colour"
    )
    assert len(signed.request.signing_key) == 32
    assert signer.can_stream()
    assert signer.covers(request(("x-amz-meta-a", "1")))


async def test_local_signer_answers_503_when_credentials_are_unavailable() -> None:
    signer = LocalSigner(FailingProvider(), "kr-west1")

    with pytest.raises(SigningFailed, match="unable to refresh") as info:
        await signer.sign(request())

    assert (info.value.status, info.value.code) == (503, "ServiceUnavailable")
    assert info.value.retry_after == 7
    assert signer.ready() == (False, "no assume-role credentials: STS down")


async def test_local_signer_answers_400_for_an_unsignable_request() -> None:
    signer = LocalSigner(StaticProvider.from_scp(SCP), "kr-west1", clock=lambda: NOW)

    with pytest.raises(SigningFailed, match="contains CR, LF or NUL") as info:
        await signer.sign(request(("x-amz-meta-a", "one\r\ntwo")))

    assert (info.value.status, info.value.code) == (400, "InvalidRequest")


# -- remote and auto without calling STS -------------------------------------------


def remote_signer() -> RemoteSigner:
    # Never called in these tests: the requests are refused before any call.
    client = sts.StsClient("http://127.0.0.1:9", SCP)
    return RemoteSigner(client, "kr-west1", clock=lambda: NOW)


async def test_remote_signer_refuses_uncovered_requests_naming_headers() -> None:
    signer = remote_signer()

    with pytest.raises(SigningFailed, match="x-amz-meta-colour") as info:
        await signer.sign(request(("x-amz-meta-colour", "blue")))

    assert info.value.status == 400
    assert not signer.can_stream()
    await signer.client.aclose()


async def test_auto_without_local_refuses_what_remote_cannot_cover() -> None:
    signer = AutoSigner(None, remote_signer())

    with pytest.raises(
        SigningFailed,
        match=r"x-amz-tagging; no local signer is configured \(use --signer local",
    ) as info:
        await signer.sign(request(("x-amz-tagging", "a=b")))

    assert (info.value.status, info.value.code) == (400, "InvalidRequest")
    assert not signer.can_stream()
    await signer.close()
    await signer.order[0].client.aclose()  # type: ignore[union-attr]


async def test_auto_sends_uncovered_requests_to_local_even_when_remote_leads() -> None:
    local = LocalSigner(StaticProvider.from_scp(SCP), "kr-west1", clock=lambda: NOW)
    remote = remote_signer()
    signer = AutoSigner(local, remote, prefer="remote", failover=False)
    await signer.start()

    signed = await signer.sign(request(("x-amz-meta-colour", "blue")))

    assert signer.order == [remote, local]
    assert signed.signed_by == "local"
    assert signer.can_stream()
    await signer.close()


async def test_auto_start_puts_remote_first_when_local_cannot_start() -> None:
    local = LocalSigner(FailingProvider(), "kr-west1")
    remote = remote_signer()
    signer = AutoSigner(local, remote)

    await signer.start()

    assert signer.order == [remote, local]
    assert signer.ready()[0] is True
    await signer.close()


async def test_auto_with_only_a_failing_local_signer_fails_to_start() -> None:
    signer = AutoSigner(LocalSigner(FailingProvider(), "kr-west1"), None)
    with pytest.raises(CredentialsUnavailable, match="STS down"):
        await signer.start()


# -- settings and the factory -----------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"mode": "hybrid"}, r"invalid signer mode 'hybrid': expected local, remote"),
        ({"duration_seconds": 0}, r"duration_seconds must be positive, not 0"),
        (
            {"advisory_refresh": 60, "mandatory_refresh": 120},
            r"need advisory_refresh \(60\) >= mandatory_refresh \(120\)",
        ),
        ({"auth_cache_size": -1}, r"auth_cache_size must be >= 0, not -1"),
        ({"auth_cache_ttl": 900}, r"auth_cache_ttl must be >= 0 and below .* 900"),
        (
            {"principal_indicator": PRINCIPAL},
            r"SAML needs both principal_indicator and saml_assertion_file",
        ),
        (
            {"principal_indicator": PRINCIPAL, "saml_assertion_file": Path("a")},
            r"SAML needs role_indicator too",
        ),
    ],
)
def test_bad_settings_are_refused_by_name(
    changes: dict[str, object], message: str
) -> None:
    settings = SignerSettings(scp_credentials=SCP, **changes)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=message):
        create_signer(settings, environ={})


def test_factory_needs_scp_credentials() -> None:
    with pytest.raises(ValueError, match="set SCP_ACCESS_KEY and SCP_SECRET_KEY"):
        create_signer(SignerSettings(mode="local"), environ={})


def test_factory_remote_needs_an_sts_endpoint() -> None:
    with pytest.raises(ValueError, match="no STS endpoint"):
        create_signer(SignerSettings(mode="remote", scp_credentials=SCP), environ={})


def test_factory_role_needs_an_sts_endpoint() -> None:
    settings = SignerSettings(mode="local", scp_credentials=SCP, role_indicator=ROLE)
    with pytest.raises(ValueError, match="no STS endpoint"):
        create_signer(settings, environ={})


def test_factory_refuses_an_invalid_endpoint_even_when_optional() -> None:
    settings = SignerSettings(scp_credentials=SCP, sts_endpoint="ftp://sts.test")
    with pytest.raises(ValueError, match=r"invalid STS endpoint 'ftp://sts\.test'"):
        create_signer(settings, environ={})


async def test_factory_local_without_role_uses_the_scp_keys() -> None:
    env = {"SCP_ACCESS_KEY": SCP.access_key, "SCP_SECRET_KEY": SCP.secret_key}
    signer = create_signer(SignerSettings(mode="local"), environ=env)

    assert isinstance(signer, LocalSigner)
    assert isinstance(signer.provider, StaticProvider)
    assert (await signer.provider.credentials()).access_key == SCP.access_key
    await signer.close()


async def test_factory_auto_without_sts_is_local_only() -> None:
    signer = create_signer(SignerSettings(scp_credentials=SCP), environ={})

    assert isinstance(signer, AutoSigner)
    assert signer.remote is None
    assert isinstance(signer.local, LocalSigner)
    await signer.close()


@pytest.mark.parametrize(
    ("mode", "extra", "shape"),
    [
        ("local", {"role_indicator": ROLE}, "LocalSigner/AssumeRoleProvider"),
        (
            "local",
            {
                "role_indicator": ROLE,
                "principal_indicator": PRINCIPAL,
                "saml_assertion_file": Path("assertion.b64"),
            },
            "LocalSigner/SamlProvider",
        ),
        ("remote", {}, "RemoteSigner"),
        ("remote", {"role_indicator": ROLE}, "AutoSigner remote,local no-failover"),
        ("auto", {}, "AutoSigner local,remote failover"),
        ("auto", {"role_indicator": ROLE}, "AutoSigner local,remote failover"),
    ],
)
async def test_factory_builds_the_strategy_asked_for(
    mode: str, extra: dict[str, object], shape: str
) -> None:
    settings = SignerSettings(
        mode=mode,
        scp_credentials=SCP,
        sts_endpoint="http://127.0.0.1:9",
        **extra,  # type: ignore[arg-type]
    )
    signer = create_signer(settings)

    if isinstance(signer, LocalSigner):
        got = f"LocalSigner/{type(signer.provider).__name__}"
        assert isinstance(signer.provider, AssumeRoleProvider | SamlProvider)
    elif isinstance(signer, AutoSigner):
        names = ",".join(s.name for s in signer.order)
        failover = "failover" if signer._failover else "no-failover"
        got = f"AutoSigner {names} {failover}"
        assert signer.name == mode
    else:
        got = type(signer).__name__
    assert got == shape
    assert "scp-secret-not-for-logs" not in repr(signer)
    await signer.close()

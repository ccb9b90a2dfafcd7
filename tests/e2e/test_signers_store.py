"""The signers against real peers: the STS emulator over HTTP and SeaweedFS.

Each signature is judged by the store: a request is signed, sent with httpx
exactly as signed, and must be accepted.  Uploads carry Content-MD5, so a
wrong payload would be refused (400 BadDigest) rather than stored.  STS call
counts come from the emulator's own `GET /_emulator/stats`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from signproxy import sts
from signproxy.credentials import CredentialsUnavailable, SamlProvider, StaticProvider
from signproxy.metrics import Metrics
from signproxy.seaweed import Identity, LocalStore
from signproxy.signers import (
    AutoSigner,
    LocalSigner,
    RemoteSigner,
    Signed,
    SignerSettings,
    SigningFailed,
    SigningRequest,
    create_signer,
)
from tests.fixtures.emulator import EmulatorHandle

# Raw, as a client sends it: space, plus, equals, percent and unicode.
OBJECT_PATH = "/dir/a%20b%2Bc%3Dd%20%C3%BC%25.txt"


class FakeClock:
    """Frozen at the real time it was made; moved by hand."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


@pytest.fixture
async def bucket(
    store: LocalStore,
    store_identity: Identity,
    bucket_name: str,
    http: httpx.AsyncClient,
) -> str:
    """A fresh bucket, made with the store identity's own keys."""
    signer = LocalSigner(
        StaticProvider(store_identity.access_key, store_identity.secret_key),
        "kr-west1",
    )
    response = await send(http, store, signer, "PUT", f"/{bucket_name}")
    assert response.status_code == 200, response.text
    return bucket_name


def signing_request(
    store: LocalStore,
    method: str,
    path: str,
    query: str = "",
    body: bytes = b"",
    headers: tuple[tuple[str, str], ...] = (),
) -> SigningRequest:
    host = httpx.URL(store.endpoint).netloc.decode()
    extra = list(headers)
    if body:
        md5 = base64.b64encode(hashlib.md5(body).digest()).decode()  # noqa: S324
        extra += [("content-md5", md5), ("content-type", "application/octet-stream")]
    return SigningRequest(
        method=method,
        path=path,
        query=query,
        headers=(("host", host), *extra),
        payload_hash=hashlib.sha256(body).hexdigest(),
        scheme="http",
    )


async def forward(
    http: httpx.AsyncClient,
    store: LocalStore,
    request: SigningRequest,
    signed: Signed,
    body: bytes = b"",
) -> httpx.Response:
    """Send the request exactly as signed: canonical path and query, the
    request's own headers and the signer's."""
    query = f"?{signed.request.query}" if signed.request.query else ""
    headers = [(n, v) for n, v in request.headers if n != "host"]
    headers += list(signed.request.headers)
    url = store.endpoint + signed.request.path + query
    return await http.request(request.method, url, headers=headers, content=body)


async def send(
    http: httpx.AsyncClient,
    store: LocalStore,
    signer: LocalSigner | RemoteSigner | AutoSigner,
    method: str,
    path: str,
    query: str = "",
    body: bytes = b"",
    headers: tuple[tuple[str, str], ...] = (),
    signed_by: str | None = None,
) -> httpx.Response:
    request = signing_request(store, method, path, query, body, headers)
    signed = await signer.sign(request)
    if signed_by is not None:
        assert signed.signed_by == signed_by
    return await forward(http, store, request, signed, body)


async def round_trip(
    http: httpx.AsyncClient,
    store: LocalStore,
    signer: LocalSigner | RemoteSigner | AutoSigner,
    bucket: str,
    signed_by: str,
    headers: tuple[tuple[str, str], ...] = (),
) -> None:
    """PUT with Content-MD5, GET it back byte for byte, list it."""
    body = secrets.token_bytes(4096)
    path = f"/{bucket}{OBJECT_PATH}"
    put = await send(http, store, signer, "PUT", path, body=body, headers=headers)
    assert put.status_code == 200, put.text
    got = await send(http, store, signer, "GET", path, signed_by=signed_by)
    assert got.status_code == 200, got.text
    assert got.content == body
    listed = await send(
        http, store, signer, "GET", f"/{bucket}", "list-type=2&prefix=dir/"
    )
    assert listed.status_code == 200, listed.text
    assert "dir/a b+c=d ü%.txt" in listed.text


async def emulator_calls(http: httpx.AsyncClient, emulator: EmulatorHandle) -> dict:
    response = await http.get(f"{emulator.endpoint}/_emulator/stats")
    response.raise_for_status()
    return response.json()["calls"]


async def set_faults(http: httpx.AsyncClient, emulator: EmulatorHandle, **faults):
    response = await http.post(f"{emulator.endpoint}/_emulator/faults", json=faults)
    response.raise_for_status()


def settings(emulator: EmulatorHandle, **changes) -> SignerSettings:
    return SignerSettings(
        scp_credentials=emulator.credentials,
        sts_endpoint=emulator.endpoint,
        **changes,
    )


# -- local signing with temporary credentials ----------------------------------


async def test_assume_role_credentials_sign_requests_the_store_accepts(
    emulator_reset: EmulatorHandle,
    store: LocalStore,
    bucket: str,
    http: httpx.AsyncClient,
) -> None:
    metrics = Metrics()
    signer = create_signer(
        settings(
            emulator_reset, mode="local", role_indicator=emulator_reset.role_indicator
        ),
        metrics=metrics,
    )
    await signer.start()
    assert isinstance(signer, LocalSigner)
    creds = await signer.provider.credentials()

    await round_trip(
        http, store, signer, bucket, "local", headers=(("x-amz-meta-colour", "blue"),)
    )

    assert creds.access_key != emulator_reset.access_key  # temporary, not the SCP key
    assert creds.session_token
    assert (await emulator_calls(http, emulator_reset)) == {"assume_role": 1}
    assert signer.ready()[0] is True
    sample = metrics.registry.get_sample_value(
        "signproxy_sts_requests_total", {"operation": "assume_role", "outcome": "ok"}
    )
    assert sample == 1
    await signer.close()


async def test_saml_credentials_sign_requests_the_store_accepts(
    emulator_reset: EmulatorHandle,
    store: LocalStore,
    bucket: str,
    http: httpx.AsyncClient,
    tmp_path: Path,
) -> None:
    assertion_file = tmp_path / "assertion.b64"
    assertion_file.write_text(emulator_reset.saml_assertion())
    signer = create_signer(
        settings(
            emulator_reset,
            mode="local",
            role_indicator=emulator_reset.role_indicator,
            principal_indicator=emulator_reset.principal_indicator,
            saml_assertion_file=assertion_file,
        )
    )
    await signer.start()
    assert isinstance(signer, LocalSigner)
    assert isinstance(signer.provider, SamlProvider)

    await round_trip(http, store, signer, bucket, "local")

    assert (await emulator_calls(http, emulator_reset)) == {"assume_role_with_saml": 1}
    await signer.close()


async def test_saml_assertion_refused_by_sts_fails_start_without_leaking_it(
    emulator_reset: EmulatorHandle, tmp_path: Path
) -> None:
    assertion = emulator_reset.saml_assertion("wrong_role")
    assertion_file = tmp_path / "assertion.b64"
    assertion_file.write_text(assertion)
    signer = create_signer(
        settings(
            emulator_reset,
            mode="local",
            role_indicator=emulator_reset.role_indicator,
            principal_indicator=emulator_reset.principal_indicator,
            saml_assertion_file=assertion_file,
        )
    )

    with pytest.raises(CredentialsUnavailable, match="403 Forbidden") as info:
        await signer.start()

    assert assertion[:40] not in str(info.value)
    assert signer.ready()[0] is False
    await signer.close()


# -- remote signing -----------------------------------------------------------------


async def test_remote_signatures_are_accepted_for_put_get_and_list(
    emulator_reset: EmulatorHandle,
    store: LocalStore,
    bucket: str,
    http: httpx.AsyncClient,
) -> None:
    signer = create_signer(settings(emulator_reset, mode="remote"))
    await signer.start()
    assert isinstance(signer, RemoteSigner)

    await round_trip(http, store, signer, bucket, "remote")

    calls = await emulator_calls(http, emulator_reset)
    assert calls == {"object_store_authorization": 3}
    await signer.close()


async def test_remote_cache_reuses_an_authorization_until_its_ttl(
    emulator_reset: EmulatorHandle,
    store: LocalStore,
    bucket: str,
    http: httpx.AsyncClient,
) -> None:
    clock = FakeClock()
    metrics = Metrics()
    signer = create_signer(
        settings(emulator_reset, mode="remote", auth_cache_ttl=30),
        metrics=metrics,
        clock=clock,
    )
    path = f"/{bucket}"
    query = "list-type=2"

    first = await send(http, store, signer, "GET", path, query, signed_by="remote")
    clock.advance(29)  # x-amz-date has whole seconds: its age is now 29 to 30 s
    second = await send(http, store, signer, "GET", path, query, signed_by="cache")
    assert (await emulator_calls(http, emulator_reset)) == {
        "object_store_authorization": 1
    }
    clock.advance(2)  # the cached date is now older than the TTL
    third = await send(http, store, signer, "GET", path, query, signed_by="remote")

    assert [r.status_code for r in (first, second, third)] == [200, 200, 200]
    assert (await emulator_calls(http, emulator_reset)) == {
        "object_store_authorization": 2
    }
    lookups = {
        result: metrics.registry.get_sample_value(
            "signproxy_auth_cache_lookups_total", {"result": result}
        )
        for result in ("hit", "miss")
    }
    assert lookups == {"hit": 1, "miss": 2}
    await signer.close()


async def test_remote_cache_is_bounded_and_keeps_the_recently_used(
    emulator_reset: EmulatorHandle,
    store: LocalStore,
    bucket: str,
    http: httpx.AsyncClient,
) -> None:
    signer = create_signer(settings(emulator_reset, mode="remote", auth_cache_size=2))

    async def sign_key(name: str) -> str:
        signed = await signer.sign(signing_request(store, "GET", f"/{bucket}/{name}"))
        return signed.signed_by

    assert [await sign_key(k) for k in ("a", "b", "a", "c")] == [
        "remote",
        "remote",
        "cache",
        "remote",  # full: b, the least recently used, leaves
    ]
    assert [await sign_key(k) for k in ("a", "c", "b")] == ["cache", "cache", "remote"]
    calls = await emulator_calls(http, emulator_reset)
    assert calls == {"object_store_authorization": 4}
    await signer.close()


async def test_identical_concurrent_misses_share_one_sts_call(
    emulator_reset: EmulatorHandle,
    store: LocalStore,
    bucket: str,
    http: httpx.AsyncClient,
) -> None:
    signer = create_signer(settings(emulator_reset, mode="remote"))
    request = signing_request(store, "GET", f"/{bucket}", "list-type=2")

    results = await asyncio.gather(*(signer.sign(request) for _ in range(50)))

    assert (await emulator_calls(http, emulator_reset)) == {
        "object_store_authorization": 1
    }
    assert sorted(r.signed_by for r in results).count("remote") == 1
    assert len({r.request.authorization for r in results}) == 1
    response = await forward(http, store, request, results[-1])
    assert response.status_code == 200, response.text
    await signer.close()


async def test_sts_failing_gives_503_with_retry_after(
    emulator_factory: Callable[..., EmulatorHandle],
    store: LocalStore,
    http: httpx.AsyncClient,
) -> None:
    emulator = emulator_factory()
    await set_faults(http, emulator, error_rate=1)
    metrics = Metrics()
    signer = create_signer(settings(emulator, mode="remote"), metrics=metrics)

    with pytest.raises(
        SigningFailed, match=r"signing service \(STS\) is unavailable"
    ) as info:
        await signer.sign(signing_request(store, "GET", "/any-bucket"))

    assert (info.value.status, info.value.code) == (503, "ServiceUnavailable")
    assert info.value.retry_after == 5
    outcome = metrics.registry.get_sample_value(
        "signproxy_sts_requests_total",
        {"operation": "object_store_authorization", "outcome": "unavailable"},
    )
    assert outcome == 1
    await signer.close()


async def test_sts_refusing_the_proxy_key_gives_502(
    emulator_reset: EmulatorHandle, store: LocalStore
) -> None:
    wrong = sts.ScpCredentials(emulator_reset.access_key, "not-the-secret")
    signer = create_signer(
        SignerSettings(
            mode="remote", scp_credentials=wrong, sts_endpoint=emulator_reset.endpoint
        )
    )

    with pytest.raises(
        SigningFailed, match="signing service refused the proxy's request: 401"
    ) as info:
        await signer.sign(signing_request(store, "GET", "/any-bucket"))

    assert (info.value.status, info.value.code) == (502, "SigningServiceError")
    await signer.close()


# -- auto: fallback both ways -----------------------------------------------------


def auto_parts(
    emulator: EmulatorHandle, assertion_file: Path, clock: FakeClock
) -> tuple[sts.StsClient, AutoSigner]:
    """Auto from real parts; STS calls keep the real clock (the emulator
    checks Scp-Timestamp within 5 minutes), the signers use the fake one."""
    client = sts.StsClient(emulator.endpoint, emulator.credentials, max_retries=0)
    provider = SamlProvider(
        client,
        emulator.role_indicator,
        emulator.principal_indicator,
        assertion_file,
        duration_seconds=900,
        clock=clock,
        refresh_interval=None,
    )
    local = LocalSigner(provider, "kr-west1", clock=clock)
    remote = RemoteSigner(client, "kr-west1", clock=clock)
    return client, AutoSigner(local, remote)


async def test_auto_falls_back_from_local_to_remote(
    emulator_reset: EmulatorHandle,
    store: LocalStore,
    bucket: str,
    http: httpx.AsyncClient,
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    assertion_file = tmp_path / "assertion.b64"
    assertion_file.write_text(emulator_reset.saml_assertion())
    client, signer = auto_parts(emulator_reset, assertion_file, clock)
    await signer.start()
    assert [s.name for s in signer.order] == ["local", "remote"]
    before = await send(http, store, signer, "GET", f"/{bucket}", signed_by="local")
    assert before.status_code == 200, before.text

    # The assertion is gone and the 900 s credentials reach their mandatory
    # window (the last 225 s): local cannot sign, remote takes over.  The
    # fake clock stays within the store's 15-minute skew.
    assertion_file.unlink()
    clock.advance(700)
    response = await send(http, store, signer, "GET", f"/{bucket}", signed_by="remote")

    assert response.status_code == 200, response.text
    await signer.close()
    await client.aclose()


async def test_auto_falls_back_from_remote_to_local(
    emulator_reset: EmulatorHandle,
    store: LocalStore,
    bucket: str,
    http: httpx.AsyncClient,
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    assertion_file = tmp_path / "assertion.b64"  # missing: local cannot start
    client, signer = auto_parts(emulator_reset, assertion_file, clock)
    await signer.start()
    assert [s.name for s in signer.order] == ["remote", "local"]
    await send(http, store, signer, "GET", f"/{bucket}", signed_by="remote")

    # Requests remote cannot cover go to local even while remote leads ...
    assertion_file.write_text(emulator_reset.saml_assertion())
    clock.advance(2)  # past the back-off of the failed start
    response = await send(
        http,
        store,
        signer,
        "PUT",
        f"/{bucket}/tagged",
        body=b"tagged body",
        headers=(("x-amz-meta-colour", "blue"),),
        signed_by="local",
    )
    assert response.status_code == 200, response.text

    # ... and when object-store-authorization fails, local stands in.
    await set_faults(http, emulator_reset, error_next=1)
    response = await send(
        http, store, signer, "GET", f"/{bucket}", "list-type=2", signed_by="local"
    )

    assert response.status_code == 200, response.text
    stats = await emulator_calls(http, emulator_reset)
    assert stats == {"object_store_authorization": 2, "assume_role_with_saml": 1}
    await signer.close()
    await client.aclose()


async def test_remote_signer_is_unready_while_sts_is_down_and_recovers_alone(
    emulator_factory: Callable[..., EmulatorHandle],
    store: LocalStore,
    http: httpx.AsyncClient,
) -> None:
    emulator = emulator_factory()
    client = sts.StsClient(emulator.endpoint, emulator.credentials, max_retries=0)
    signer = RemoteSigner(client, "kr-west1", probe_interval=0.05)
    request = signing_request(store, "GET", "/any-bucket")
    assert signer.ready()[0]

    await set_faults(http, emulator, error_rate=1)
    with pytest.raises(SigningFailed, match=r"signing service \(STS\) is unavailable"):
        await signer.sign(request)
    ok, reason = signer.ready()
    assert not ok
    assert "unreachable" in reason

    # No request comes (an unready instance gets none): the probe finds STS.
    await set_faults(http, emulator, error_rate=0)
    deadline = asyncio.get_running_loop().time() + 20
    while not signer.ready()[0]:
        assert asyncio.get_running_loop().time() < deadline, signer.ready()[1]
        await asyncio.sleep(0.02)
    calls = await emulator_calls(http, emulator)
    assert calls["object_store_authorization"] >= 2
    await signer.close()

"""The SCP STS client against the emulator over real HTTP, and the store chain."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import httpx
import pytest
from botocore.config import Config

from signproxy import sigv4, sts
from signproxy.emulator import Faults
from signproxy.sts import (
    ScpCredentials,
    StsClient,
    StsError,
    StsRequestInvalid,
    StsUnavailable,
    SyncStsClient,
    resolve_endpoint,
)
from tests.fixtures.emulator import EmulatorHandle

BEFORE_NOT_BEFORE = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
AFTER_NOT_BEFORE = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def client(handle: EmulatorHandle, **kwargs) -> StsClient:
    kwargs.setdefault("backoff_base", 0.001)
    return StsClient(handle.endpoint, handle.credentials, **kwargs)


def s3_client(endpoint: str, credentials: sts.TemporaryCredentials):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=credentials.access_key_id,
        aws_secret_access_key=credentials.secret_access_key,
        aws_session_token=credentials.session_token,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}),
    )


# -- each operation -------------------------------------------------------------------


async def test_assume_role_returns_typed_credentials(emulator: EmulatorHandle):
    before = datetime.now(UTC)
    async with client(emulator) as sts_client:
        result = await sts_client.assume_role(
            emulator.role_indicator, "session-one", duration_seconds=1800
        )
    creds = result.credentials
    assert creds.access_key_id.startswith("ASIA")
    assert creds.access_key_id != emulator.access_key
    assert len(creds.session_token) > 100
    assert creds.secret_access_key
    assert creds.expiration.tzinfo is not None
    assert (
        timedelta(seconds=1799)
        < creds.expiration - before
        < timedelta(seconds=1800 + 60)
    )
    assert result.assumed_role_user.assumed_role_id.endswith(":session-one")
    assert emulator.account_id in result.assumed_role_user.srn


async def test_assume_role_credentials_put_and_get_in_the_store(
    emulator: EmulatorHandle, store, bucket_name: str
):
    async with client(emulator) as sts_client:
        result = await sts_client.assume_role(emulator.role_indicator, "chain")
    s3 = s3_client(store.endpoint, result.credentials)
    s3.create_bucket(Bucket=bucket_name)
    s3.put_object(Bucket=bucket_name, Key="a/b.txt", Body=b"from assume-role")
    body = s3.get_object(Bucket=bucket_name, Key="a/b.txt")["Body"].read()
    assert body == b"from assume-role"

    # The token is what makes the temporary keys work: without it, refused.
    tokenless = sts.TemporaryCredentials(
        result.credentials.access_key_id,
        result.credentials.secret_access_key,
        "",
        result.credentials.expiration,
    )
    with pytest.raises(Exception, match=r"(?i)InvalidAccessKeyId|AccessDenied|403"):
        s3_client(store.endpoint, tokenless).get_object(
            Bucket=bucket_name, Key="a/b.txt"
        )


async def test_assume_role_with_saml_returns_assertion_fields(
    emulator: EmulatorHandle, store, bucket_name: str
):
    assertion = emulator.saml_assertion(subject="bob@example.test")
    async with client(emulator) as sts_client:
        result = await sts_client.assume_role_with_saml(
            emulator.role_indicator, emulator.principal_indicator, assertion
        )
    assert result.issuer == "https://idp.example.test/saml"
    assert result.audience == "https://sts.e.samsungsdscloud.com/saml"
    assert result.subject == "bob@example.test"
    assert result.subject_type.endswith("nameid-format:persistent")
    assert result.assumed_role_user.assumed_role_id.endswith(":bob@example.test")

    s3 = s3_client(store.endpoint, result.credentials)
    s3.create_bucket(Bucket=bucket_name)
    s3.put_object(Bucket=bucket_name, Key="saml", Body=b"from saml")
    assert s3.get_object(Bucket=bucket_name, Key="saml")["Body"].read() == (
        b"from saml"
    )


async def test_object_store_authorization_is_accepted_by_the_store(
    emulator: EmulatorHandle, store, bucket_name: str
):
    async def authorized(method: str, path: str, payload_hash: str) -> dict:
        date = sigv4.amz_date(datetime.now(UTC))
        async with client(emulator) as sts_client:
            authorization = await sts_client.object_store_authorization(
                method, store.endpoint + path, date, payload_hash, region="us-east-1"
            )
        assert "SignedHeaders=host;x-amz-content-sha256;x-amz-date," in authorization
        return {
            "authorization": authorization,
            "x-amz-date": date,
            "x-amz-content-sha256": payload_hash,
        }

    body = b"signed remotely"
    body_hash = hashlib.sha256(body).hexdigest()
    async with httpx.AsyncClient(base_url=store.endpoint) as http:
        created = await http.put(
            f"/{bucket_name}",
            headers=await authorized("PUT", f"/{bucket_name}", sigv4.EMPTY_SHA256),
        )
        assert created.status_code == 200, created.text
        key_path = f"/{bucket_name}/dir/obj.txt"
        put = await http.put(
            key_path,
            content=body,
            headers=await authorized("PUT", key_path, body_hash),
        )
        assert put.status_code == 200, put.text
        get = await http.get(
            key_path, headers=await authorized("GET", key_path, sigv4.EMPTY_SHA256)
        )
        assert get.status_code == 200, get.text
        assert get.content == body

        # The same Authorization on another path is refused.
        headers = await authorized("GET", key_path, sigv4.EMPTY_SHA256)
        altered = await http.get(f"/{bucket_name}/dir/other.txt", headers=headers)
        assert altered.status_code == 403
        assert b"SignatureDoesNotMatch" in altered.content


def test_sync_client_runs_each_operation(emulator: EmulatorHandle):
    with SyncStsClient(emulator.endpoint, emulator.credentials) as sync_client:
        assumed = sync_client.assume_role(emulator.role_indicator, "sync")
        saml = sync_client.assume_role_with_saml(
            emulator.role_indicator,
            emulator.principal_indicator,
            emulator.saml_assertion(),
        )
        authorization = sync_client.object_store_authorization(
            "GET",
            "http://127.0.0.1:9/b/k",
            sigv4.amz_date(datetime.now(UTC)),
            sigv4.EMPTY_SHA256,
        )
    assert assumed.credentials.session_token
    assert saml.subject == "alice@example.test"
    assert authorization.startswith(
        f"AWS4-HMAC-SHA256 Credential={emulator.access_key}/"
    )
    assert "/kr-west1/s3/aws4_request" in authorization


async def test_object_store_authorization_matches_an_independent_signer(
    emulator: EmulatorHandle,
):
    """botocore signs the same request; the emulator must agree with it."""
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    now = datetime.now(UTC).replace(microsecond=0)
    date = sigv4.amz_date(now)
    url = "http://127.0.0.1:9000/bucket/some%20key?uploads"
    async with client(emulator) as sts_client:
        authorization = await sts_client.object_store_authorization(
            "POST", url, date, sigv4.EMPTY_SHA256, region="kr-west1", service="s3"
        )
    request = AWSRequest(
        method="POST",
        url=url,
        headers={"x-amz-date": date, "x-amz-content-sha256": sigv4.EMPTY_SHA256},
    )
    signer = S3SigV4Auth(
        Credentials(emulator.access_key, emulator.secret_key), "s3", "kr-west1"
    )
    request.context["timestamp"] = date
    canonical = signer.canonical_request(request)
    string_to_sign = signer.string_to_sign(request, canonical)
    expected = signer.signature(string_to_sign, request)
    assert authorization.endswith(f"Signature={expected}")


# -- versions -------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1.1", "1.2", "1.3", "sts 1.2", "v1.3"])
async def test_served_versions_answer(emulator: EmulatorHandle, version: str):
    async with client(emulator, api_version=version) as sts_client:
        result = await sts_client.assume_role(emulator.role_indicator, "versions")
    assert result.credentials.session_token


async def test_version_1_0_refused_locally_after_its_not_before(
    emulator: EmulatorHandle,
):
    stats_before = emulator.server.calls("assume_role")
    async with client(
        emulator, api_version="1.0", clock=lambda: AFTER_NOT_BEFORE
    ) as sts_client:
        with pytest.raises(
            StsRequestInvalid,
            match=r"version 1\.0 is deprecated and no longer supported since its "
            r"Not Before date 2026-05-31",
        ) as caught:
            await sts_client.assume_role(emulator.role_indicator, "old")
    assert caught.value.field == "api_version"
    assert emulator.server.calls("assume_role") == stats_before  # nothing sent


async def test_version_1_0_forced_is_refused_by_the_service(emulator: EmulatorHandle):
    async with client(emulator, api_version="1.0", force_deprecated=True) as sts_client:
        with pytest.raises(StsError, match=r"400 DeprecatedApiVersion") as caught:
            await sts_client.assume_role(emulator.role_indicator, "forced")
    assert caught.value.status == 400
    assert caught.value.request_id


async def test_version_1_0_served_before_its_not_before(emulator_factory):
    handle = emulator_factory(with_store=False, clock=lambda: BEFORE_NOT_BEFORE)
    async with client(
        handle, api_version="1.0", clock=lambda: BEFORE_NOT_BEFORE
    ) as sts_client:
        authorization = await sts_client.object_store_authorization(
            "GET",
            "http://127.0.0.1:9/b/k",
            sigv4.amz_date(BEFORE_NOT_BEFORE),
            sigv4.EMPTY_SHA256,
        )
    assert authorization.startswith("AWS4-HMAC-SHA256 Credential=")
    assert "/20260501/kr-west1/s3/aws4_request" in authorization


async def test_unknown_version_is_refused_by_the_service(emulator: EmulatorHandle):
    async with client(emulator, api_version="9.9") as sts_client:
        with pytest.raises(
            StsError, match=r"400 InvalidApiVersion: Scp-Api-Version 'sts 9\.9'"
        ):
            await sts_client.assume_role(emulator.role_indicator, "unknown")


def test_malformed_version_is_refused_at_construction():
    with pytest.raises(StsRequestInvalid, match=r"invalid STS API version 'latest'"):
        StsClient("http://127.0.0.1:9", ScpCredentials("a", "b"), api_version="latest")


# -- local validation -----------------------------------------------------------------

ROLE = "dev2:afd580f490394896a6bceabf77683c6bd:role_name"
PRINCIPAL = "dev2:afd580f490394896a6bceabf77683c6bd:idp_name"
DATE = "20261203T120000Z"

ASSUME_ROLE_CASES = [
    # role_indicator: pattern and length
    (dict(role_indicator="dev2-no-colons-at-all-but-long-enough"), "role_indicator",
     r"role_indicator: .* does not match"),
    (dict(role_indicator="a:b:c:d" + "x" * 30), "role_indicator",
     r"does not match \^\[\^:\]\+:"),
    (dict(role_indicator="dev2:acct:role"), "role_indicator",
     r"role_indicator: 'dev2:acct:role' is 14 characters, at least 32"),
    (dict(role_indicator=""), "role_indicator",
     r"role_indicator: must be at least 1 characters, got 0"),
    # role_session_name: 1..64
    (dict(role_session_name=""), "role_session_name",
     r"role_session_name: must be at least 1 characters, got 0"),
    (dict(role_session_name="s" * 65), "role_session_name",
     r"role_session_name: must be at most 64 characters, got 65"),
    # duration_seconds: integer within the documented inferred bounds
    (dict(duration_seconds=899), "duration_seconds",
     r"duration_seconds: 899 is outside 900\.\.43200"),
    (dict(duration_seconds=43201), "duration_seconds",
     r"duration_seconds: 43201 is outside 900\.\.43200"),
    (dict(duration_seconds="3600"), "duration_seconds",
     r"duration_seconds: must be an integer, got '3600'"),
    (dict(duration_seconds=True), "duration_seconds",
     r"duration_seconds: must be an integer, got True"),
]  # fmt: skip


@pytest.mark.parametrize(("changes", "field_name", "message"), ASSUME_ROLE_CASES)
async def test_assume_role_bad_input_is_refused_before_sending(
    changes: dict, field_name: str, message: str
):
    arguments = {"role_indicator": ROLE, "role_session_name": "s"} | changes
    # Nothing listens at port 9: a request that got sent would fail otherwise.
    async with StsClient("http://127.0.0.1:9", ScpCredentials("a", "b")) as c:
        with pytest.raises(StsRequestInvalid, match=message) as caught:
            await c.assume_role(**arguments)
    assert caught.value.field == field_name


SAML_CASES = [
    (dict(principal_indicator="short:a:b"), "principal_indicator",
     r"principal_indicator: 'short:a:b' is 9 characters, at least 32"),
    (dict(principal_indicator="no-colons-here-and-quite-long-too"),
     "principal_indicator", r"principal_indicator: .* does not match"),
    (dict(saml_assertion=""), "saml_assertion",
     r"saml_assertion: must be at least 1 characters, got 0"),
    (dict(saml_assertion=None), "saml_assertion", r"saml_assertion: field required"),
    (dict(role_indicator="x:y:z"), "role_indicator",
     r"role_indicator: 'x:y:z' is 5 characters"),
]  # fmt: skip


@pytest.mark.parametrize(("changes", "field_name", "message"), SAML_CASES)
async def test_saml_bad_input_is_refused_before_sending(
    changes: dict, field_name: str, message: str
):
    arguments = {
        "role_indicator": ROLE,
        "principal_indicator": PRINCIPAL,
        "saml_assertion": "PHNhbWw+",
    } | changes
    async with StsClient("http://127.0.0.1:9", ScpCredentials("a", "b")) as c:
        with pytest.raises(StsRequestInvalid, match=message) as caught:
            await c.assume_role_with_saml(**arguments)
    assert caught.value.field == field_name


AUTHORIZATION_CASES = [
    (dict(method=""), "method", r"method: must be at least 1 characters, got 0"),
    (dict(url=""), "url", r"url: must be at least 1 characters, got 0"),
    (dict(x_amz_date=""), "x_amz_date", r"x_amz_date: must be at least 1"),
    (dict(x_amz_content_sha256=""), "x_amz_content_sha256",
     r"x_amz_content_sha256: must be at least 1"),
    (dict(region=""), "region", r"region: must be at least 1 characters"),
    (dict(service=""), "service", r"service: must be at least 1 characters"),
]  # fmt: skip


@pytest.mark.parametrize(("changes", "field_name", "message"), AUTHORIZATION_CASES)
async def test_authorization_bad_input_is_refused_before_sending(
    changes: dict, field_name: str, message: str
):
    arguments = {
        "method": "GET",
        "url": "http://127.0.0.1:9/b/k",
        "x_amz_date": DATE,
        "x_amz_content_sha256": sigv4.EMPTY_SHA256,
    } | changes
    async with StsClient("http://127.0.0.1:9", ScpCredentials("a", "b")) as c:
        with pytest.raises(StsRequestInvalid, match=message) as caught:
            await c.object_store_authorization(**arguments)
    assert caught.value.field == field_name


# -- service errors -------------------------------------------------------------------


async def test_role_of_another_account_is_forbidden(emulator: EmulatorHandle):
    other = f"dev2:{'0' * 33}:signproxy-role"
    async with client(emulator) as sts_client:
        with pytest.raises(StsError, match=r"403 Forbidden: role_indicator") as caught:
            await sts_client.assume_role(other, "nope")
    assert (caught.value.status, caught.value.code) == (403, "Forbidden")
    assert not isinstance(caught.value, StsUnavailable)


async def test_wrong_secret_is_unauthorized(emulator: EmulatorHandle):
    wrong = ScpCredentials(emulator.access_key, "not-the-secret", emulator.account_id)
    async with StsClient(emulator.endpoint, wrong) as sts_client:
        with pytest.raises(StsError, match=r"401 Unauthorized: signature mismatch"):
            await sts_client.assume_role(emulator.role_indicator, "s")


async def test_clock_skew_over_five_minutes_is_unauthorized(emulator: EmulatorHandle):
    def skewed() -> datetime:
        return datetime.now(UTC) - timedelta(minutes=6)

    async with client(emulator, clock=skewed) as sts_client:
        with pytest.raises(
            StsError, match=r"401 Unauthorized: Scp-Timestamp is more than 5 minutes"
        ):
            await sts_client.assume_role(emulator.role_indicator, "s")


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("expired", r"403 Forbidden: saml_assertion: expired"),
        ("wrong_role", r"403 Forbidden: saml_assertion: its Role attribute"),
        ("wrong_principal", r"403 Forbidden: saml_assertion: its Role attribute"),
        ("failed_status", r"403 Forbidden: saml_assertion: .* not a success"),
        ("malformed", r"400 ValidationError: saml_assertion: .*not well-formed XML"),
    ],
)
async def test_bad_saml_assertions_are_refused(
    emulator: EmulatorHandle, kind: str, message: str
):
    async with client(emulator) as sts_client:
        with pytest.raises(StsError, match=message):
            await sts_client.assume_role_with_saml(
                emulator.role_indicator,
                emulator.principal_indicator,
                emulator.saml_assertion(kind),
            )


async def test_assume_without_a_store_is_unavailable(emulator_factory):
    handle = emulator_factory(with_store=False)
    async with client(handle, max_retries=1) as sts_client:
        with pytest.raises(
            StsUnavailable, match=r"503 ServiceUnavailable: no object store"
        ):
            await sts_client.assume_role(handle.role_indicator, "s")
    assert handle.server.calls("assume_role") == 2  # one retry, then given up


# -- retries --------------------------------------------------------------------------


async def test_injected_5xx_are_retried(emulator_factory):
    handle = emulator_factory(faults=Faults(error_next=2))
    async with client(handle, max_retries=3) as sts_client:
        result = await sts_client.assume_role(handle.role_indicator, "retry")
    assert result.credentials.session_token
    stats = handle.server.stats()
    assert stats["calls"]["assume_role"] == 3
    assert stats["responses"]["assume_role"] == {"503": 2, "200": 1}


async def test_429_is_retried(emulator_factory):
    handle = emulator_factory(
        with_store=False, faults=Faults(error_next=1, error_status=429)
    )
    async with client(handle) as sts_client:
        authorization = await sts_client.object_store_authorization(
            "GET", "http://h/b/k", sigv4.amz_date(datetime.now(UTC)), "UNSIGNED-PAYLOAD"
        )
    assert authorization.startswith("AWS4-HMAC-SHA256 ")
    assert handle.server.stats()["responses"]["object_store_authorization"] == {
        "429": 1,
        "200": 1,
    }


async def test_dropped_connections_are_retried(emulator_factory):
    handle = emulator_factory(with_store=False, faults=Faults(drop_next=2))
    async with client(handle, max_retries=2) as sts_client:
        authorization = await sts_client.object_store_authorization(
            "GET", "http://h/b/k", sigv4.amz_date(datetime.now(UTC)), "UNSIGNED-PAYLOAD"
        )
    assert authorization.startswith("AWS4-HMAC-SHA256 ")
    stats = handle.server.stats()
    assert stats["calls"]["object_store_authorization"] == 3
    assert stats["dropped"] == 2


async def test_retries_give_up_with_unavailable(emulator_factory):
    handle = emulator_factory(with_store=False, faults=Faults(error_rate=1.0))
    async with client(handle, max_retries=2) as sts_client:
        with pytest.raises(StsUnavailable, match=r"503 ServiceUnavailable") as caught:
            await sts_client.object_store_authorization(
                "GET", "http://h/b/k", sigv4.amz_date(datetime.now(UTC)), "x" * 64
            )
    assert caught.value.status == 503
    assert handle.server.calls("object_store_authorization") == 3


async def test_dropped_every_time_gives_unavailable_without_status(emulator_factory):
    handle = emulator_factory(with_store=False, faults=Faults(drop_rate=1.0))
    async with client(handle, max_retries=1) as sts_client:
        with pytest.raises(StsUnavailable, match=r"unreachable: RemoteProtocolError"):
            await sts_client.object_store_authorization(
                "GET", "http://h/b/k", sigv4.amz_date(datetime.now(UTC)), "x" * 64
            )
    assert handle.server.calls("object_store_authorization") == 2


async def test_4xx_is_not_retried(emulator: EmulatorHandle):
    emulator.server.reset()
    async with client(emulator, max_retries=3) as sts_client:
        with pytest.raises(StsError, match=r"403 Forbidden"):
            await sts_client.assume_role(emulator.role_indicator + "x", "s")
        with pytest.raises(StsError, match=r"400 ValidationError: x_amz_date"):
            await sts_client.object_store_authorization(
                "GET", "http://h/b/k", "yesterday", sigv4.EMPTY_SHA256
            )
    assert emulator.server.calls("assume_role") == 1
    assert emulator.server.calls("object_store_authorization") == 1


async def test_connection_refused_is_unavailable_after_retries():
    async with StsClient(
        "http://127.0.0.1:9", ScpCredentials("a", "b"), max_retries=1, backoff_base=0
    ) as sts_client:
        with pytest.raises(
            StsUnavailable, match=r"unreachable: ConnectError"
        ) as caught:
            await sts_client.assume_role(ROLE, "s")
    assert caught.value.status is None


async def test_a_timeout_is_unavailable(emulator_factory):
    handle = emulator_factory(with_store=False, faults=Faults(latency=2.0))
    async with client(handle, timeout=0.2, max_retries=0) as sts_client:
        with pytest.raises(StsUnavailable, match=r"unreachable: ReadTimeout"):
            await sts_client.object_store_authorization(
                "GET", "http://h/b/k", sigv4.amz_date(datetime.now(UTC)), "x" * 64
            )


# -- what the client sends ------------------------------------------------------------


async def test_headers_follow_the_documented_hmac():
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"Authorization": "AWS4-HMAC-SHA256 x"})

    moment = datetime(2026, 12, 3, 1, 2, 3, 456000, tzinfo=UTC)
    credentials = ScpCredentials("AKEXAMPLE", "the-secret", "acct123")
    async with StsClient(
        "https://sts.e.samsungsdscloud.com/",
        credentials,
        clock=lambda: moment,
        transport=httpx.MockTransport(answer),
    ) as sts_client:
        await sts_client.object_store_authorization("GET", "u", DATE, "h")
    request = seen[0]
    url = "https://sts.e.samsungsdscloud.com/v1/object-store-authorization"
    assert str(request.url) == url
    headers = request.headers
    assert headers["Scp-Timestamp"] == "1796259723456"
    assert headers["Scp-Accesskey"] == "AKEXAMPLE"
    assert headers["Scp-ClientType"] == "Openapi"
    assert headers["Scp-AccountId"] == "acct123"
    assert headers["Scp-Api-Version"] == "sts 1.1"
    import base64
    import hmac

    message = f"POST{url}1796259723456AKEXAMPLEacct123Openapi".encode()
    digest = hmac.new(b"the-secret", message, "sha256").digest()
    assert headers["Scp-Signature"] == base64.b64encode(digest).decode()
    assert json.loads(request.content) == {
        "method": "GET",
        "url": "u",
        "x_amz_date": DATE,
        "x_amz_content_sha256": "h",
    }


async def test_echoed_secrets_are_sanitized_out_of_errors():
    assertion = "PHNhbWxwOlJlc3BvbnNlIHNlY3JldD0ieHl6Ij4=" * 3

    def answer(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        envelope = sts.error_envelope(
            400,
            "ValidationError",
            "Bad assertion",
            [f"saml_assertion {body['saml_assertion']} is invalid", "the-secret"],
            "req-1",
        )
        return httpx.Response(400, json=envelope)

    async with StsClient(
        "http://sts.test",
        ScpCredentials("AK", "the-secret"),
        transport=httpx.MockTransport(answer),
    ) as sts_client:
        with pytest.raises(StsError, match=r"400 ValidationError") as caught:
            await sts_client.assume_role_with_saml(ROLE, PRINCIPAL, assertion)
    error = caught.value
    for text in (str(error), repr(error), repr(error.detail), error.title):
        assert assertion not in text
        assert assertion[:40] not in text
        assert "the-secret" not in text
    assert error.request_id == "req-1"
    assert "<redacted>" in str(error)


async def test_a_response_without_authorization_is_an_error():
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json={}))
    async with StsClient(
        "http://sts.test", ScpCredentials("AK", "s"), transport=transport
    ) as sts_client:
        with pytest.raises(StsError, match=r"the response has no Authorization"):
            await sts_client.object_store_authorization("GET", "u", DATE, "h")


# -- credentials and endpoint ---------------------------------------------------------


def test_credentials_from_env():
    creds = ScpCredentials.from_env(
        {"SCP_ACCESS_KEY": "AK", "SCP_SECRET_KEY": "SK", "SCP_ACCOUNT_ID": "acct"}
    )
    assert (creds.access_key, creds.secret_key, creds.account_id) == (
        "AK",
        "SK",
        "acct",
    )
    assert "SK" not in repr(creds)


def test_credentials_from_env_name_missing_variables():
    with pytest.raises(ValueError, match=r"set SCP_ACCESS_KEY and SCP_SECRET_KEY"):
        ScpCredentials.from_env({})
    with pytest.raises(ValueError, match=r"set SCP_SECRET_KEY \(or use"):
        ScpCredentials.from_env({"SCP_ACCESS_KEY": "AK"})


def test_credentials_from_file(tmp_path: Path):
    path = tmp_path / "scp.toml"
    path.write_text('[scp]\naccess_key = "AK"\nsecret_key = "SK"\n')
    assert ScpCredentials.from_file(path) == ScpCredentials("AK", "SK", None)
    path.write_text('access_key = "AK2"\nsecret_key = "SK2"\naccount_id = "x"\n')
    assert ScpCredentials.from_file(path) == ScpCredentials("AK2", "SK2", "x")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[scp]\naccess_key = "AK"\n', r"missing secret_key"),
        ('[scp]\naccess_key = 1\nsecret_key = "s"\n', r"access_key must be a string"),
        ("[scp\n", r"scp\.toml'.*Expected"),
    ],
)
def test_credentials_file_errors(tmp_path: Path, text: str, message: str):
    path = tmp_path / "scp.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        ScpCredentials.from_file(path)


def test_credentials_file_missing(tmp_path: Path):
    with pytest.raises(ValueError, match=r"unable to read SCP config file .*nope"):
        ScpCredentials.from_file(tmp_path / "nope.toml")


@pytest.mark.parametrize(
    ("flag", "environ", "expected"),
    [
        ("http://127.0.0.1:1/", {"SCP_STS_ENDPOINT": "http://x"}, "http://127.0.0.1:1"),
        (None, {"SCP_STS_ENDPOINT": "http://x", "SCP_ENV": "e"}, "http://x"),
        (None, {"SCP_ENV": "g"}, "https://sts.g.samsungsdscloud.com"),
    ],
)
def test_resolve_endpoint(flag, environ, expected):
    assert resolve_endpoint(flag, environ) == expected


def test_resolve_endpoint_names_the_variables():
    with pytest.raises(ValueError, match=r"set SCP_STS_ENDPOINT, or SCP_ENV"):
        resolve_endpoint(None, {})
    with pytest.raises(ValueError, match=r"invalid STS endpoint 'ftp://x'"):
        resolve_endpoint("ftp://x", {})
    with pytest.raises(ValueError, match=r"invalid SCP_ENV 'a/b'"):
        resolve_endpoint(None, {"SCP_ENV": "a/b"})


def test_expiration_format_round_trips():
    moment = datetime(2026, 2, 11, 6, 44, 31, 554000, tzinfo=UTC)
    assert sts.format_expiration(moment) == "2026-02-11T06:44:31.554Z"
    assert sts.parse_expiration("2026-02-11T06:44:31.554Z") == moment

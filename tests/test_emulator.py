"""The STS emulator spoken to directly over HTTP, as any SCP client would."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from signproxy import saml, sigv4
from signproxy.emulator import (
    Account,
    EmulatorServer,
    Faults,
    accounts_toml,
    load_accounts,
)
from tests.fixtures.emulator import EmulatorHandle, build_assertion

ASSUME_ROLE = "/v1/assume-role"
WITH_SAML = "/v1/assume-role-with-saml"
AUTHORIZATION = "/v1/object-store-authorization"


def scp_headers(
    handle: EmulatorHandle,
    path: str,
    *,
    secret: str | None = None,
    access_key: str | None = None,
    when: datetime | None = None,
    version: str | None = "sts 1.1",
    account_id: str | None = None,
    skew: timedelta = timedelta(0),
) -> dict[str, str]:
    """The documented SCP HMAC headers, computed here independently."""
    access_key = access_key or handle.access_key
    account_id = handle.account_id if account_id is None else account_id
    stamp = str(int(((when or datetime.now(UTC)) + skew).timestamp() * 1000))
    message = f"POST{handle.endpoint}{path}{stamp}{access_key}{account_id}Openapi"
    digest = hmac.new(
        (secret or handle.secret_key).encode(), message.encode(), hashlib.sha256
    ).digest()
    headers = {
        "Scp-Accesskey": access_key,
        "Scp-Timestamp": stamp,
        "Scp-ClientType": "Openapi",
        "Scp-Signature": base64.b64encode(digest).decode(),
        "Content-Type": "application/json",
    }
    if account_id:
        headers["Scp-AccountId"] = account_id
    if version is not None:
        headers["Scp-Api-Version"] = version
    return headers


def post(
    handle: EmulatorHandle, path: str, body: Any, **header_options: Any
) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(
        handle.endpoint + path,
        content=content,
        headers=scp_headers(handle, path, **header_options),
        timeout=10,
    )


def error_of(response: httpx.Response) -> dict[str, Any]:
    errors = response.json()["errors"]
    assert len(errors) == 1
    assert errors[0]["status"] == response.status_code
    assert errors[0]["request_id"] == response.headers["x-request-id"]
    return errors[0]


def osa_body(now: str | None = None, **changes: Any) -> dict[str, Any]:
    """An object-store-authorization body; `now="{now}"` defers the date to
    `_fill`, for tables built at collection time."""
    return {
        "method": "GET",
        "url": "http://127.0.0.1:9000/bucket/key",
        "x_amz_date": now or sigv4.amz_date(datetime.now(UTC)),
        "x_amz_content_sha256": sigv4.EMPTY_SHA256,
    } | changes


# -- discovery and routing ------------------------------------------------------------


def test_root_lists_versions(emulator: EmulatorHandle):
    response = httpx.get(emulator.endpoint + "/")
    assert response.status_code == 200
    versions = {v["id"]: v for v in response.json()["versions"]}
    assert set(versions) == {"v1.0", "v1.1", "v1.2", "v1.3"}
    assert versions["v1.1"]["status"] == "CURRENT"
    assert versions["v1.0"]["status"] == "DEPRECATED"
    assert versions["v1.0"]["not_before"] == "2026-05-31"
    assert versions["v1.1"]["links"][0]["href"] == emulator.endpoint + "/"


def test_unknown_path_and_wrong_method(emulator: EmulatorHandle):
    missing = httpx.post(emulator.endpoint + "/v1/assume-everything")
    assert missing.status_code == 404
    assert error_of(missing)["code"] == "NotFound"
    wrong = httpx.get(emulator.endpoint + ASSUME_ROLE)
    assert wrong.status_code == 405
    assert error_of(wrong)["code"] == "MethodNotAllowed"


def test_keep_alive_serves_many_calls_on_one_connection(emulator: EmulatorHandle):
    with httpx.Client() as http:
        statuses = []
        for _ in range(5):
            path = AUTHORIZATION
            response = http.post(
                emulator.endpoint + path,
                json=osa_body(),
                headers=scp_headers(emulator, path),
            )
            statuses.append(response.status_code)
        pool = http._transport._pool  # one pooled connection did all five
        assert len(pool.connections) == 1
    assert statuses == [200] * 5


# -- authentication -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "detail"),
    [
        ({"secret": "wrong"}, "signature mismatch"),
        ({"access_key": "AKUNKNOWN"}, "unknown access key 'AKUNKNOWN'"),
        ({"account_id": "0" * 33}, "Scp-AccountId does not match the key"),
        (
            {"skew": timedelta(minutes=6)},
            "Scp-Timestamp is more than 5 minutes from the service's time",
        ),
        (
            {"skew": -timedelta(minutes=6)},
            "Scp-Timestamp is more than 5 minutes from the service's time",
        ),
    ],
)
def test_bad_authentication_is_401(
    emulator: EmulatorHandle, options: dict, detail: str
):
    response = post(emulator, AUTHORIZATION, osa_body(), **options)
    assert response.status_code == 401
    error = error_of(response)
    assert (error["code"], error["detail"]) == ("Unauthorized", detail)


def test_missing_headers_are_named(emulator: EmulatorHandle):
    response = httpx.post(emulator.endpoint + AUTHORIZATION, json=osa_body())
    assert response.status_code == 401
    assert error_of(response)["detail"] == (
        "missing header(s): Scp-Accesskey, Scp-Timestamp, Scp-Signature, Scp-ClientType"
    )


def test_signature_without_account_id_header(emulator: EmulatorHandle):
    response = post(emulator, AUTHORIZATION, osa_body(), account_id="")
    assert response.status_code == 200
    assert response.json()["Authorization"].startswith("AWS4-HMAC-SHA256 ")


# -- versions -------------------------------------------------------------------------


def test_no_version_header_is_served_as_current(emulator: EmulatorHandle):
    response = post(emulator, AUTHORIZATION, osa_body(), version=None)
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("header", "status", "code", "detail"),
    [
        ("sts 1.3", 200, None, None),
        ("sts 1.0", 400, "DeprecatedApiVersion", "no longer supported since its "
         "Not Before date 2026-05-31"),
        ("sts 2.0", 400, "InvalidApiVersion", "'sts 2.0' is not a version"),
        ("banana", 400, "InvalidApiVersion", "'banana' is not a version"),
    ],
)  # fmt: skip
def test_version_header(
    emulator: EmulatorHandle, header: str, status: int, code: str, detail: str
):
    response = post(emulator, AUTHORIZATION, osa_body(), version=header)
    assert response.status_code == status
    if code is not None:
        error = error_of(response)
        assert error["code"] == code
        assert detail in error["detail"]


def test_version_1_0_is_served_before_its_not_before(emulator_factory):
    moment = datetime(2026, 5, 30, 23, 0, tzinfo=UTC)
    handle = emulator_factory(with_store=False, clock=lambda: moment)
    body = osa_body(x_amz_date=sigv4.amz_date(moment))
    response = post(handle, AUTHORIZATION, body, version="sts 1.0", when=moment)
    assert response.status_code == 200
    assert "/20260530/kr-west1/s3/" in response.json()["Authorization"]


# -- body validation ------------------------------------------------------------------

ROLE_SUFFIX = ":signproxy-role"

BAD_BODIES = [
    (ASSUME_ROLE, b"not json", "body: not valid JSON"),
    (ASSUME_ROLE, [], "body: must be a JSON object"),
    (ASSUME_ROLE, {"role_session_name": "s"}, "role_indicator: field required"),
    (ASSUME_ROLE, {"role_indicator": "a:b:c", "role_session_name": "s"},
     "role_indicator: 'a:b:c' is 5 characters, at least 32 required"),
    (ASSUME_ROLE, {"role_indicator": "{role}"}, "role_session_name: field required"),
    (ASSUME_ROLE, {"role_indicator": "{role}", "role_session_name": "x" * 65},
     "role_session_name: must be at most 64 characters, got 65"),
    (ASSUME_ROLE, {"role_indicator": "{role}", "role_session_name": 7},
     "role_session_name: must be a string, got int"),
    (ASSUME_ROLE, {"role_indicator": "{role}", "role_session_name": "s",
                   "duration_seconds": 60},
     "duration_seconds: 60 is outside 900..43200"),
    (ASSUME_ROLE, {"role_indicator": "{role}", "role_session_name": "s",
                   "duration_seconds": 1.5},
     "duration_seconds: must be an integer, got 1.5"),
    (WITH_SAML, {"role_indicator": "{role}", "saml_assertion": "x"},
     "principal_indicator: field required"),
    (WITH_SAML, {"role_indicator": "{role}", "principal_indicator": "{principal}",
                 "saml_assertion": ""},
     "saml_assertion: must be at least 1 characters, got 0"),
    (WITH_SAML, {"role_indicator": "{role}", "principal_indicator": "{principal}",
                 "saml_assertion": "%%%not base64"},
     "saml_assertion: saml_assertion is not valid base64"),
    (AUTHORIZATION, {"url": "u"}, "method: field required"),
    (AUTHORIZATION, osa_body("{now}", x_amz_content_sha256=None),
     "x_amz_content_sha256: field required"),
    (AUTHORIZATION, osa_body("{now}", x_amz_date="2026-12-03"),
     "x_amz_date: malformed x-amz-date '2026-12-03'"),
    (AUTHORIZATION, osa_body("{now}", x_amz_content_sha256="abc"),
     "x_amz_content_sha256: malformed payload hash 'abc'"),
    (AUTHORIZATION, osa_body("{now}", url="ftp://host/x"), "url: unparseable URL"),
    (AUTHORIZATION, osa_body("{now}", method="GE T"),
     "method: 'GE T' is not an HTTP method"),
    (AUTHORIZATION, osa_body("{now}", region="a/b"), "region: invalid region 'a/b'"),
]  # fmt: skip


def _fill(value: Any, handle: EmulatorHandle) -> Any:
    if isinstance(value, dict):
        return {key: _fill(item, handle) for key, item in value.items()}
    if isinstance(value, str):
        return (
            value.replace("{role}", handle.role_indicator)
            .replace("{principal}", handle.principal_indicator)
            .replace("{now}", sigv4.amz_date(datetime.now(UTC)))
        )
    return value


@pytest.mark.parametrize(("path", "body", "detail"), BAD_BODIES)
def test_bad_bodies_are_400_naming_the_field(
    emulator: EmulatorHandle, path: str, body: Any, detail: str
):
    response = post(emulator, path, _fill(body, emulator))
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "ValidationError"
    assert isinstance(error["detail"], list)
    assert error["detail"][0].startswith(detail)


# -- authorization of roles and providers ---------------------------------------------


def test_role_not_in_the_account_is_forbidden(emulator: EmulatorHandle):
    indicator = emulator.role_indicator.replace(ROLE_SUFFIX, ":admin-role-here")
    response = post(
        emulator, ASSUME_ROLE, {"role_indicator": indicator, "role_session_name": "s"}
    )
    assert response.status_code == 403
    error = error_of(response)
    assert error["code"] == "Forbidden"
    assert error["detail"] == (
        f"role_indicator {indicator!r} is not assumable by this account"
    )


def test_unregistered_saml_provider_is_forbidden(emulator: EmulatorHandle):
    principal = emulator.principal_indicator.replace(":test-idp", ":other-idp")
    response = post(
        emulator,
        WITH_SAML,
        {
            "role_indicator": emulator.role_indicator,
            "principal_indicator": principal,
            "saml_assertion": build_assertion(
                "valid", emulator.role_indicator, principal
            ),
        },
    )
    assert response.status_code == 403
    assert "is not a SAML provider of this account" in error_of(response)["detail"]


def test_saml_assertion_with_a_dtd_is_refused(emulator: EmulatorHandle):
    document = (
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY e "x">]>'
        b'<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol"/>'
    )
    response = post(
        emulator,
        WITH_SAML,
        {
            "role_indicator": emulator.role_indicator,
            "principal_indicator": emulator.principal_indicator,
            "saml_assertion": base64.b64encode(document).decode(),
        },
    )
    assert response.status_code == 400
    assert error_of(response)["detail"] == [
        "saml_assertion: saml_assertion contains a DTD, which is not allowed"
    ]


def test_authorization_date_more_than_15_minutes_off_is_forbidden(
    emulator: EmulatorHandle,
):
    stale = sigv4.amz_date(datetime.now(UTC) - timedelta(minutes=16))
    response = post(emulator, AUTHORIZATION, osa_body(x_amz_date=stale))
    assert response.status_code == 403
    assert error_of(response)["detail"] == (
        f"x_amz_date {stale!r} is more than 15 minutes from the service's time"
    )


def test_authorization_signs_exactly_three_headers(emulator: EmulatorHandle):
    date = sigv4.amz_date(datetime.now(UTC))
    response = post(
        emulator,
        AUTHORIZATION,
        osa_body(x_amz_date=date, region="kr-east1", service="s3"),
    )
    authorization = response.json()["Authorization"]
    assert list(response.json()) == ["Authorization"]
    scope = f"{emulator.access_key}/{date[:8]}/kr-east1/s3/aws4_request"
    assert authorization.startswith(f"AWS4-HMAC-SHA256 Credential={scope}, ")
    assert "SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=" in (
        authorization
    )


# -- faults and stats over HTTP -------------------------------------------------------


def test_faults_and_stats_endpoints(emulator_factory):
    handle = emulator_factory(with_store=False)
    admin = handle.endpoint + "/_emulator"
    set_faults = httpx.post(admin + "/faults", json={"error_next": 1, "drop_next": 1})
    assert set_faults.json()["faults"]["error_next"] == 1

    with pytest.raises(httpx.RemoteProtocolError, match="without sending"):
        post(handle, AUTHORIZATION, osa_body())
    injected = post(handle, AUTHORIZATION, osa_body())
    assert injected.status_code == 503
    assert error_of(injected)["detail"] == "injected fault"
    assert post(handle, AUTHORIZATION, osa_body()).status_code == 200

    stats = httpx.get(admin + "/stats").json()
    assert stats == {
        "calls": {"object_store_authorization": 3},
        "responses": {"object_store_authorization": {"503": 1, "200": 1}},
        "injected_errors": 1,
        "dropped": 1,
    }
    reset = httpx.post(admin + "/reset")
    assert reset.status_code == 200
    assert httpx.get(admin + "/stats").json()["calls"] == {}


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"error_rate": 2}, "faults: error_rate must be within 0..1, got 2"),
        ({"latency": -1}, "faults: latency must be >= 0 seconds, got -1"),
        ({"colour": "red"}, "faults: unknown fault knob(s): colour"),
        ([1], "faults: the body must be a JSON object"),
    ],
)
def test_bad_faults_are_refused(emulator_factory, body: Any, detail: str):
    handle = emulator_factory(with_store=False)
    response = httpx.post(handle.endpoint + "/_emulator/faults", json=body)
    assert response.status_code == 400
    assert error_of(response)["detail"] == [detail]
    assert handle.server.faults == Faults()


def test_admin_endpoints_refuse_other_peers():
    server = EmulatorServer([])
    from signproxy.emulator import Call, Refusal

    call = Call("GET", "/_emulator/stats", {}, b"", peer="192.0.2.7")
    with pytest.raises(Refusal, match="403 Forbidden"):
        server._admin(call, "/_emulator/stats", "rid")


# -- accounts file --------------------------------------------------------------------


def test_accounts_file_round_trip(tmp_path: Path):
    accounts = [
        Account("AK1", "s1", "acct-1", ("r1", "r2"), ("idp",)),
        Account("AK2", "s2", "acct-2"),
    ]
    path = tmp_path / "accounts.toml"
    path.write_text(accounts_toml(accounts))
    assert load_accounts(path) == accounts
    assert "s1" not in repr(accounts[0])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", r"no \[accounts.ACCESS_KEY\] tables"),
        ('[accounts.AK]\naccount_id = "a"\n', r"\[accounts.AK\]: secret_key is req"),
        ('[accounts.AK]\nsecret_key = "s"\naccount_id = "a"\nroles = "r"\n',
         r"\[accounts.AK\]: roles must be a list of strings"),
        ("[accounts\n", r"accounts file .*Expected"),
    ],
)  # fmt: skip
def test_accounts_file_errors(tmp_path: Path, text: str, message: str):
    path = tmp_path / "accounts.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_accounts(path)


# -- SAML parsing ---------------------------------------------------------------------


def test_saml_response_round_trip():
    now = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
    encoded = saml.build_saml_response(
        issuer="https://idp",
        audience="https://sts/saml",
        subject="carol",
        roles=[("o:a:role", "o:a:idp"), ("o:a:role2", "o:a:idp")],
        issued_at=now,
        not_on_or_after=now + timedelta(minutes=5),
        session_name="carol-session",
    )
    parsed = saml.parse_saml_response(encoded)
    assert (parsed.issuer, parsed.audience, parsed.subject) == (
        "https://idp",
        "https://sts/saml",
        "carol",
    )
    assert parsed.not_on_or_after == now + timedelta(minutes=5)
    assert parsed.session_name == "carol-session"
    assert parsed.names("o:a:role2", "o:a:idp")
    assert parsed.names("o:a:idp", "o:a:role")  # either order, as AWS allows
    assert not parsed.names("o:a:role3", "o:a:idp")


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (b"<a/>", r"not a SAML 2.0 protocol Response"),
        (
            b'<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol"/>',
            r"has no Assertion",
        ),
        (b"<!ENTITY x SYSTEM 'file:///etc/passwd'>", r"contains a DTD"),
    ],
)
def test_saml_parse_errors(document: bytes, message: str):
    with pytest.raises(saml.SamlError, match=message):
        saml.parse_saml_response(base64.b64encode(document).decode())


def test_saml_without_role_attribute_is_malformed():
    now = datetime.now(UTC)
    encoded = saml.build_saml_response(
        issuer="i",
        audience="a",
        subject="s",
        roles=[],
        issued_at=now,
        not_on_or_after=now + timedelta(minutes=5),
    )
    with pytest.raises(saml.SamlError, match=r"has no .*SAML/Attributes/Role"):
        saml.parse_saml_response(encoded)


# -- the command ----------------------------------------------------------------------


def test_emulator_command_serves_until_terminated(tmp_path: Path, emulator_account):
    accounts = tmp_path / "accounts.toml"
    accounts.write_text(accounts_toml([emulator_account]))
    process = subprocess.Popen(
        [
            sys.executable, "-m", "signproxy.cli", "emulator",
            "--listen", "127.0.0.1:0", "--accounts", str(accounts),
            "--error-rate", "0", "--latency", "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # blocks until it serves or dies
        assert line.startswith("listening on http://127.0.0.1:"), line
        handle = EmulatorHandle(EmulatorServer([]), emulator_account)
        handle.server.port = int(line.strip().rsplit(":", 1)[1])
        response = post(handle, AUTHORIZATION, osa_body())
        assert response.status_code == 200
        assert response.json()["Authorization"].startswith("AWS4-HMAC-SHA256 ")
        unstored = post(
            handle,
            ASSUME_ROLE,
            {"role_indicator": handle.role_indicator, "role_session_name": "s"},
        )
        assert unstored.status_code == 503
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
    assert process.returncode == 0
    assert "emulator object_store_authorization status=200" in stderr
    assert emulator_account.secret_key not in stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--listen", "nowhere"], "--listen: 'nowhere' is not HOST:PORT"),
        (["--error-rate", "1.5"], "'1.5' is not a rate within 0..1"),
        (["--store", "s3://x"], "--store: 's3://x' is not an http"),
    ],
)
def test_emulator_command_usage_errors(tmp_path: Path, args: list[str], message: str):
    accounts = tmp_path / "accounts.toml"
    accounts.write_text(accounts_toml([Account("AK", "s", "a")]))
    result = subprocess.run(
        [sys.executable, "-m", "signproxy.cli", "emulator", "--accounts",
         str(accounts), *args],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert message in result.stderr


def test_emulator_command_bad_accounts_file(tmp_path: Path):
    result = subprocess.run(
        [sys.executable, "-m", "signproxy.cli", "emulator", "--accounts",
         str(tmp_path / "missing.toml")],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "unable to read accounts file" in result.stderr

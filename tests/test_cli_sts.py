"""`signproxy sts ...` against the emulator, and what a full run logs."""

from __future__ import annotations

import json
import logging
import shlex
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import boto3
import httpx
import pytest

from signproxy import cli, sigv4
from signproxy.sts import SyncStsClient
from tests.fixtures.emulator import EmulatorHandle


@pytest.fixture(autouse=True)
def keep_root_logger() -> Iterator[None]:
    """The command configures logging; give the next test the root it had."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture
def sts_env(
    emulator: EmulatorHandle, monkeypatch: pytest.MonkeyPatch
) -> EmulatorHandle:
    for name in ("SCP_STS_ENDPOINT", "SCP_ENV", "SCP_ACCOUNT_ID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in emulator.env().items():
        monkeypatch.setenv(name, value)
    return emulator


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(["sts", *argv])
    out, err = capsys.readouterr()
    return code, out, err


# -- each command ---------------------------------------------------------------------


@pytest.mark.parametrize("spelling", ["dashes", "underscores"])
def test_assume_role_prints_the_response_json(
    sts_env: EmulatorHandle, capsys, spelling: str
):
    names = ["--role-session-name", "--role-indicator", "--duration-seconds"]
    if spelling == "underscores":
        names = [name.replace("-", "_").replace("__", "--") for name in names]
    code, out, err = run(
        [
            "assume-role",
            names[0], "cli-session",
            names[1], sts_env.role_indicator,
            names[2], "1200",
        ],
        capsys,
    )  # fmt: skip
    assert (code, err) == (0, "")
    response = json.loads(out)
    assert set(response) == {"assumed_role_user", "credentials"}
    assert set(response["credentials"]) == {
        "access_key_id",
        "secret_access_key",
        "session_token",
        "expiration",
    }
    assert response["credentials"]["expiration"].endswith("Z")
    assert response["assumed_role_user"]["assumed_role_id"].endswith(":cli-session")


def test_assume_role_env_output_works_with_boto3(
    sts_env: EmulatorHandle, store, capsys
):
    code, out, _ = run(
        [
            "assume-role",
            "--role-session-name", "env-out",
            "--role-indicator", sts_env.role_indicator,
            "--output", "env",
        ],
        capsys,
    )  # fmt: skip
    assert code == 0
    exported = {}
    for line in out.splitlines():
        words = shlex.split(line)
        assert words[0] == "export"
        name, _, value = words[1].partition("=")
        exported[name] = value
    assert set(exported) == {
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_CREDENTIAL_EXPIRATION",
    }
    s3 = boto3.client(
        "s3",
        endpoint_url=store.endpoint,
        aws_access_key_id=exported["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=exported["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=exported["AWS_SESSION_TOKEN"],
        region_name="us-east-1",
    )
    assert "Buckets" in s3.list_buckets()


@pytest.mark.parametrize("source", ["value", "file"])
def test_assume_role_with_saml(
    sts_env: EmulatorHandle, capsys, tmp_path: Path, source: str
):
    assertion = sts_env.saml_assertion(subject="dave@example.test")
    argument = assertion
    if source == "file":
        path = tmp_path / "assertion.b64"
        path.write_text(assertion + "\n")
        argument = f"@{path}"
    code, out, err = run(
        [
            "assume-role-with-saml",
            "--saml_assertion", argument,
            "--role_indicator", sts_env.role_indicator,
            "--principal-indicator", sts_env.principal_indicator,
        ],
        capsys,
    )  # fmt: skip
    assert (code, err) == (0, "")
    response = json.loads(out)
    assert response["subject"] == "dave@example.test"
    assert response["issuer"] == "https://idp.example.test/saml"
    assert set(response) == {
        "assumed_role_user",
        "credentials",
        "audience",
        "issuer",
        "subject",
        "subject_type",
    }


def test_object_store_authorization_is_accepted_by_the_store(
    sts_env: EmulatorHandle, store, capsys
):
    date = sigv4.amz_date(datetime.now(UTC))
    url = f"{store.endpoint}/"
    code, out, _ = run(
        [
            "object-store-authorization",
            "--x_amz_date", date,
            "--x-amz-content-sha256", sigv4.EMPTY_SHA256,
            "--url", url,
            "--method", "GET",
            "--region", "us-east-1",
            "--service", "s3",
        ],
        capsys,
    )  # fmt: skip
    assert code == 0
    response = json.loads(out)
    assert list(response) == ["Authorization"]
    listed = httpx.get(
        url,
        headers={
            "authorization": response["Authorization"],
            "x-amz-date": date,
            "x-amz-content-sha256": sigv4.EMPTY_SHA256,
        },
    )
    assert listed.status_code == 200, listed.text
    assert b"ListAllMyBucketsResult" in listed.content


def test_credentials_from_a_config_file(
    sts_env: EmulatorHandle, capsys, tmp_path: Path, monkeypatch
):
    monkeypatch.delenv("SCP_ACCESS_KEY")
    monkeypatch.delenv("SCP_SECRET_KEY")
    config = tmp_path / "scp.toml"
    config.write_text(
        f'[scp]\naccess_key = "{sts_env.access_key}"\n'
        f'secret_key = "{sts_env.secret_key}"\n'
        f'account_id = "{sts_env.account_id}"\n'
    )
    code, out, _ = run(
        [
            "object-store-authorization",
            "--config", str(config),
            "--x-amz-date", sigv4.amz_date(datetime.now(UTC)),
            "--x-amz-content-sha256", "UNSIGNED-PAYLOAD",
            "--url", "http://127.0.0.1:9/b/k",
            "--method", "PUT",
        ],
        capsys,
    )  # fmt: skip
    assert code == 0
    assert json.loads(out)["Authorization"].startswith("AWS4-HMAC-SHA256 ")


# -- exit codes -----------------------------------------------------------------------


def test_service_error_exits_1_with_code_and_request_id(sts_env, capsys):
    other_role = sts_env.role_indicator + "-not-mine"
    code, out, err = run(
        ["assume-role", "--role-session-name", "s", "--role-indicator", other_role],
        capsys,
    )
    assert (code, out) == (1, "")
    assert err.startswith(
        "signproxy sts assume-role: Forbidden (status 403, request id "
    )
    request_id = err.split("request id ", 1)[1].split(")", 1)[0]
    assert len(request_id) == 32


def test_retired_version_exits_2_naming_the_date(sts_env, capsys):
    code, _, err = run(
        [
            "assume-role", "--api-version", "1.0",
            "--role-session-name", "s", "--role-indicator", sts_env.role_indicator,
        ],
        capsys,
    )  # fmt: skip
    assert code == 2
    assert "no longer supported since its Not Before date 2026-05-31" in err


def test_forced_retired_version_reaches_the_service(sts_env, capsys):
    code, _, err = run(
        [
            "assume-role", "--api_version", "sts 1.0", "--force-deprecated",
            "--role-session-name", "s", "--role-indicator", sts_env.role_indicator,
        ],
        capsys,
    )  # fmt: skip
    assert code == 1
    assert "DeprecatedApiVersion (status 400" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["assume-role", "--role-session-name", "s", "--role-indicator", "a:b:c"],
         "role_indicator: 'a:b:c' is 5 characters, at least 32 required"),
        (["assume-role", "--role-session-name", "", "--role-indicator",
          "dev2:afd580f490394896a6bceabf77683c6bd:r"],
         "role_session_name: must be at least 1 characters, got 0"),
        (["assume-role-with-saml", "--saml-assertion", "@/nonexistent/a.b64",
          "--role-indicator", "dev2:afd580f490394896a6bceabf77683c6bd:r",
          "--principal-indicator", "dev2:afd580f490394896a6bceabf77683c6bd:p"],
         "--saml-assertion: unable to read '/nonexistent/a.b64'"),
        (["object-store-authorization", "--x-amz-date", "", "--url", "u",
          "--x-amz-content-sha256", "h", "--method", "GET"],
         "x_amz_date: must be at least 1 characters, got 0"),
    ],
)  # fmt: skip
def test_local_validation_exits_2(sts_env, capsys, argv: list[str], message: str):
    code, out, err = run(argv, capsys)
    assert (code, out) == (2, "")
    assert message in err


def test_missing_credentials_exit_2(capsys, monkeypatch):
    for name in ("SCP_ACCESS_KEY", "SCP_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SCP_STS_ENDPOINT", "http://127.0.0.1:9")
    code, _, err = run(
        ["assume-role", "--role-session-name", "s", "--role-indicator", "x"], capsys
    )
    assert code == 2
    assert "set SCP_ACCESS_KEY and SCP_SECRET_KEY" in err


def test_missing_endpoint_exit_2(capsys, monkeypatch):
    for name in ("SCP_STS_ENDPOINT", "SCP_ENV"):
        monkeypatch.delenv(name, raising=False)
    code, _, err = run(
        ["assume-role", "--role-session-name", "s", "--role-indicator", "x"], capsys
    )
    assert code == 2
    assert "set SCP_STS_ENDPOINT, or SCP_ENV" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["assume-role", "--role-indicator", "x"], "--role-session-name"),
        (["assume-role", "--role-session-name", "s", "--role-indicator", "x",
          "--duration-seconds", "soon"], "invalid int value: 'soon'"),
        (["object-store-authorization", "--output", "env", "--x-amz-date", "d",
          "--x-amz-content-sha256", "h", "--url", "u", "--method", "GET"],
         "unrecognized arguments: --output env"),
        (["assume-role", "--role-session-name", "s", "--role-indicator", "x",
          "--secret-key", "x"], "unrecognized arguments: --secret-key x"),
    ],
)  # fmt: skip
def test_argparse_errors_exit_2(capsys, argv: list[str], message: str):
    with pytest.raises(SystemExit, match="2"):
        cli.main(["sts", *argv])
    assert message in capsys.readouterr().err


# -- nothing secret in any log line ---------------------------------------------------


def test_a_full_run_logs_no_secret(
    emulator: EmulatorHandle,
    store,
    caplog: pytest.LogCaptureFixture,
    capsys,
    tmp_path: Path,
):
    """Every record of a run of all three operations, success and failure,
    from the client and the emulator, at DEBUG: no secret in any of them."""
    caplog.set_level(logging.DEBUG)
    secrets: list[str] = [emulator.secret_key]
    assertion = emulator.saml_assertion()
    secrets.append(assertion)
    date = sigv4.amz_date(datetime.now(UTC))
    with SyncStsClient(emulator.endpoint, emulator.credentials) as client:
        assumed = client.assume_role(emulator.role_indicator, "log-check")
        with_saml = client.assume_role_with_saml(
            emulator.role_indicator, emulator.principal_indicator, assertion
        )
        authorization = client.object_store_authorization(
            "GET", store.endpoint + "/", date, sigv4.EMPTY_SHA256
        )
        with pytest.raises(Exception, match="Forbidden"):
            client.assume_role_with_saml(
                emulator.role_indicator,
                emulator.principal_indicator,
                emulator.saml_assertion("expired"),
            )
        with pytest.raises(Exception, match="ValidationError"):
            client.assume_role_with_saml(
                emulator.role_indicator,
                emulator.principal_indicator,
                emulator.saml_assertion("malformed"),
            )
    for result in (assumed, with_saml):
        secrets += [
            result.credentials.secret_access_key,
            result.credentials.session_token,
        ]
    secrets += [authorization, authorization.rsplit("Signature=", 1)[1]]

    # The command line too, logging at debug to stderr.
    env_code = cli.main(
        [
            "sts", "assume-role", "--endpoint", emulator.endpoint,
            "--config", str(_config_file(emulator, tmp_path)),
            "--role-session-name", "cli-log", "--role-indicator",
            emulator.role_indicator, "--log-level", "debug",
        ]
    )  # fmt: skip
    assert env_code == 0
    out, err = capsys.readouterr()
    secrets += [
        json.loads(out)["credentials"]["secret_access_key"],
        json.loads(out)["credentials"]["session_token"],
    ]

    records = caplog.records
    operations = {"assume_role", "assume_role_with_saml", "object_store_authorization"}
    emulator_lines = [r for r in records if r.name == "signproxy.emulator"]
    client_lines = [r for r in records if r.name == "signproxy.sts"]
    assert {r.args[0] for r in emulator_lines if r.args} >= operations
    assert {r.args[0] for r in client_lines if r.args} >= operations
    texts = [caplog.text, err]
    texts += [record.getMessage() for record in records]
    texts += [repr(record.args) for record in records]
    for text in texts:
        for secret in secrets:
            assert secret not in text


def _config_file(emulator: EmulatorHandle, directory: Path) -> Path:
    path = directory / "scp.toml"
    path.write_text(
        f'access_key = "{emulator.access_key}"\nsecret_key = "{emulator.secret_key}"\n'
        f'account_id = "{emulator.account_id}"\n'
    )
    return path

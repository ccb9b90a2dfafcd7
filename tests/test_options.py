"""The option table: parsers, precedence, and errors that name option and value."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from signproxy import options
from signproxy.options import OptionError, resolve

REVERSE = {"upstream": "http://127.0.0.1:8333"}


@pytest.mark.parametrize(
    ("text", "size"),
    [("65536", 65536), ("64k", 65536), ("64KiB", 65536), ("8MiB", 8 << 20),
     ("8m", 8 << 20), ("1GiB", 1 << 30), (" 2 mb ", 2 << 20)],
)  # fmt: skip
def test_parse_size(text, size):
    assert options.parse_size(text) == size


@pytest.mark.parametrize("text", ["", "ten", "8 TiB", "-1", "1.5m"])
def test_parse_size_refuses(text):
    with pytest.raises(ValueError, match=r"a byte size such as"):
        options.parse_size(text)


@pytest.mark.parametrize(
    ("text", "address"),
    [("127.0.0.1:8080", ("127.0.0.1", 8080)), (":9090", ("127.0.0.1", 9090)),
     ("[::1]:0", ("::1", 0)), ("localhost:1", ("localhost", 1))],
)  # fmt: skip
def test_parse_host_port(text, address):
    assert options.parse_host_port(text) == address


@pytest.mark.parametrize(
    ("text", "reason"),
    [("8080", r"HOST:PORT"), ("host:", r"HOST:PORT"), ("h:70000", r"between 0 and")],
)
def test_parse_host_port_refuses(text, reason):
    with pytest.raises(ValueError, match=reason):
        options.parse_host_port(text)


@pytest.mark.parametrize(
    ("text", "url"),
    [("http://127.0.0.1:8333", "http://127.0.0.1:8333"),
     ("https://store.example.com/", "https://store.example.com"),
     ("http://[::1]:9000", "http://[::1]:9000")],
)  # fmt: skip
def test_parse_upstream(text, url):
    assert options.parse_upstream(text) == url


@pytest.mark.parametrize(
    ("text", "reason"),
    [("ftp://x", r"http:// or https://"), ("127.0.0.1:8333", r"http:// or https://"),
     ("http://u:p@store", r"credentials do not belong"),
     ("http://store/bucket", r"no path or query"), ("http://store:99999", r"port")],
)  # fmt: skip
def test_parse_upstream_refuses(text, reason):
    with pytest.raises(ValueError, match=reason):
        options.parse_upstream(text)


def test_parse_host_list():
    assert options.parse_host_list("S3.Example.com, *.store.test:443,") == (
        "s3.example.com",
        "*.store.test:443",
    )
    with pytest.raises(ValueError, match=r"comma-separated host names"):
        options.parse_host_list("bad host")


def test_defaults():
    config = resolve(REVERSE, environ={})
    assert config.listen == ("127.0.0.1", 8080)
    assert (config.mode, config.signer, config.payload) == ("reverse", "auto", "auto")
    assert config.hash_limit == 8 << 20
    assert config.chunk_size == 64 << 10
    assert config.metrics_listen is None
    assert config.allow_hosts == ()
    assert options.listen_is_loopback(config)


def test_given_beats_environment_beats_default():
    env = {"SIGNPROXY_PAYLOAD": "sign", "SIGNPROXY_REGION": "kr-east1"}
    config = resolve({**REVERSE, "payload": "unsigned"}, environ=env)
    assert config.payload == "unsigned"
    assert config.region == "kr-east1"
    assert config.service == "s3"


def test_upstream_from_environment():
    config = resolve({}, environ={"SIGNPROXY_UPSTREAM": "http://127.0.0.1:1"})
    assert config.upstream == "http://127.0.0.1:1"


def test_bad_choice_names_flag_value_and_choices():
    with pytest.raises(
        OptionError,
        match=r"^--payload: invalid value 'foo' \(choose auto, sign, unsigned\)$",
    ):
        resolve({**REVERSE, "payload": "foo"}, environ={})


def test_bad_environment_value_names_the_variable():
    with pytest.raises(OptionError, match=r"^SIGNPROXY_HASH_LIMIT: invalid value 'x'"):
        resolve(REVERSE, environ={"SIGNPROXY_HASH_LIMIT": "x"})


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({}, r"--upstream: required in reverse mode"),
        ({"mode": "forward"}, r"--allow-hosts: required in forward mode"),
        (
            {**REVERSE, "chunk_size": "1k"},
            r"--chunk-size: invalid value '1k' \(at least",
        ),
        ({**REVERSE, "duration_seconds": "60"}, r"between 900 and 43200"),
        ({**REVERSE, "saml_assertion_file": "/nonexistent"}, r"no such file"),
        ({**REVERSE, "metrics_listen": "127.0.0.1:8080"}, r"must differ from --listen"),
        (
            {**REVERSE, "api_version": "latest"},
            r"--api-version: invalid value 'latest'",
        ),
    ],
)
def test_refusals(given, message):
    with pytest.raises(OptionError, match=message):
        resolve(given, environ={})


def test_principal_needs_assertion_file_and_role(tmp_path: Path):
    assertion = tmp_path / "assertion.b64"
    assertion.write_text("PHNhbWw+")
    with pytest.raises(OptionError, match=r"--saml-assertion-file: required"):
        resolve({**REVERSE, "principal_indicator": "a:b:c"}, environ={})
    with pytest.raises(OptionError, match=r"--role-indicator: required"):
        resolve(
            {**REVERSE, "principal_indicator": "a:b:c",
             "saml_assertion_file": str(assertion)},
            environ={},
        )  # fmt: skip


def test_signer_settings_carry_the_options(tmp_path: Path):
    config = resolve(
        {**REVERSE, "signer": "local", "region": "kr-east1", "duration_seconds": "900"},
        environ={},
    )
    settings = config.signer_settings(
        environ={"SCP_ACCESS_KEY": "AK1234", "SCP_SECRET_KEY": "SK-secret"}
    )
    assert (settings.mode, settings.region, settings.duration_seconds) == (
        "local",
        "kr-east1",
        900,
    )
    assert settings.scp_credentials is not None
    assert settings.scp_credentials.access_key == "AK1234"
    assert "SK-secret" not in repr(settings)


def test_signer_settings_without_keys_has_none():
    config = resolve(REVERSE, environ={})
    assert config.signer_settings(environ={}).scp_credentials is None


def run_cli(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "signproxy.cli", "run", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def test_run_with_bad_option_exits_2_naming_option_and_value():
    done = run_cli("--upstream", "http://127.0.0.1:1", "--payload", "foo")
    assert done.returncode == 2
    assert "--payload: invalid value 'foo' (choose auto, sign, unsigned)" in done.stderr


def test_run_with_bad_environment_exits_2_naming_the_variable():
    env = {"SIGNPROXY_UPSTREAM": "not-a-url", "PATH": "/usr/bin"}
    done = run_cli(env=env)
    assert done.returncode == 2
    assert "SIGNPROXY_UPSTREAM: invalid value 'not-a-url'" in done.stderr


def test_every_option_has_a_flag_and_variable():
    done = subprocess.run(
        [sys.executable, "-m", "signproxy.cli", "run", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    for option in options.OPTIONS:
        assert option.flag in done.stdout
        assert option.env in done.stdout


def test_refresh_windows_cache_ttl_and_deprecated_reach_signer_settings():
    env = {"SIGNPROXY_MANDATORY_REFRESH": "120", "SIGNPROXY_FORCE_DEPRECATED": "yes"}
    config = resolve(
        {**REVERSE, "advisory_refresh": "600", "auth_cache_ttl": "7.5"}, environ=env
    )
    settings = config.signer_settings(environ={})
    assert (settings.advisory_refresh, settings.mandatory_refresh) == (600.0, 120.0)
    assert settings.auth_cache_ttl == 7.5
    assert settings.force_deprecated is True
    settings.check()


def test_refresh_windows_cache_ttl_and_deprecated_defaults():
    settings = resolve(REVERSE, environ={}).signer_settings(environ={})
    assert (settings.advisory_refresh, settings.mandatory_refresh) == (900.0, 300.0)
    assert settings.auth_cache_ttl == 300.0
    assert settings.force_deprecated is False


@pytest.mark.parametrize(
    ("given", "environ", "message"),
    [
        ({"advisory_refresh": "0"}, {},
         r"^--advisory-refresh: invalid value '0' \(seconds before expiry, more"),
        ({}, {"SIGNPROXY_MANDATORY_REFRESH": "-5"},
         r"^SIGNPROXY_MANDATORY_REFRESH: invalid value '-5' \(seconds before"),
        ({"mandatory_refresh": "soon"}, {},
         r"^--mandatory-refresh: invalid value 'soon' \(a number of seconds"),
        ({"advisory_refresh": "nan"}, {},
         r"^--advisory-refresh: invalid value 'nan' \(a finite number"),
        ({"advisory_refresh": "300", "mandatory_refresh": "300"}, {},
         r"^--mandatory-refresh: invalid value '300' \(must be below "
         r"--advisory-refresh \(300\)\)$"),
        ({"mandatory_refresh": "1000"}, {},
         r"^--mandatory-refresh: invalid value '1000' \(must be below "
         r"--advisory-refresh \(900\)\)$"),
        ({"auth_cache_ttl": "900"}, {},
         r"^--auth-cache-ttl: invalid value '900' \(seconds from 0 to below 900"),
        ({}, {"SIGNPROXY_AUTH_CACHE_TTL": "-1"},
         r"^SIGNPROXY_AUTH_CACHE_TTL: invalid value '-1' \(seconds from 0"),
        ({"force_deprecated": "maybe"}, {},
         r"^--force-deprecated: invalid value 'maybe' \(true or false"),
    ],
)  # fmt: skip
def test_refresh_window_cache_ttl_and_deprecated_refusals(given, environ, message):
    with pytest.raises(OptionError, match=message):
        resolve({**REVERSE, **given}, environ=environ)


def test_run_refuses_a_mandatory_window_not_below_the_advisory_one():
    done = run_cli(
        "--upstream", "http://127.0.0.1:1",
        "--advisory-refresh", "60", "--mandatory-refresh", "90",
    )  # fmt: skip
    assert done.returncode == 2
    assert "--mandatory-refresh: invalid value '90' (must be below" in done.stderr

"""Log formats, redaction of secrets and the access line."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from signproxy.logs import (
    REDACTED,
    RedactingFilter,
    access_log_fields,
    access_log_line,
    configure_logging,
    forget_secrets,
    log_access,
    parse_level,
    path_class,
    redact,
    register_secret,
    registered_secret_count,
)

SIGNATURE = "fe5f80f77d5fa3beca038a248ff027d0445342fe2855ddc963176630326f1024"
ACCESS_KEY = "AKIDEXAMPLEEXAMPLE12"
AUTHORIZATION = (
    f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/20150830/us-east-1/s3/aws4_request, "
    f"SignedHeaders=host;x-amz-date, Signature={SIGNATURE}"
)
SESSION_TOKEN = "IQoJb3JpZ2luX2VjEXAMPLETOKENvalue+/=="


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    level = root.level
    buffer = io.StringIO()
    yield buffer
    for handler in [h for h in root.handlers if h.get_name() == "signproxy"]:
        root.removeHandler(handler)
    root.setLevel(level)
    forget_secrets()


# -- formats -------------------------------------------------------------------


def test_text_format(stream: io.StringIO) -> None:
    configure_logging("info", "text", stream)
    logging.getLogger("signproxy.test").info("refreshed credentials for %s", "role-a")

    line = stream.getvalue().strip()
    assert line.endswith(" INFO signproxy.test: refreshed credentials for role-a")
    assert line[:4].isdigit()


def test_json_format_is_one_object_per_line(stream: io.StringIO) -> None:
    configure_logging("debug", "json", stream)
    log = logging.getLogger("signproxy.test")
    log.debug("first %d", 1)
    log.warning("second", extra={"peer": "127.0.0.1:5000"})

    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["level"] == "debug"
    assert first["message"] == "first 1"
    assert first["logger"] == "signproxy.test"
    assert first["time"].endswith("+00:00")
    assert second["level"] == "warning"
    assert second["peer"] == "127.0.0.1:5000"


def test_level_filters(stream: io.StringIO) -> None:
    configure_logging("WARNING", "text", stream)
    logging.getLogger("signproxy.test").info("hidden")
    logging.getLogger("signproxy.test").error("shown")

    assert "hidden" not in stream.getvalue()
    assert "shown" in stream.getvalue()


def test_configuring_twice_keeps_one_handler(stream: io.StringIO) -> None:
    configure_logging("info", "text", io.StringIO())
    configure_logging("info", "json", stream)
    logging.getLogger("signproxy.test").info("once")

    assert len(stream.getvalue().splitlines()) == 1
    names = [h.get_name() for h in logging.getLogger().handlers]
    assert names.count("signproxy") == 1


def test_bad_format_and_level_are_named() -> None:
    with pytest.raises(ValueError, match=r"--log-format: 'xml' is not one of"):
        configure_logging("info", "xml")
    with pytest.raises(ValueError, match=r"--log-level: 'loud' is not one of"):
        parse_level("loud")


# -- redaction -----------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        f"authorization: {AUTHORIZATION}",
        f"Authorization={AUTHORIZATION}",
        f"headers={{'Authorization': '{AUTHORIZATION}'}}",
        f'{{"authorization": "{AUTHORIZATION}"}}',
        f"/b/k?X-Amz-Credential={ACCESS_KEY}%2F20150830&X-Amz-Signature={SIGNATURE}",
        f"string to sign ok, Signature={SIGNATURE}, Credential={ACCESS_KEY}/x",
    ],
)
def test_authorization_values_are_redacted(text: str) -> None:
    cleaned = redact(text)
    assert SIGNATURE not in cleaned
    assert ACCESS_KEY not in cleaned
    assert REDACTED in cleaned


@pytest.mark.parametrize(
    "text",
    [
        f"x-amz-security-token: {SESSION_TOKEN}",
        f"/b/k?X-Amz-Security-Token={SESSION_TOKEN}&x=1",
        f"TemporaryCredentials(session_token='{SESSION_TOKEN}')",
        f'{{"SessionToken": "{SESSION_TOKEN}"}}',
        f"secret_access_key={SESSION_TOKEN}",
        f"SecretKey: {SESSION_TOKEN}",
        f"saml_assertion={SESSION_TOKEN}",
        f"SAMLResponse={SESSION_TOKEN}",
    ],
)
def test_tokens_and_secret_fields_are_redacted(text: str) -> None:
    cleaned = redact(text)
    assert SESSION_TOKEN not in cleaned
    assert REDACTED in cleaned


def test_secret_named_mapping_keys_lose_their_whole_value() -> None:
    record = logging.LogRecord("t", logging.INFO, "f", 1, "m", None, None)
    record.headers = {
        "Authorization": "SCP-HMAC opaque-value",
        "X-Amz-Security-Token": "opaque",
        "Host": "example",
    }
    clean = RedactingFilter().filter(record)
    assert clean.headers == {
        "Authorization": REDACTED,
        "X-Amz-Security-Token": REDACTED,
        "Host": "example",
    }


def test_ordinary_text_is_left_alone() -> None:
    text = "PUT object 200 in 12.5 ms (signer=local, SignedHeaders=host;x-amz-date)"
    assert redact(text) == text


def test_registered_secrets_are_redacted_anywhere(stream: io.StringIO) -> None:
    secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYzEXAMPLEKEY"
    register_secret(secret)
    register_secret("ab")  # too short to redact without mangling text
    configure_logging("info", "text", stream)
    logging.getLogger("signproxy.test").info("loaded key pair %s:%s", "AK", secret)

    output = stream.getvalue()
    assert secret not in output
    assert f"AK:{REDACTED}" in output
    assert redact("tab") == "tab"


def test_oldest_registered_secrets_are_forgotten() -> None:
    try:
        register_secret("first-secret-value")
        for number in range(256):
            register_secret(f"later-secret-{number:04d}")
        assert redact("first-secret-value") == "first-secret-value"
        assert redact("later-secret-0255") == REDACTED
    finally:
        forget_secrets()


def test_rotating_secrets_keep_current_and_previous_per_slot() -> None:
    try:
        register_secret("fixed-scp-secret-key")
        for number in range(1000):  # a long-running proxy's refreshes
            register_secret(f"rotated-secret-{number:04d}", slot="provider/secret")
            register_secret(f"rotated-token-{number:04d}", slot="provider/token")
        assert redact("fixed-scp-secret-key") == REDACTED
        assert redact("rotated-secret-0999 rotated-secret-0998") == (
            f"{REDACTED} {REDACTED}"
        )
        assert redact("rotated-token-0999") == REDACTED
        assert redact("rotated-secret-0997") == "rotated-secret-0997"
        assert registered_secret_count() == 5
        for number in range(200):  # slots themselves are bounded too
            register_secret(f"slot-secret-{number:04d}", slot=f"slot-{number}")
        assert registered_secret_count() == 1 + 64
        assert redact("fixed-scp-secret-key") == REDACTED
    finally:
        forget_secrets()


def test_records_are_redacted_for_our_handler_only_and_keep_tuples(
    stream: io.StringIO,
) -> None:
    """Other handlers (mitmproxy's formatter needs a `client` address tuple) get
    the record untouched; ours gets a redacted copy with tuples still tuples."""
    from mitmproxy.log import MitmFormatter

    configure_logging("info", "json", stream)
    register_secret(SESSION_TOKEN)
    seen: list[logging.LogRecord] = []
    formatted: list[str] = []

    class Other(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)
            formatted.append(MitmFormatter(colorize=False).format(record))

    other = Other()
    root = logging.getLogger()
    root.addHandler(other)
    try:
        logging.getLogger("signproxy.test").info(
            "client %s sent %s",
            ("127.0.0.1", 5555),
            f"Authorization: {AUTHORIZATION}",
            extra={"client": ("127.0.0.1", 5555), "pair": ("a", SESSION_TOKEN)},
        )
    finally:
        root.removeHandler(other)

    (record,) = seen
    assert record.args == (("127.0.0.1", 5555), f"Authorization: {AUTHORIZATION}")
    assert record.client == ("127.0.0.1", 5555)
    assert record.msg == "client %s sent %s"
    assert "127.0.0.1:5555" in formatted[0]

    entry = json.loads(stream.getvalue())
    assert (
        entry["message"] == f"client ('127.0.0.1', 5555) sent Authorization: {REDACTED}"
    )
    assert entry["client"] == ["127.0.0.1", 5555]  # JSON has no tuples
    assert SESSION_TOKEN not in stream.getvalue()
    clean = RedactingFilter().filter(record)
    assert clean.client == ("127.0.0.1", 5555)
    assert clean.pair == ("a", REDACTED)
    assert isinstance(clean.pair, tuple)


def test_redaction_reaches_args_extras_and_tracebacks(stream: io.StringIO) -> None:
    configure_logging("info", "json", stream)
    log = logging.getLogger("signproxy.test")
    try:
        raise RuntimeError(f"upstream said x-amz-security-token={SESSION_TOKEN}")
    except RuntimeError:
        log.exception(
            "signing failed for %s",
            f"authorization: {AUTHORIZATION}",
            extra={"headers": {"Authorization": AUTHORIZATION}},
        )

    output = stream.getvalue()
    assert SESSION_TOKEN not in output
    assert SIGNATURE not in output
    entry = json.loads(output)
    assert entry["message"] == f"signing failed for authorization: {REDACTED}"
    assert entry["headers"] == {"Authorization": REDACTED}
    assert "RuntimeError: upstream said" in entry["exception"]


def test_text_format_tracebacks_are_redacted(stream: io.StringIO) -> None:
    configure_logging("info", "text", stream)
    try:
        raise ValueError(f"Signature={SIGNATURE}")
    except ValueError:
        logging.getLogger("signproxy.test").exception("failed")

    output = stream.getvalue()
    assert "Traceback" in output
    assert f"ValueError: Signature={REDACTED}" in output
    assert SIGNATURE not in output


# -- access line ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "query", "virtual_host", "kind"),
    [
        ("/", "", False, "service"),
        ("/my-bucket", "", False, "bucket"),
        ("/my-bucket/", "list-type=2&prefix=a", False, "bucket"),
        ("/my-bucket/dir/key.txt", "", False, "object"),
        ("/my-bucket/key", "uploads", False, "object+multipart"),
        ("/my-bucket/key", "partNumber=2&uploadId=abc", False, "object+multipart"),
        ("/", "", True, "bucket"),
        ("/key.txt", "", True, "object"),
    ],
)
def test_path_class(path: str, query: str, virtual_host: bool, kind: str) -> None:
    assert path_class(path, query, virtual_host=virtual_host) == kind


def test_access_line_names_no_bucket_key_or_query_value() -> None:
    line = access_log_line(
        "PUT",
        "/secret-bucket/private/key.txt",
        "uploadId=u-123&partNumber=1",
        200,
        0.1234567,
        0.1,
        outcome="forwarded",
        signer="local",
    )
    assert line == (
        "method=PUT path_class=object+multipart status=200 total_ms=123.457 "
        "upstream_ms=100.0 outcome=forwarded signer=local"
    )


def test_access_fields_bound_the_method() -> None:
    fields = access_log_fields("G\nET injected", "/", "", 400, 0.001)
    assert fields["method"] == "OTHER"
    assert fields["upstream_ms"] is None


def test_log_access_in_json_carries_fields(stream: io.StringIO) -> None:
    configure_logging("info", "json", stream)
    log_access("GET", "/b/k", "", 404, 0.002, 0.001, outcome="forwarded")

    entry = json.loads(stream.getvalue())
    assert entry["logger"] == "signproxy.access"
    assert entry["message"].startswith("method=GET path_class=object status=404")
    assert entry["access"]["status"] == 404
    assert entry["access"]["path_class"] == "object"


def test_run_registers_the_scp_secret_and_client_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from signproxy.clientauth import ClientKeys
    from signproxy.commands.run import register_startup_secrets
    from signproxy.signers import SignerSettings
    from signproxy.sts import ScpCredentials

    scp = ScpCredentials("AKSCP0001", "scp-secret-from-config-file")
    clients = ClientKeys({"CLIENTKEY1": "client-secret-number-one"})
    try:
        register_startup_secrets(SignerSettings(scp_credentials=scp), clients)
        monkeypatch.setenv("SCP_SECRET_KEY", "scp-secret-from-environment")
        register_startup_secrets(SignerSettings(), None)
        text = (
            "scp-secret-from-config-file client-secret-number-one "
            "scp-secret-from-environment"
        )
        assert redact(text) == f"{REDACTED} {REDACTED} {REDACTED}"
    finally:
        forget_secrets()

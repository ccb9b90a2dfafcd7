"""The proxy's options: one table, read by `signproxy run` and by the addon.

Every option has a command-line flag (`--hash-limit`), an environment
variable (`SIGNPROXY_HASH_LIMIT`) and a mitmproxy option (`signproxy_hash_limit`,
for `mitmdump -s signproxy/addon.py --set ...`).  Values arrive as text from
any of the three and go through the same pure parsers, which raise
`OptionError` naming the option, the value and what would be accepted.

No option carries a secret: keys come from a file (`--scp-config`) or from the
`SCP_ACCESS_KEY`/`SCP_SECRET_KEY` environment variables, never from argv.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from signproxy.clientauth import ClientKeys
    from signproxy.signers import SignerSettings
    from signproxy.sts import ScpCredentials

MIN_CHUNK_SIZE = 8 * 1024  # S3 refuses aws-chunked chunks below 8 KiB
# The store refuses a signature dated more than 15 minutes from its clock
# (signers.STORE_CLOCK_SKEW; repeated here so option parsing imports nothing).
STORE_CLOCK_SKEW = 900


class OptionError(ValueError):
    """A bad option value; the message names the option and the value."""

    def __init__(self, label: str, value: str | None, reason: str) -> None:
        self.label = label
        self.value = value
        self.reason = reason
        if value is None:
            super().__init__(f"{label}: {reason}")
        else:
            super().__init__(f"{label}: invalid value {value!r} ({reason})")


# Pure parsers: text in, typed value out, ValueError with the reason on failure.

_SIZE = re.compile(r"^\s*(\d+)\s*(|b|k|kb|kib|m|mb|mib|g|gb|gib)\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_size(text: str) -> int:
    """Bytes from `65536`, `64k`, `64KiB`, `8m`, `8MiB`, `1g` (powers of 1024)."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError("a byte size such as 65536, 64KiB, 8MiB or 1GiB")
    number, unit = match.groups()
    return int(number) * _SIZE_UNITS[unit[:1].lower()]


def parse_host_port(text: str) -> tuple[str, int]:
    """`127.0.0.1:8080`, `[::1]:8080` or `:8080` (loopback) as (host, port)."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError("HOST:PORT, e.g. 127.0.0.1:8080")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError("the port must be between 0 and 65535")
    host = host.strip("[]") or "127.0.0.1"
    return host, port


def parse_upstream(text: str) -> str:
    """An http(s) URL with a host and no path, query or credentials."""
    parts = urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("an http:// or https:// URL such as http://127.0.0.1:8333")
    if parts.username or parts.password:
        raise ValueError("credentials do not belong in the upstream URL")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("the upstream URL takes no path or query")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError("the port must be a number between 0 and 65535") from exc
    netloc = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    return f"{parts.scheme}://{netloc}" + (f":{port}" if port else "")


def parse_host_list(text: str) -> tuple[str, ...]:
    """Comma-separated host names (`*.example.com` matches sub-domains)."""
    hosts = tuple(h.strip().lower().rstrip(".") for h in text.split(",") if h.strip())
    for host in hosts:
        name = host.removeprefix("*.")
        if not re.fullmatch(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:\d+)?", name):
            raise ValueError("comma-separated host names, e.g. s3.example.com")
    return hosts


def parse_positive_int(text: str) -> int:
    if not text.strip().isdigit() or int(text) <= 0:
        raise ValueError("a positive whole number")
    return int(text)


def parse_duration(text: str) -> int:
    if not text.strip().isdigit() or not 900 <= int(text) <= 43200:
        raise ValueError("seconds between 900 and 43200")
    return int(text)


def parse_chunk_size(text: str) -> int:
    size = parse_size(text)
    if size < MIN_CHUNK_SIZE:
        raise ValueError(f"at least {MIN_CHUNK_SIZE} bytes (8KiB), the S3 minimum")
    return size


def parse_existing_file(text: str) -> Path:
    path = Path(text).expanduser()
    if not path.is_file():
        raise ValueError("no such file")
    return path


def parse_text(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty")
    return text.strip()


MAX_WORKERS = 64


def parse_workers(text: str) -> int:
    if not text.strip().isdigit() or not 1 <= int(text) <= MAX_WORKERS:
        raise ValueError(f"a whole number of processes from 1 to {MAX_WORKERS}")
    return int(text)


def parse_seconds(text: str) -> int:
    if not text.strip().isdigit():
        raise ValueError("a whole number of seconds (0 or more)")
    return int(text)


def parse_access_keys(text: str) -> tuple[str, ...]:
    """Comma-separated client access keys (the flag may also be repeated)."""
    from signproxy.clientauth import check_access_key

    keys = tuple(key.strip() for key in text.split(",") if key.strip())
    for key in keys:
        try:
            check_access_key(key, "access key")
        except ValueError:
            raise ValueError(
                f"{key[:40]!r} is not an access key (3 to 128 letters, digits or '_')"
            ) from None
    return keys


def parse_window(text: str) -> float:
    """A refresh window: seconds before expiry, more than zero."""
    seconds = _parse_seconds_float(text)
    if seconds <= 0:
        raise ValueError("seconds before expiry, more than 0")
    return seconds


def parse_cache_ttl(text: str) -> float:
    """Seconds a remote authorization is reused: 0 (no reuse) up to under 900."""
    seconds = _parse_seconds_float(text)
    if not 0 <= seconds < STORE_CLOCK_SKEW:
        raise ValueError(
            f"seconds from 0 to below {STORE_CLOCK_SKEW}, the store's clock-skew window"
        )
    return seconds


def _parse_seconds_float(text: str) -> float:
    try:
        seconds = float(text.strip())
    except ValueError:
        raise ValueError("a number of seconds, e.g. 300 or 7.5") from None
    if not math.isfinite(seconds):
        raise ValueError("a finite number of seconds")
    return seconds


_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def parse_bool(text: str) -> bool:
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError("true or false (also yes/no, on/off, 1/0)")


def parse_api_version(text: str) -> str:
    if not re.fullmatch(r"\d+\.\d+", text.strip()):
        raise ValueError("a version such as 1.0 or 1.1")
    return text.strip()


@dataclass(frozen=True)
class Option:
    """One row of the table; `default` is text, parsed like any given value."""

    name: str
    default: str | None
    help: str
    parse: Callable[[str], Any] = parse_text
    choices: tuple[str, ...] = ()
    metavar: str | None = None
    repeatable: bool = False  # the flag may be given several times

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return "SIGNPROXY_" + self.name.upper()

    @property
    def mitmproxy_name(self) -> str:
        return "signproxy_" + self.name

    def convert(self, text: str, label: str) -> Any:
        if self.choices and text not in self.choices:
            raise OptionError(label, text, "choose " + ", ".join(self.choices))
        try:
            return self.parse(text)
        except ValueError as exc:
            raise OptionError(label, text, str(exc)) from None


OPTIONS: tuple[Option, ...] = (
    # Where the proxy listens and where it sends requests.
    Option("upstream", None, "the object store, e.g. https://object-store.example.com "
           "(required in reverse mode)", parse_upstream, metavar="URL"),
    Option("listen", "127.0.0.1:8080", "address to listen on", parse_host_port,
           metavar="HOST:PORT"),
    Option("mode", "reverse", "reverse: clients use the proxy as their endpoint; "
           "forward: clients use it as HTTP(S)_PROXY", choices=("reverse", "forward")),
    Option("allow_hosts", "", "forward mode: the store hosts that are signed and "
           "forwarded (comma-separated); everything else is refused with 403",
           parse_host_list, metavar="HOSTS"),
    Option("virtual_host_domains", "localhost", "reverse mode: a Host of "
           "BUCKET.<domain> is rewritten to path-style /BUCKET on the upstream "
           "(comma-separated domains)", parse_host_list, metavar="DOMAINS"),
    Option("confdir", "~/.mitmproxy", "forward mode: where mitmproxy keeps the CA "
           "that clients must trust for TLS interception", metavar="DIR"),
    # How requests are signed.
    Option("signer", "auto", "where signatures come from",
           choices=("local", "remote", "auto")),
    Option("region", "kr-west1", "signing region"),
    Option("service", "s3", "signing service name"),
    Option("payload", "auto", "payload hash policy: auto, sign (never "
           "UNSIGNED-PAYLOAD) or unsigned (always UNSIGNED-PAYLOAD)",
           choices=("auto", "sign", "unsigned")),
    Option("hash_limit", "8MiB", "largest body buffered and hashed before "
           "signing; larger bodies stream", parse_size, metavar="SIZE"),
    Option("chunk_size", "64KiB", "chunk size of signed aws-chunked uploads",
           parse_chunk_size, metavar="SIZE"),
    # SCP STS.
    Option("sts_endpoint", None, "SCP STS endpoint URL (default: from the "
           "environment, see the README)", metavar="URL"),
    Option("api_version", "1.1", "SCP STS API version", parse_api_version),
    Option("force_deprecated", "false", "call STS with an API version it has "
           "marked deprecated anyway (otherwise refused)", parse_bool,
           metavar="BOOL"),
    Option("role_indicator", None, "role for assume-role / assume-role-with-saml"),
    Option("role_session_name", "signproxy", "session name for assume-role"),
    Option("duration_seconds", "3600", "lifetime of temporary credentials",
           parse_duration, metavar="SECONDS"),
    Option("advisory_refresh", "900", "seconds before expiry when temporary "
           "credentials are refreshed in the background while still served "
           "(halved for credentials that live no longer than this)",
           parse_window, metavar="SECONDS"),
    Option("mandatory_refresh", "300", "seconds before expiry when requests "
           "wait for one shared refresh, or get 503 if it fails; below "
           "--advisory-refresh", parse_window, metavar="SECONDS"),
    Option("principal_indicator", None, "SAML provider for assume-role-with-saml"),
    Option("saml_assertion_file", None, "file holding the base64 SAML assertion "
           "(re-read at each refresh)", parse_existing_file, metavar="FILE"),
    Option("scp_config", None, "file with the SCP access key pair (otherwise "
           "SCP_ACCESS_KEY / SCP_SECRET_KEY from the environment)",
           parse_existing_file, metavar="FILE"),
    Option("auth_cache_size", "10000", "remote signer: cached authorizations",
           parse_positive_int, metavar="N"),
    Option("auth_cache_ttl", "300", "remote signer: seconds a cached "
           "authorization is reused (0 to 899; its date must stay inside the "
           "store's 15 minute clock-skew window)", parse_cache_ttl,
           metavar="SECONDS"),
    # Who may use the proxy, and how much of it.
    Option("client_key", None, "access key whose SigV4 signature clients must "
           "carry (repeatable or comma-separated); its secret comes from "
           "SIGNPROXY_CLIENT_SECRET_<ACCESS_KEY> or --client-keys-file; without "
           "client keys anyone who reaches the proxy gets requests signed",
           parse_access_keys, metavar="ACCESS_KEY", repeatable=True),
    Option("client_keys_file", None, "TOML or JSON file of client access key = "
           "secret key pairs (enables client authentication)",
           parse_existing_file, metavar="FILE"),
    Option("max_header_size", "64KiB", "largest request head (request line and "
           "headers) accepted; larger ones get 431", parse_size, metavar="SIZE"),
    Option("max_connections", "512", "most requests in flight to the store at "
           "once; more get 503 SlowDown with Retry-After", parse_positive_int,
           metavar="N"),
    Option("request_timeout", "60", "longest a request may wait to be signed "
           "(STS calls, credential refresh) before 503 with Retry-After",
           parse_positive_int, metavar="SECONDS"),
    Option("idle_timeout", "300", "close client connections idle (no bytes "
           "either way) for this long (mitmproxy tcp_timeout); bounds stalled "
           "transfers too", parse_positive_int, metavar="SECONDS"),
    Option("drain_seconds", "20", "on SIGTERM: stop accepting, let requests in "
           "flight finish for up to this long, then exit 0", parse_seconds,
           metavar="SECONDS"),
    # Operations.
    Option("workers", "1", "processes serving the listening port (SO_REUSEPORT, "
           "Linux); each is a whole proxy with its own signer and cache; "
           "metrics come from worker 0 only (signproxy run only)", parse_workers,
           metavar="N"),
    Option("metrics_listen", None, "serve /metrics, /healthz and /readyz on "
           "HOST:PORT (off by default)", parse_host_port, metavar="HOST:PORT"),
    Option("log_level", "info", "log level",
           choices=("debug", "info", "warning", "error")),
    Option("log_format", "text", "log line format", choices=("text", "json")),
)  # fmt: skip

OPTIONS_BY_NAME: dict[str, Option] = {option.name: option for option in OPTIONS}


@dataclass(frozen=True)
class ProxyConfig:
    """Every option, parsed and checked against the others."""

    upstream: str | None
    listen: tuple[str, int]
    mode: str
    allow_hosts: tuple[str, ...]
    virtual_host_domains: tuple[str, ...]
    confdir: str
    signer: str
    region: str
    service: str
    payload: str
    hash_limit: int
    chunk_size: int
    sts_endpoint: str | None
    api_version: str
    role_indicator: str | None
    role_session_name: str
    duration_seconds: int
    principal_indicator: str | None
    saml_assertion_file: Path | None
    scp_config: Path | None
    auth_cache_size: int
    metrics_listen: tuple[str, int] | None
    log_level: str
    log_format: str
    client_key: tuple[str, ...] | None = None
    client_keys_file: Path | None = None
    max_header_size: int = 64 * 1024
    max_connections: int = 512
    request_timeout: int = 60
    idle_timeout: int = 300
    drain_seconds: int = 20
    force_deprecated: bool = False
    advisory_refresh: float = 900.0
    mandatory_refresh: float = 300.0
    auth_cache_ttl: float = 300.0
    workers: int = 1

    def client_keys(self, environ: Mapping[str, str] = os.environ) -> ClientKeys | None:
        """The client keys to verify requests with; None: no client authentication.

        Raises ValueError naming the option when a key has no secret.
        """
        if not self.client_key and self.client_keys_file is None:
            return None
        from signproxy.clientauth import load_client_keys

        return load_client_keys(self.client_key or (), self.client_keys_file, environ)

    def scp_credentials(
        self, environ: Mapping[str, str] = os.environ
    ) -> ScpCredentials | None:
        """The SCP key pair from --scp-config, else from the environment, else None."""
        from signproxy.sts import ScpCredentials

        if self.scp_config is not None:
            return ScpCredentials.from_file(self.scp_config)
        if environ.get("SCP_ACCESS_KEY") or environ.get("SCP_SECRET_KEY"):
            return ScpCredentials.from_env(environ)
        return None

    def signer_settings(
        self, environ: Mapping[str, str] = os.environ
    ) -> SignerSettings:
        from signproxy.signers import SignerSettings

        return SignerSettings(
            mode=self.signer,
            region=self.region,
            service=self.service,
            sts_endpoint=self.sts_endpoint,
            api_version=self.api_version,
            force_deprecated=self.force_deprecated,
            scp_credentials=self.scp_credentials(environ),
            role_indicator=self.role_indicator,
            role_session_name=self.role_session_name,
            duration_seconds=self.duration_seconds,
            principal_indicator=self.principal_indicator,
            saml_assertion_file=self.saml_assertion_file,
            advisory_refresh=self.advisory_refresh,
            mandatory_refresh=self.mandatory_refresh,
            auth_cache_size=self.auth_cache_size,
            auth_cache_ttl=self.auth_cache_ttl,
        )


Labeller = Callable[[Option, str], str]


def flag_or_env_label(option: Option, source: str) -> str:
    """How `signproxy run` names an option in an error: the flag or the variable."""
    return option.env if source == "env" else option.flag


def resolve(
    given: Mapping[str, str | None],
    environ: Mapping[str, str] = os.environ,
    label: Labeller = flag_or_env_label,
) -> ProxyConfig:
    """Parse every option: given text first, then SIGNPROXY_<NAME>, then default.

    `given` maps option names to text; None or "" means not given.  Raises
    OptionError.
    """
    values: dict[str, Any] = {}
    for option in OPTIONS:
        text, source = given.get(option.name), "given"
        if isinstance(text, list | tuple):  # a repeated flag
            text = ",".join(text)
        if not text:
            text, source = environ.get(option.env), "env"
        if not text:
            text, source = option.default, "default"
        if text is None:
            values[option.name] = None
            continue
        values[option.name] = option.convert(text, label(option, source))
    config = ProxyConfig(**values)
    check_together(config, label)
    return config


def check_together(config: ProxyConfig, label: Labeller = flag_or_env_label) -> None:
    """The checks that involve more than one option."""
    if config.mode == "reverse" and config.upstream is None:
        raise OptionError(
            label(OPTIONS_BY_NAME["upstream"], "given"),
            None,
            "required in reverse mode (the object store's URL)",
        )
    if config.mode == "forward" and not config.allow_hosts:
        raise OptionError(
            label(OPTIONS_BY_NAME["allow_hosts"], "given"),
            None,
            "required in forward mode (the store hosts to sign for)",
        )
    if config.principal_indicator and not config.saml_assertion_file:
        raise OptionError(
            label(OPTIONS_BY_NAME["saml_assertion_file"], "given"),
            None,
            "required with --principal-indicator (assume-role-with-saml)",
        )
    if config.principal_indicator and not config.role_indicator:
        raise OptionError(
            label(OPTIONS_BY_NAME["role_indicator"], "given"),
            None,
            "required with --principal-indicator (assume-role-with-saml)",
        )
    if config.mandatory_refresh >= config.advisory_refresh:
        raise OptionError(
            label(OPTIONS_BY_NAME["mandatory_refresh"], "given"),
            f"{config.mandatory_refresh:g}",
            f"must be below --advisory-refresh ({config.advisory_refresh:g})",
        )
    if config.metrics_listen is not None and config.metrics_listen == config.listen:
        raise OptionError(
            label(OPTIONS_BY_NAME["metrics_listen"], "given"),
            "{}:{}".format(*config.metrics_listen),
            "must differ from --listen",
        )


def listen_is_loopback(config: ProxyConfig) -> bool:
    try:
        return ipaddress.ip_address(config.listen[0]).is_loopback
    except ValueError:
        return config.listen[0] == "localhost"

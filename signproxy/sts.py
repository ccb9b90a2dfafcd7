"""Samsung Cloud Platform STS: the client, and the wire model it shares.

This is the one module that knows SCP's field names and headers.  It holds:

- the SCP HMAC request signature (`scp_signature`) and header names;
- the API versions and their states (`API_VERSIONS`), with version 1.0
  refused once its Not Before date has passed;
- the field rules of the published request models (`validate_*`), used by the
  client before sending and by the emulator on what it receives;
- the response models (`AssumeRoleResult`, ...) and their wire forms;
- `StsClient`, an async httpx client with retries, and `SyncStsClient`, a thin
  synchronous face for the command line.

Error hierarchy::

    StsError                      any failure of an STS call
    +-- StsRequestInvalid         refused locally before sending (also ValueError)
    +-- StsUnavailable            connection errors, timeouts, 429 and 5xx,
                                  after the retries are spent

Nothing here ever puts a secret key, session token or SAML assertion into an
exception message, a repr or a log line; details echoed back by the service
are sanitized before they are kept.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import os
import random
import re
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Self

import httpx

logger = logging.getLogger(__name__)

# -- headers and the SCP HMAC signature -------------------------------------

HEADER_ACCESS_KEY = "Scp-Accesskey"
HEADER_TIMESTAMP = "Scp-Timestamp"
HEADER_CLIENT_TYPE = "Scp-ClientType"
HEADER_SIGNATURE = "Scp-Signature"
HEADER_ACCOUNT_ID = "Scp-AccountId"
HEADER_API_VERSION = "Scp-Api-Version"
CLIENT_TYPE = "Openapi"
SERVICE_NAME = "sts"


def scp_signature(
    secret_key: str,
    method: str,
    url: str,
    timestamp_ms: str,
    access_key: str,
    account_id: str = "",
    client_type: str = CLIENT_TYPE,
) -> str:
    """base64(HMAC-SHA256(secret, METHOD + URL + timestamp + key + account + type)).

    `url` is the full URL exactly as it goes on the wire (scheme, host, path
    and `?query` when present); `account_id` is empty unless the caller sends
    the `Scp-AccountId` header.
    """
    message = f"{method.upper()}{url}{timestamp_ms}{access_key}{account_id}"
    message += client_type
    digest = hmac.new(secret_key.encode(), message.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def timestamp_ms(now: datetime) -> str:
    """The `Scp-Timestamp` value: Unix time in milliseconds."""
    return str(int(now.timestamp() * 1000))


# -- API versions ------------------------------------------------------------

CURRENT = "CURRENT"
SUPPORTED = "SUPPORTED"
DEPRECATED = "DEPRECATED"


@dataclass(frozen=True, slots=True)
class ApiVersion:
    """One STS API version and its published state."""

    number: str  # "1.1"
    status: str  # CURRENT | SUPPORTED | DEPRECATED
    not_before: date | None = None  # a DEPRECATED version stops being served

    @property
    def header(self) -> str:
        return f"{SERVICE_NAME} {self.number}"

    def retired(self, today: date) -> bool:
        """True once a deprecated version's Not Before date has arrived."""
        return (
            self.status == DEPRECATED
            and self.not_before is not None
            and today >= self.not_before
        )


# 1.2 is documented as "no changes from 1.1"; 1.3 exists in later snapshots.
# Their states are not documented (inferred: SUPPORTED, served but not default).
API_VERSIONS: dict[str, ApiVersion] = {
    "1.0": ApiVersion("1.0", DEPRECATED, date(2026, 5, 31)),
    "1.1": ApiVersion("1.1", CURRENT),
    "1.2": ApiVersion("1.2", SUPPORTED),
    "1.3": ApiVersion("1.3", SUPPORTED),
}
DEFAULT_API_VERSION = "1.1"
_VERSION_RE = re.compile(r"^(?:sts\s+)?v?(\d+\.\d+)$", re.IGNORECASE)


def parse_api_version(value: str) -> str:
    """ "1.1", "v1.1" or "sts 1.1" -> "1.1"; ValueError naming the value."""
    match = _VERSION_RE.match(value.strip())
    if match is None:
        raise StsRequestInvalid(
            "api_version",
            f"invalid STS API version {value!r}: expected a number like "
            f"'{DEFAULT_API_VERSION}' or 'sts {DEFAULT_API_VERSION}'",
        )
    return match.group(1)


def retired_version_message(version: ApiVersion) -> str:
    return (
        f"STS API version {version.number} is deprecated and no longer "
        f"supported since its Not Before date {version.not_before}; "
        f"use version {DEFAULT_API_VERSION}"
    )


# -- errors ------------------------------------------------------------------


class StsError(Exception):
    """A failed STS call: HTTP status (None when nothing was answered), the SCP
    error code and title, the request id the service gave, and its detail
    (sanitized)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str = "StsError",
        title: str = "",
        request_id: str | None = None,
        detail: Any = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.title = title
        self.request_id = request_id
        self.detail = detail


class StsRequestInvalid(StsError, ValueError):
    """A request refused locally, before sending; `field` names the culprit."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(
            message, code="ValidationError", title="Invalid request", detail=message
        )
        self.field = field_name


class StsUnavailable(StsError):
    """The service could not answer: connection errors, timeouts, 429 or 5xx,
    after all retries."""


_TOKENISH = re.compile(r"[A-Za-z0-9+/=_\-.~%]{40,}")


def sanitize(value: Any, secrets: tuple[str, ...] = ()) -> Any:
    """A copy of `value` (str, list or dict of them) with known secrets and
    any long token-like run (keys, tokens, base64 assertions) redacted."""
    if isinstance(value, str):
        for secret in secrets:
            if secret:
                value = value.replace(secret, "<redacted>")
        return _TOKENISH.sub("<redacted>", value)
    if isinstance(value, list):
        return [sanitize(item, secrets) for item in value]
    if isinstance(value, dict):
        return {key: sanitize(item, secrets) for key, item in value.items()}
    return value


def error_envelope(
    status: int,
    code: str,
    title: str,
    detail: Any,
    request_id: str,
) -> dict[str, Any]:
    """The SCP error body: `{"errors": [{code, title, detail, status, ...}]}`."""
    return {
        "errors": [
            {
                "code": code,
                "title": title,
                "detail": detail,
                "status": status,
                "request_id": request_id,
                "global_request_id": request_id,
                "links": [],
                "related_resources": [],
                "response": None,
            }
        ]
    }


def _detail_text(detail: Any) -> str:
    if isinstance(detail, list):
        return "; ".join(str(item) for item in detail)
    return "" if detail is None else str(detail)


# -- request field rules -----------------------------------------------------

INDICATOR_PATTERN = re.compile(r"^[^:]+:[^:]+:[^:]+$")
INDICATOR_MIN_LENGTH = 32
SESSION_NAME_MAX_LENGTH = 64
# The published models give no bounds for duration_seconds; these are AWS's
# (900 s .. 12 h), an inference to be corrected when SCP documents its own.
DURATION_SECONDS_MIN = 900
DURATION_SECONDS_MAX = 43200
DEFAULT_DURATION_SECONDS = 900
DEFAULT_REGION = "kr-west1"
DEFAULT_SERVICE = "s3"


def _require_string(body: Mapping[str, Any], name: str, min_length: int = 1) -> str:
    if name not in body or body[name] is None:
        raise StsRequestInvalid(name, f"{name}: field required")
    value = body[name]
    if not isinstance(value, str):
        raise StsRequestInvalid(
            name, f"{name}: must be a string, got {type(value).__name__}"
        )
    if len(value) < min_length:
        raise StsRequestInvalid(
            name,
            f"{name}: must be at least {min_length} characters, got {len(value)}",
        )
    return value


def _optional_string(body: Mapping[str, Any], name: str) -> str | None:
    if body.get(name) is None:
        return None
    return _require_string(body, name)


def _check_indicator(body: Mapping[str, Any], name: str, parts: str) -> str:
    value = _require_string(body, name)
    if not INDICATOR_PATTERN.match(value):
        raise StsRequestInvalid(
            name,
            f"{name}: {value!r} does not match {INDICATOR_PATTERN.pattern} ({parts})",
        )
    if len(value) < INDICATOR_MIN_LENGTH:
        raise StsRequestInvalid(
            name,
            f"{name}: {value!r} is {len(value)} characters, at least "
            f"{INDICATOR_MIN_LENGTH} required",
        )
    return value


def _check_duration(body: Mapping[str, Any]) -> int | None:
    value = body.get("duration_seconds")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise StsRequestInvalid(
            "duration_seconds", f"duration_seconds: must be an integer, got {value!r}"
        )
    if not DURATION_SECONDS_MIN <= value <= DURATION_SECONDS_MAX:
        raise StsRequestInvalid(
            "duration_seconds",
            f"duration_seconds: {value} is outside "
            f"{DURATION_SECONDS_MIN}..{DURATION_SECONDS_MAX}",
        )
    return value


def validate_assume_role(body: Mapping[str, Any]) -> None:
    """Field rules of the assume-role request model."""
    _check_indicator(body, "role_indicator", "offering:account_id:role_name")
    session_name = _require_string(body, "role_session_name")
    if len(session_name) > SESSION_NAME_MAX_LENGTH:
        raise StsRequestInvalid(
            "role_session_name",
            f"role_session_name: must be at most {SESSION_NAME_MAX_LENGTH} "
            f"characters, got {len(session_name)}",
        )
    _check_duration(body)


def validate_assume_role_with_saml(body: Mapping[str, Any]) -> None:
    """Field rules of the assume-role-with-saml request model."""
    _check_indicator(body, "role_indicator", "offering:account_id:role_name")
    _check_indicator(body, "principal_indicator", "offering:account_id:provider_name")
    _require_string(body, "saml_assertion")
    _check_duration(body)


def validate_object_store_authorization(body: Mapping[str, Any]) -> None:
    """Field rules of the object-store-authorization request model."""
    for name in ("method", "url", "x_amz_date", "x_amz_content_sha256"):
        _require_string(body, name)
    _optional_string(body, "region")
    _optional_string(body, "service")


# -- response models ---------------------------------------------------------


def format_expiration(moment: datetime) -> str:
    """ISO 8601 UTC with milliseconds and Z: `2026-02-11T06:44:31.554Z`."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_expiration(value: str) -> datetime:
    """An ISO 8601 timestamp -> tz-aware UTC datetime (naive means UTC)."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class ScpCredentials:
    """The SCP access key pair that signs STS calls (HMAC).

    `from_file` reads a TOML file::

        [scp]
        access_key = "..."
        secret_key = "..."
        account_id = "..."        # optional

    (the keys may also stand at the top level, without the `[scp]` table).
    """

    access_key: str
    secret_key: str = field(repr=False)
    account_id: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> ScpCredentials:
        access_key = environ.get("SCP_ACCESS_KEY", "")
        secret_key = environ.get("SCP_SECRET_KEY", "")
        missing = [
            name
            for name, value in (
                ("SCP_ACCESS_KEY", access_key),
                ("SCP_SECRET_KEY", secret_key),
            )
            if not value
        ]
        if missing:
            raise ValueError(
                "SCP credentials not found: set "
                + " and ".join(missing)
                + " (or use a config file)"
            )
        return cls(access_key, secret_key, environ.get("SCP_ACCOUNT_ID") or None)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> ScpCredentials:
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text())
        except OSError as exc:
            raise ValueError(
                f"unable to read SCP config file {str(path)!r}: {exc.strerror}"
            ) from None
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"SCP config file {str(path)!r}: {exc}") from None
        table = data.get("scp", data)
        if not isinstance(table, dict):
            raise ValueError(f"SCP config file {str(path)!r}: [scp] must be a table")
        values: dict[str, str | None] = {}
        for name in ("access_key", "secret_key", "account_id"):
            value = table.get(name)
            if value is not None and not isinstance(value, str):
                raise ValueError(
                    f"SCP config file {str(path)!r}: {name} must be a string"
                )
            values[name] = value or None
        missing = [n for n in ("access_key", "secret_key") if not values[n]]
        if missing:
            raise ValueError(
                f"SCP config file {str(path)!r}: missing " + ", ".join(missing)
            )
        return cls(
            values["access_key"] or "",
            values["secret_key"] or "",
            values["account_id"],
        )


@dataclass(frozen=True, slots=True)
class TemporaryCredentials:
    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str = field(repr=False)
    expiration: datetime  # tz-aware UTC

    def to_wire(self) -> dict[str, str]:
        return {
            "access_key_id": self.access_key_id,
            "secret_access_key": self.secret_access_key,
            "session_token": self.session_token,
            "expiration": format_expiration(self.expiration),
        }

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> TemporaryCredentials:
        return cls(
            access_key_id=str(data["access_key_id"]),
            secret_access_key=str(data["secret_access_key"]),
            session_token=str(data["session_token"]),
            expiration=parse_expiration(str(data["expiration"])),
        )


@dataclass(frozen=True, slots=True)
class AssumedRoleUser:
    assumed_role_id: str
    srn: str

    def to_wire(self) -> dict[str, str]:
        return {"assumed_role_id": self.assumed_role_id, "srn": self.srn}

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> AssumedRoleUser:
        return cls(str(data["assumed_role_id"]), str(data["srn"]))


@dataclass(frozen=True, slots=True)
class AssumeRoleResult:
    assumed_role_user: AssumedRoleUser
    credentials: TemporaryCredentials

    def to_wire(self) -> dict[str, Any]:
        return {
            "assumed_role_user": self.assumed_role_user.to_wire(),
            "credentials": self.credentials.to_wire(),
        }

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> Self:
        return cls(
            AssumedRoleUser.from_wire(data["assumed_role_user"]),
            TemporaryCredentials.from_wire(data["credentials"]),
        )


@dataclass(frozen=True, slots=True)
class AssumeRoleWithSamlResult:
    assumed_role_user: AssumedRoleUser
    credentials: TemporaryCredentials
    audience: str
    issuer: str
    subject: str
    subject_type: str

    def to_wire(self) -> dict[str, Any]:
        return {
            "assumed_role_user": self.assumed_role_user.to_wire(),
            "credentials": self.credentials.to_wire(),
            "audience": self.audience,
            "issuer": self.issuer,
            "subject": self.subject,
            "subject_type": self.subject_type,
        }

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> Self:
        return cls(
            AssumedRoleUser.from_wire(data["assumed_role_user"]),
            TemporaryCredentials.from_wire(data["credentials"]),
            audience=str(data["audience"]),
            issuer=str(data["issuer"]),
            subject=str(data["subject"]),
            subject_type=str(data["subject_type"]),
        )


# -- endpoint ----------------------------------------------------------------

_ENV_RE = re.compile(r"^[a-z0-9][a-z0-9.-]*$")


def resolve_endpoint(
    endpoint: str | None = None, environ: Mapping[str, str] = os.environ
) -> str:
    """The STS base URL: the flag, else SCP_STS_ENDPOINT, else
    https://sts.{SCP_ENV}.samsungsdscloud.com."""
    chosen = endpoint or environ.get("SCP_STS_ENDPOINT")
    if chosen:
        url = httpx.URL(chosen)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(
                f"invalid STS endpoint {chosen!r}: expected http(s)://host[:port]"
            )
        return chosen.rstrip("/")
    env = environ.get("SCP_ENV")
    if env:
        if not _ENV_RE.match(env):
            raise ValueError(f"invalid SCP_ENV {env!r}: expected e.g. 's', 'g' or 'e'")
        return f"https://sts.{env}.samsungsdscloud.com"
    raise ValueError(
        "no STS endpoint: pass --endpoint, or set SCP_STS_ENDPOINT, "
        "or SCP_ENV (s, g or e)"
    )


# -- the client --------------------------------------------------------------

OPERATION_PATHS = {
    "assume_role": "/v1/assume-role",
    "assume_role_with_saml": "/v1/assume-role-with-saml",
    "object_store_authorization": "/v1/object-store-authorization",
}
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
USER_AGENT = "signproxy-sts"
_BACKOFF_CAP = 5.0


def _utcnow() -> datetime:
    return datetime.now(UTC)


class StsClient:
    """The three SCP STS operations over one keep-alive httpx transport.

    Requests go straight to the transport (`signproxy.sts_transport` unless
    one is given, e.g. `httpx.MockTransport` in tests): STS needs none of
    `httpx.AsyncClient`'s cookies, redirects, auth flows or URL merging,
    which cost as much CPU per call as the transport itself.
    """

    def __init__(
        self,
        endpoint: str,
        credentials: ScpCredentials,
        *,
        api_version: str = DEFAULT_API_VERSION,
        force_deprecated: bool = False,
        timeout: float = 10.0,
        max_retries: int = 3,
        backoff_base: float = 0.1,
        clock: Callable[[], datetime] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.credentials = credentials
        self.api_version = parse_api_version(api_version)
        self.force_deprecated = force_deprecated
        self.max_retries = max(0, max_retries)
        self.backoff_base = backoff_base
        self._clock = clock or _utcnow
        if transport is None:
            # httpx's own transport cost ~1.8 ms of CPU per call; see there.
            from signproxy.sts_transport import StsTransport

            transport = StsTransport(max_connections=100, max_idle=20)
        self._transport = transport
        self._timeouts = httpx.Timeout(timeout).as_dict()
        self._urls: dict[str, httpx.URL] = {}

    def __repr__(self) -> str:
        return (
            f"StsClient({self.endpoint!r}, access_key="
            f"{self.credentials.access_key!r}, api_version={self.api_version!r})"
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._transport.aclose()

    # -- operations --

    async def assume_role(
        self,
        role_indicator: str,
        role_session_name: str,
        duration_seconds: int | None = None,
    ) -> AssumeRoleResult:
        body: dict[str, Any] = {
            "role_indicator": role_indicator,
            "role_session_name": role_session_name,
        }
        if duration_seconds is not None:
            body["duration_seconds"] = duration_seconds
        validate_assume_role(body)
        data = await self._call("assume_role", body)
        return self._parse("assume_role", AssumeRoleResult.from_wire, data)

    async def assume_role_with_saml(
        self,
        role_indicator: str,
        principal_indicator: str,
        saml_assertion: str,
        duration_seconds: int | None = None,
    ) -> AssumeRoleWithSamlResult:
        body: dict[str, Any] = {
            "role_indicator": role_indicator,
            "principal_indicator": principal_indicator,
            "saml_assertion": saml_assertion,
        }
        if duration_seconds is not None:
            body["duration_seconds"] = duration_seconds
        validate_assume_role_with_saml(body)
        data = await self._call(
            "assume_role_with_saml", body, secrets=(saml_assertion,)
        )
        return self._parse(
            "assume_role_with_saml", AssumeRoleWithSamlResult.from_wire, data
        )

    async def object_store_authorization(
        self,
        method: str,
        url: str,
        x_amz_date: str,
        x_amz_content_sha256: str,
        region: str | None = None,
        service: str | None = None,
    ) -> str:
        body: dict[str, Any] = {
            "method": method,
            "url": url,
            "x_amz_date": x_amz_date,
            "x_amz_content_sha256": x_amz_content_sha256,
        }
        if region is not None:
            body["region"] = region
        if service is not None:
            body["service"] = service
        validate_object_store_authorization(body)
        data = await self._call("object_store_authorization", body)
        authorization = data.get("Authorization")
        if not isinstance(authorization, str) or not authorization:
            raise StsError(
                "object_store_authorization: the response has no Authorization",
                status=200,
                code="InvalidResponse",
            )
        return authorization

    # -- the call, its headers, its retries --

    def _check_version(self) -> None:
        version = API_VERSIONS.get(self.api_version)
        if version is None or version.status != DEPRECATED:
            return
        if version.retired(self._clock().date()):
            if not self.force_deprecated:
                raise StsRequestInvalid(
                    "api_version",
                    retired_version_message(version)
                    + " (force_deprecated sends it anyway)",
                )
            logger.warning(
                "sending retired STS API version %s (forced)", version.number
            )
        else:
            logger.warning(
                "STS API version %s is deprecated; it stops being served on %s",
                version.number,
                version.not_before,
            )

    def _headers(self, url: str) -> dict[str, str]:
        creds = self.credentials
        stamp = timestamp_ms(self._clock())
        headers = {
            HEADER_ACCESS_KEY: creds.access_key,
            HEADER_TIMESTAMP: stamp,
            HEADER_CLIENT_TYPE: CLIENT_TYPE,
            HEADER_SIGNATURE: scp_signature(
                creds.secret_key,
                "POST",
                url,
                stamp,
                creds.access_key,
                creds.account_id or "",
            ),
            HEADER_API_VERSION: f"{SERVICE_NAME} {self.api_version}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }
        if creds.account_id:
            headers[HEADER_ACCOUNT_ID] = creds.account_id
        return headers

    async def _call(
        self, operation: str, body: dict[str, Any], secrets: tuple[str, ...] = ()
    ) -> dict[str, Any]:
        self._check_version()
        secrets = (self.credentials.secret_key, *secrets)
        url = self._urls.get(operation)
        if url is None:
            url = self._urls[operation] = httpx.URL(
                self.endpoint + OPERATION_PATHS[operation]
            )
        content = json.dumps(
            body, ensure_ascii=False, separators=(",", ":"), allow_nan=False
        ).encode()
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self._post(url, content)
            except httpx.TransportError as exc:
                failure = StsUnavailable(
                    f"{operation}: {self.endpoint} unreachable: {type(exc).__name__}",
                    code="ServiceUnavailable",
                    title=type(exc).__name__,
                )
            else:
                if response.status_code < 400:
                    self._log(operation, response.status_code, started, attempt)
                    return self._json(operation, response)
                failure = self._error(operation, response, secrets)
                if response.status_code not in _RETRY_STATUSES:
                    self._log(operation, response.status_code, started, attempt)
                    raise failure
            if attempt > self.max_retries:
                self._log(operation, failure.status, started, attempt)
                raise failure
            delay = self._backoff(attempt)
            logger.debug(
                "sts %s attempt %d failed (%s); retrying in %.3fs",
                operation,
                attempt,
                failure.code,
                delay,
            )
            await asyncio.sleep(delay)

    async def _post(self, url: httpx.URL, content: bytes) -> httpx.Response:
        request = httpx.Request(
            "POST",
            url,
            content=content,
            headers=self._headers(str(url)),
            extensions={"timeout": self._timeouts},
        )
        response = await self._transport.handle_async_request(request)
        try:
            await response.aread()
        finally:
            await response.aclose()
        return response

    def _backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, base * 2**(attempt-1)], capped."""
        ceiling = min(_BACKOFF_CAP, self.backoff_base * 2 ** (attempt - 1))
        return random.uniform(0, ceiling)

    def _log(
        self, operation: str, status: int | None, started: float, attempts: int
    ) -> None:
        logger.info(
            "sts %s status=%s duration=%.3fs attempts=%d",
            operation,
            status if status is not None else "none",
            time.monotonic() - started,
            attempts,
        )

    def _json(self, operation: str, response: httpx.Response) -> dict[str, Any]:
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise StsError(
                f"{operation}: the response is not a JSON object",
                status=response.status_code,
                code="InvalidResponse",
            )
        return data

    def _parse(
        self, operation: str, build: Callable[[Any], Any], data: dict[str, Any]
    ) -> Any:
        try:
            return build(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise StsError(
                f"{operation}: malformed response, missing or bad {sanitize(str(exc))}",
                status=200,
                code="InvalidResponse",
            ) from None

    def _error(
        self, operation: str, response: httpx.Response, secrets: tuple[str, ...]
    ) -> StsError:
        status = response.status_code
        entry: dict[str, Any] = {}
        try:
            data = response.json()
            errors = data.get("errors") if isinstance(data, dict) else None
            if isinstance(errors, list) and errors and isinstance(errors[0], dict):
                entry = errors[0]
        except ValueError:
            pass
        code = str(sanitize(entry.get("code") or response.reason_phrase, secrets))
        title = str(sanitize(entry.get("title") or response.reason_phrase, secrets))
        detail = sanitize(entry.get("detail"), secrets)
        request_id = entry.get("request_id") or response.headers.get("x-request-id")
        request_id = str(sanitize(request_id, secrets)) if request_id else None
        message = f"{operation}: {status} {code}"
        text = _detail_text(detail) or title
        if text:
            message += f": {text}"
        if request_id:
            message += f" (request id {request_id})"
        kind = StsUnavailable if status in _RETRY_STATUSES else StsError
        return kind(
            message,
            status=status,
            code=code,
            title=title,
            request_id=request_id,
            detail=detail,
        )


class SyncStsClient:
    """A synchronous face of `StsClient` for the command line: it runs the
    async client on a private event loop (not usable inside a running loop)."""

    def __init__(self, endpoint: str, credentials: ScpCredentials, **kwargs: Any):
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError(
                "SyncStsClient cannot run inside a running event loop; use StsClient"
            )
        self._runner = asyncio.Runner()
        self._client = self._runner.run(self._make(endpoint, credentials, kwargs))

    @staticmethod
    async def _make(
        endpoint: str, credentials: ScpCredentials, kwargs: dict[str, Any]
    ) -> StsClient:
        return StsClient(endpoint, credentials, **kwargs)

    def assume_role(self, *args: Any, **kwargs: Any) -> AssumeRoleResult:
        return self._runner.run(self._client.assume_role(*args, **kwargs))

    def assume_role_with_saml(
        self, *args: Any, **kwargs: Any
    ) -> AssumeRoleWithSamlResult:
        return self._runner.run(self._client.assume_role_with_saml(*args, **kwargs))

    def object_store_authorization(self, *args: Any, **kwargs: Any) -> str:
        return self._runner.run(
            self._client.object_store_authorization(*args, **kwargs)
        )

    def close(self) -> None:
        try:
            self._runner.run(self._client.aclose())
        finally:
            self._runner.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

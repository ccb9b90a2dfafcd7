"""An SCP STS emulator: a real HTTP server that answers like the service.

It serves the three operations of `signproxy.sts` over HTTP/1.1 (asyncio and
h11, kept lean: the remote-signing benchmark drives thousands of
object-store-authorization calls a second through it), with:

- SCP HMAC authentication: `Scp-Accesskey` must name a known account, the
  `Scp-Signature` must match, `Scp-Timestamp` must be within 5 minutes of the
  emulator's clock; otherwise 401 with the SCP error envelope;
- versions from the `Scp-Api-Version` header: 1.1 to 1.3 served, no header
  means 1.1 (the latest CURRENT), 1.0 refused after its Not Before date
  (400 `DeprecatedApiVersion`), any other value refused (400
  `InvalidApiVersion`);
- the published field rules (400 `ValidationError`, detail naming the field);
- `GET /` listing the versions;
- credentials that the configured object store really accepts: the emulator
  calls the store's own STS `AssumeRole` (SeaweedFS serves it on its S3 port)
  with the calling account's key, which is also an identity of the store;
- fault knobs (latency, a rate of 5xx answers, a rate of dropped connections,
  or the next N of each) set on the command line, through the Python API, or
  at run time with `POST /_emulator/faults`; call counts at
  `GET /_emulator/stats`; `POST /_emulator/reset` zeroes both.  The
  `/_emulator/` endpoints answer only to loopback peers.

Accounts come from a TOML file, one table per access key::

    [accounts.AKIAIOSFODNN7EXAMPLE]
    secret_key = "..."
    account_id = "afd580f490394896a6bceabf77683c6bd"
    roles = ["role_name"]          # assumable as OFFERING:ACCOUNT_ID:ROLE
    saml_providers = ["idp_name"]  # usable as OFFERING:ACCOUNT_ID:IDP_NAME

Logs: one line per call (operation, status, access key id, request id);
never a secret key, session token, assertion or Authorization value.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import json
import logging
import random
import re
import threading
import time
import tomllib
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from xml.etree import ElementTree as ET

import h11
import httpx

from signproxy import saml, sigv4, sts

logger = logging.getLogger(__name__)

TIMESTAMP_SKEW = timedelta(minutes=5)
AMZ_DATE_SKEW = timedelta(minutes=15)
MAX_BODY_BYTES = 1024 * 1024
DEFAULT_STORE_REGION = "us-east-1"
_STS_XML_NS = "{https://sts.amazonaws.com/doc/2011-06-15/}"
_SESSION_NAME_UNSAFE = re.compile(r"[^\w+=,.@-]")
_METHOD = re.compile(r"^[A-Za-z]+$")
_DROP = object()

OPERATIONS = {path: name for name, path in sts.OPERATION_PATHS.items()}
VALIDATORS: dict[str, Callable[[Mapping[str, Any]], None]] = {
    "assume_role": sts.validate_assume_role,
    "assume_role_with_saml": sts.validate_assume_role_with_saml,
    "object_store_authorization": sts.validate_object_store_authorization,
}


# -- accounts ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Account:
    """One SCP account the emulator knows, keyed by its access key."""

    access_key: str
    secret_key: str = field(repr=False)
    account_id: str
    roles: tuple[str, ...] = ()
    saml_providers: tuple[str, ...] = ()


def _string_list(table: Mapping[str, Any], name: str, where: str) -> tuple[str, ...]:
    value = table.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{where}: {name} must be a list of strings")
    return tuple(value)


def parse_accounts(data: Mapping[str, Any], source: str = "accounts") -> list[Account]:
    """Accounts from the parsed TOML document; ValueError naming the culprit."""
    tables = data.get("accounts")
    if not isinstance(tables, dict) or not tables:
        raise ValueError(f"{source}: no [accounts.ACCESS_KEY] tables")
    accounts = []
    for access_key, table in tables.items():
        where = f"{source}: [accounts.{access_key}]"
        if not isinstance(table, dict):
            raise ValueError(f"{where} must be a table")
        for name in ("secret_key", "account_id"):
            if not isinstance(table.get(name), str) or not table[name]:
                raise ValueError(f"{where}: {name} is required (a string)")
        accounts.append(
            Account(
                access_key=access_key,
                secret_key=table["secret_key"],
                account_id=table["account_id"],
                roles=_string_list(table, "roles", where),
                saml_providers=_string_list(table, "saml_providers", where),
            )
        )
    return accounts


def load_accounts(path: str | Path) -> list[Account]:
    """Read an accounts TOML file (see the module docstring)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ValueError(f"unable to read accounts file {str(path)!r}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"accounts file {str(path)!r}: {exc}") from None
    return parse_accounts(data, str(path))


def accounts_toml(accounts: Iterable[Account]) -> str:
    """The TOML text of `accounts`, for tests and the demo."""
    lines = []
    for account in accounts:
        lines += [
            f"[accounts.{json.dumps(account.access_key)}]",
            f"secret_key = {json.dumps(account.secret_key)}",
            f"account_id = {json.dumps(account.account_id)}",
            f"roles = {json.dumps(list(account.roles))}",
            f"saml_providers = {json.dumps(list(account.saml_providers))}",
            "",
        ]
    return "\n".join(lines)


# -- faults and counts -------------------------------------------------------


@dataclass
class Faults:
    """Injected trouble for API calls (never for `GET /` or `/_emulator/`)."""

    latency: float = 0.0  # seconds added before answering
    error_rate: float = 0.0  # share of calls answered `error_status`
    drop_rate: float = 0.0  # share of connections closed without an answer
    error_status: int = 503
    error_next: int = 0  # the next N calls answer `error_status`
    drop_next: int = 0  # the next N calls are dropped

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        if not isinstance(self.latency, int | float) or self.latency < 0:
            raise ValueError(f"latency must be >= 0 seconds, got {self.latency!r}")
        for name in ("error_rate", "drop_rate"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0 <= value <= 1:
                raise ValueError(f"{name} must be within 0..1, got {value!r}")
        if not isinstance(self.error_status, int) or self.error_status < 400:
            raise ValueError(f"error_status must be >= 400, got {self.error_status!r}")
        for name in ("error_next", "drop_next"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")


@dataclass
class Stats:
    calls: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)  # "op status"
    injected_errors: int = 0
    dropped: int = 0

    def snapshot(self) -> dict[str, Any]:
        responses: dict[str, dict[str, int]] = {}
        for key, count in self.statuses.items():
            operation, status = key.split(" ")
            responses.setdefault(operation, {})[status] = count
        return {
            "calls": dict(self.calls),
            "responses": responses,
            "injected_errors": self.injected_errors,
            "dropped": self.dropped,
        }


# -- answers -------------------------------------------------------------------


class Refusal(Exception):
    """An error answer: HTTP status, SCP code and title, detail."""

    def __init__(self, status: int, code: str, title: str, detail: Any) -> None:
        super().__init__(f"{status} {code}")
        self.status = status
        self.code = code
        self.title = title
        self.detail = detail


def _invalid(detail: str) -> Refusal:
    return Refusal(400, "ValidationError", "Validation Error", [detail])


def _forbidden(detail: str) -> Refusal:
    return Refusal(403, "Forbidden", "Forbidden", detail)


def _unauthorized(detail: str) -> Refusal:
    return Refusal(401, "Unauthorized", "Unauthorized", detail)


@dataclass(slots=True)
class Call:
    """One HTTP request as the emulator sees it."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    peer: str


def _is_loopback(peer: str) -> bool:
    try:
        return ipaddress.ip_address(peer).is_loopback
    except ValueError:
        return False


def _utcnow() -> datetime:
    return datetime.now(UTC)


# -- the server ----------------------------------------------------------------


class EmulatorServer:
    """The emulator; `start`/`stop` on a running loop, or `run_in_thread()`."""

    def __init__(
        self,
        accounts: Iterable[Account],
        store_endpoint: str | None = None,
        *,
        store_region: str = DEFAULT_STORE_REGION,
        faults: Faults | None = None,
        clock: Callable[[], datetime] | None = None,
        seed: int | None = None,
    ) -> None:
        self.accounts = {account.access_key: account for account in accounts}
        self.store_endpoint = store_endpoint.rstrip("/") if store_endpoint else None
        self.store_region = store_region
        self.faults = faults or Faults()
        self.clock = clock or _utcnow
        self._stats = Stats()
        self._random = random.Random(seed)
        self._signers: dict[tuple[str, str], sigv4.Signer] = {}
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._store_http: httpx.AsyncClient | None = None
        self.host = "127.0.0.1"
        self.port = 0

    def __repr__(self) -> str:
        return f"EmulatorServer({self.endpoint!r}, accounts={len(self.accounts)})"

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- life cycle --

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> EmulatorServer:
        self._store_http = httpx.AsyncClient(timeout=10.0)
        self._server = await asyncio.start_server(self._serve, host, port)
        sockname = self._server.sockets[0].getsockname()
        self.host, self.port = host, sockname[1]
        logger.info("emulator listening on %s", self.endpoint)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()
            self._server = None
        if self._store_http is not None:
            await self._store_http.aclose()
            self._store_http = None

    @contextlib.contextmanager
    def run_in_thread(
        self, host: str = "127.0.0.1", port: int = 0, ready_timeout: float = 10.0
    ) -> Iterator[EmulatorServer]:
        """Serve from a background thread with its own event loop."""
        loop = asyncio.new_event_loop()
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start(host, port))
            except BaseException as exc:  # reported to the caller below
                failure.append(exc)
                started.set()
                return
            started.set()
            loop.run_forever()
            loop.run_until_complete(self.stop())
            loop.close()

        thread = threading.Thread(target=run, name="sts-emulator", daemon=True)
        thread.start()
        if not started.wait(ready_timeout) or failure:
            raise RuntimeError(f"the STS emulator did not start: {failure!r}")
        try:
            yield self
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)

    # -- knobs --

    def set_faults(self, **changes: Any) -> Faults:
        """Change some fault knobs (names as in `Faults`); ValueError if bad."""
        unknown = set(changes) - set(Faults.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown fault knob(s): {', '.join(sorted(unknown))}")
        updated = Faults(**{**asdict(self.faults), **changes})
        self.faults = updated
        return updated

    def reset(self) -> None:
        """No faults, zero counts."""
        self.faults = Faults()
        self._stats = Stats()

    def stats(self) -> dict[str, Any]:
        return self._stats.snapshot()

    def calls(self, operation: str) -> int:
        return self._stats.calls[operation]

    # -- HTTP/1.1 --

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._writers.add(writer)
        peer = (writer.get_extra_info("peername") or ("",))[0]
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                call = await self._read_call(conn, reader, peer)
                if call is None:
                    break
                answer = await self._answer(call)
                if answer is _DROP:
                    break
                status, headers, payload = answer
                writer.write(
                    conn.send(h11.Response(status_code=status, headers=headers))
                    + conn.send(h11.Data(data=payload))
                    + conn.send(h11.EndOfMessage())
                )
                await writer.drain()
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    break
                conn.start_next_cycle()
        except h11.RemoteProtocolError as exc:
            with contextlib.suppress(h11.LocalProtocolError, ConnectionError):
                status = exc.error_status_hint
                writer.write(
                    conn.send(
                        h11.Response(
                            status_code=status,
                            headers=[("content-length", "0"), ("connection", "close")],
                        )
                    )
                    + conn.send(h11.EndOfMessage())
                )
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _read_call(
        self, conn: h11.Connection, reader: asyncio.StreamReader, peer: str
    ) -> Call | None:
        request: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(65536)
                conn.receive_data(data)
                continue
            if isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY_BYTES:
                    raise h11.RemoteProtocolError(
                        "request body too large", error_status_hint=413
                    )
            elif isinstance(event, h11.EndOfMessage):
                assert request is not None
                return Call(
                    method=request.method.decode("ascii"),
                    target=request.target.decode("ascii", "replace"),
                    headers={
                        name.decode("ascii"): value.decode("latin-1")
                        for name, value in request.headers
                    },
                    body=bytes(body),
                    peer=peer,
                )
            elif event is h11.PAUSED or isinstance(event, h11.ConnectionClosed):
                return None

    def _json(
        self, status: int, payload: Any, request_id: str
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        data = json.dumps(payload, separators=(",", ":")).encode()
        headers = [
            ("content-type", "application/json"),
            ("content-length", str(len(data))),
            ("x-request-id", request_id),
        ]
        return status, headers, data

    def _refusal(
        self, refusal: Refusal, request_id: str
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        envelope = sts.error_envelope(
            refusal.status, refusal.code, refusal.title, refusal.detail, request_id
        )
        return self._json(refusal.status, envelope, request_id)

    # -- routing --

    async def _answer(self, call: Call) -> Any:
        request_id = uuid.uuid4().hex
        path = call.target.partition("?")[0]
        operation = OPERATIONS.get(path)
        if operation is not None:
            return await self._operation(operation, call, request_id)
        try:
            if path.startswith("/_emulator/"):
                return self._admin(call, path, request_id)
            if path == "/" and call.method == "GET":
                return self._json(200, self._versions(), request_id)
            raise Refusal(404, "NotFound", "Not Found", f"no such resource {path!r}")
        except Refusal as refusal:
            return self._refusal(refusal, request_id)

    def _versions(self) -> dict[str, Any]:
        base = self.endpoint
        return {
            "versions": [
                {
                    "id": f"v{version.number}",
                    "links": [{"href": f"{base}/", "rel": "self"}],
                    "not_before": (
                        version.not_before.isoformat() if version.not_before else None
                    ),
                    "status": version.status,
                }
                for version in sts.API_VERSIONS.values()
            ]
        }

    def _admin(
        self, call: Call, path: str, request_id: str
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        if not _is_loopback(call.peer):
            raise _forbidden("the /_emulator/ endpoints answer only loopback peers")
        if path == "/_emulator/stats" and call.method == "GET":
            return self._json(200, self.stats(), request_id)
        if path == "/_emulator/reset" and call.method == "POST":
            self.reset()
            return self._json(200, {"faults": asdict(self.faults)}, request_id)
        if path == "/_emulator/faults" and call.method in ("GET", "POST"):
            if call.method == "POST":
                try:
                    changes = json.loads(call.body or b"{}")
                    if not isinstance(changes, dict):
                        raise ValueError("the body must be a JSON object")
                    self.set_faults(**changes)
                except (ValueError, TypeError) as exc:
                    raise _invalid(f"faults: {exc}") from None
            return self._json(200, {"faults": asdict(self.faults)}, request_id)
        raise Refusal(404, "NotFound", "Not Found", f"no such resource {path!r}")

    async def _operation(self, operation: str, call: Call, request_id: str) -> Any:
        started = time.monotonic()
        self._stats.calls[operation] += 1
        faults = self.faults
        if faults.latency:
            await asyncio.sleep(faults.latency)
        if faults.drop_next or (
            faults.drop_rate and self._random.random() < faults.drop_rate
        ):
            faults.drop_next = max(0, faults.drop_next - 1)
            self._stats.dropped += 1
            logger.info("emulator %s dropped (injected)", operation)
            return _DROP
        account_key = call.headers.get("scp-accesskey", "-")
        try:
            if faults.error_next or (
                faults.error_rate and self._random.random() < faults.error_rate
            ):
                faults.error_next = max(0, faults.error_next - 1)
                self._stats.injected_errors += 1
                raise Refusal(
                    faults.error_status,
                    "ServiceUnavailable",
                    "Service Unavailable",
                    "injected fault",
                )
            if call.method != "POST":
                raise Refusal(405, "MethodNotAllowed", "Method Not Allowed", "use POST")
            account = self._authenticate(call)
            self._check_version(call.headers.get("scp-api-version"))
            body = self._body(call)
            VALIDATORS[operation](body)
            handler = getattr(self, f"_{operation}")
            answer = self._json(200, await handler(account, body), request_id)
        except sts.StsRequestInvalid as exc:
            answer = self._refusal(_invalid(str(exc)), request_id)
        except Refusal as refusal:
            answer = self._refusal(refusal, request_id)
        status = answer[0]
        self._stats.statuses[f"{operation} {status}"] += 1
        logger.info(
            "emulator %s status=%d access_key=%s request_id=%s duration=%.4fs",
            operation,
            status,
            account_key[:40],
            request_id,
            time.monotonic() - started,
        )
        return answer

    # -- the checks every call goes through --

    def _authenticate(self, call: Call) -> Account:
        headers = call.headers
        names = (
            sts.HEADER_ACCESS_KEY,
            sts.HEADER_TIMESTAMP,
            sts.HEADER_SIGNATURE,
            sts.HEADER_CLIENT_TYPE,
        )
        values = [headers.get(name.lower(), "") for name in names]
        missing = [name for name, value in zip(names, values, strict=True) if not value]
        if missing:
            raise _unauthorized("missing header(s): " + ", ".join(missing))
        access_key, stamp, signature, client_type = values
        account = self.accounts.get(access_key)
        if account is None:
            raise _unauthorized(f"unknown access key {access_key[:40]!r}")
        if not stamp.isdigit():
            raise _unauthorized(f"{sts.HEADER_TIMESTAMP} is not milliseconds")
        try:
            sent = datetime.fromtimestamp(int(stamp) / 1000, UTC)
        except (OverflowError, OSError, ValueError):
            sent = datetime.min.replace(tzinfo=UTC)
        if abs(self.clock() - sent) > TIMESTAMP_SKEW:
            raise _unauthorized(
                f"{sts.HEADER_TIMESTAMP} is more than "
                f"{int(TIMESTAMP_SKEW.total_seconds() // 60)} minutes from the "
                "service's time"
            )
        account_id = headers.get("scp-accountid", "")
        if account_id and account_id != account.account_id:
            raise _unauthorized(f"{sts.HEADER_ACCOUNT_ID} does not match the key")
        url = f"http://{headers.get('host', '')}{call.target}"
        expected = sts.scp_signature(
            account.secret_key,
            call.method,
            url,
            stamp,
            access_key,
            account_id,
            client_type,
        )
        if not hmac.compare_digest(expected, signature):
            raise _unauthorized("signature mismatch")
        return account

    def _check_version(self, header: str | None) -> None:
        if header is None:
            return  # the latest CURRENT version
        try:
            number = sts.parse_api_version(header)
        except sts.StsRequestInvalid:
            number = None
        version = sts.API_VERSIONS.get(number or "")
        if version is None:
            served = ", ".join(
                f"sts {v.number}"
                for v in sts.API_VERSIONS.values()
                if not v.retired(self.clock().date())
            )
            raise Refusal(
                400,
                "InvalidApiVersion",
                "Invalid API Version",
                f"{sts.HEADER_API_VERSION} {header[:40]!r} is not a version "
                f"of this service; served: {served}",
            )
        if version.retired(self.clock().date()):
            raise Refusal(
                400,
                "DeprecatedApiVersion",
                "Deprecated API Version",
                sts.retired_version_message(version),
            )

    def _body(self, call: Call) -> dict[str, Any]:
        try:
            body = json.loads(call.body)
        except ValueError:
            raise _invalid("body: not valid JSON") from None
        if not isinstance(body, dict):
            raise _invalid("body: must be a JSON object")
        return body

    def _authorize_role(self, account: Account, role_indicator: str) -> tuple[str, str]:
        offering, account_id, role = role_indicator.split(":")
        if account_id != account.account_id or role not in account.roles:
            raise _forbidden(
                f"role_indicator {role_indicator!r} is not assumable by this account"
            )
        return offering, role

    # -- operations --

    async def _assume_role(
        self, account: Account, body: dict[str, Any]
    ) -> dict[str, Any]:
        offering, role = self._authorize_role(account, body["role_indicator"])
        session_name = body["role_session_name"]
        duration = body.get("duration_seconds") or sts.DEFAULT_DURATION_SECONDS
        credentials = await self._store_credentials(account, session_name, duration)
        user = self._assumed_role_user(account, offering, role, session_name)
        return sts.AssumeRoleResult(user, credentials).to_wire()

    async def _assume_role_with_saml(
        self, account: Account, body: dict[str, Any]
    ) -> dict[str, Any]:
        offering, role = self._authorize_role(account, body["role_indicator"])
        principal = body["principal_indicator"]
        _, principal_account, provider = principal.split(":")
        if (
            principal_account != account.account_id
            or provider not in account.saml_providers
        ):
            raise _forbidden(
                f"principal_indicator {principal!r} is not a SAML provider of "
                "this account"
            )
        try:
            assertion = saml.parse_saml_response(body["saml_assertion"])
        except saml.SamlError as exc:
            raise _invalid(f"saml_assertion: {exc}") from None
        self._check_assertion(assertion, body["role_indicator"], principal)

        session_name = assertion.session_name or assertion.subject
        duration = body.get("duration_seconds") or sts.DEFAULT_DURATION_SECONDS
        credentials = await self._store_credentials(account, session_name, duration)
        user = self._assumed_role_user(account, offering, role, session_name)
        return sts.AssumeRoleWithSamlResult(
            user,
            credentials,
            audience=assertion.audience,
            issuer=assertion.issuer,
            subject=assertion.subject,
            subject_type=assertion.subject_type,
        ).to_wire()

    def _check_assertion(
        self, assertion: saml.SamlAssertion, role: str, principal: str
    ) -> None:
        now = self.clock()
        if assertion.status != saml.STATUS_SUCCESS:
            raise _forbidden("saml_assertion: the SAML response is not a success")
        if now >= assertion.not_on_or_after:
            raise _forbidden(
                "saml_assertion: expired (NotOnOrAfter "
                f"{assertion.not_on_or_after.isoformat()})"
            )
        if assertion.not_before is not None and now + TIMESTAMP_SKEW < (
            assertion.not_before
        ):
            raise _forbidden("saml_assertion: not yet valid (NotBefore)")
        if not assertion.names(role, principal):
            raise _forbidden(
                "saml_assertion: its Role attribute does not grant "
                f"{role!r} through {principal!r}"
            )

    async def _object_store_authorization(
        self, account: Account, body: dict[str, Any]
    ) -> dict[str, Any]:
        method = body["method"].upper()
        if not _METHOD.match(method):
            raise _invalid(f"method: {body['method'][:40]!r} is not an HTTP method")
        try:
            signed_at = sigv4.parse_amz_date(body["x_amz_date"])
        except sigv4.SigningError as exc:
            raise _invalid(f"x_amz_date: {exc}") from None
        if abs(self.clock() - signed_at) > AMZ_DATE_SKEW:
            raise _forbidden(
                f"x_amz_date {body['x_amz_date']!r} is more than "
                f"{int(AMZ_DATE_SKEW.total_seconds() // 60)} minutes from the "
                "service's time"
            )
        signer = self._signer(
            body.get("region") or sts.DEFAULT_REGION,
            body.get("service") or sts.DEFAULT_SERVICE,
        )
        try:
            signed = sigv4.sign_url(
                signer,
                method,
                body["url"],
                (),
                body["x_amz_content_sha256"],
                sigv4.Credentials(account.access_key, account.secret_key),
                signed_at,
            )
        except sigv4.SigningError as exc:
            name = "x_amz_content_sha256" if "payload hash" in str(exc) else "url"
            raise _invalid(f"{name}: {exc}") from None
        return {"Authorization": signed.authorization}

    def _signer(self, region: str, service: str) -> sigv4.Signer:
        signer = self._signers.get((region, service))
        if signer is None:
            try:
                signer = sigv4.Signer(region, service)
            except sigv4.SigningError as exc:
                name = "region" if "region" in str(exc) else "service"
                raise _invalid(f"{name}: {exc}") from None
            if len(self._signers) < 64:
                self._signers[(region, service)] = signer
        return signer

    def _assumed_role_user(
        self, account: Account, offering: str, role: str, session_name: str
    ) -> sts.AssumedRoleUser:
        # The SRN layout is inferred; SCP documents only that the field exists.
        role_id = (
            hashlib.sha256(f"{account.account_id}:{role}".encode())
            .hexdigest()[:21]
            .upper()
        )
        return sts.AssumedRoleUser(
            assumed_role_id=f"ARO{role_id}:{session_name}",
            srn=(
                f"srn:{offering}::{account.account_id}:::iam:"
                f"assumed-role/{role}/{session_name}"
            ),
        )

    # -- the store's own STS --

    async def _store_credentials(
        self, account: Account, session_name: str, duration: int
    ) -> sts.TemporaryCredentials:
        """Temporary credentials from the store's STS AssumeRole, made with the
        account's key (an identity of the store): an empty RoleArn gives a
        session for the calling identity, with a real session token."""
        if self.store_endpoint is None or self._store_http is None:
            raise Refusal(
                503,
                "ServiceUnavailable",
                "Service Unavailable",
                "no object store is configured (--store): the assume "
                "operations cannot issue credentials",
            )
        form = urlencode(
            {
                "Action": "AssumeRole",
                "Version": "2011-06-15",
                "RoleArn": "",
                "RoleSessionName": _SESSION_NAME_UNSAFE.sub("-", session_name)[:64],
                "DurationSeconds": str(duration),
            }
        ).encode()
        url = self.store_endpoint + "/"
        signed = sigv4.sign_url(
            self._signer(self.store_region, "sts"),
            "POST",
            url,
            [("content-type", "application/x-www-form-urlencoded")],
            hashlib.sha256(form).hexdigest(),
            sigv4.Credentials(account.access_key, account.secret_key),
            datetime.now(UTC),  # the store checks real time, whatever our clock
        )
        headers = dict(signed.headers)
        headers["content-type"] = "application/x-www-form-urlencoded"
        try:
            response = await self._store_http.post(url, content=form, headers=headers)
        except httpx.HTTPError as exc:
            raise Refusal(
                503,
                "ServiceUnavailable",
                "Service Unavailable",
                f"the object store is unreachable ({type(exc).__name__})",
            ) from None
        if response.status_code != 200:
            raise Refusal(
                502,
                "BadGateway",
                "Bad Gateway",
                f"the object store's STS answered {response.status_code}",
            )
        return self._parse_store_credentials(response.content, duration)

    def _parse_store_credentials(
        self, document: bytes, duration: int
    ) -> sts.TemporaryCredentials:
        try:
            root = ET.fromstring(document)  # noqa: S314 - our own store's answer
        except ET.ParseError:
            root = None
        found = {}
        if root is not None:
            for name in ("AccessKeyId", "SecretAccessKey", "SessionToken"):
                element = root.find(f".//{_STS_XML_NS}{name}")
                if element is None:
                    element = root.find(f".//{name}")
                found[name] = (element.text or "") if element is not None else ""
        if not all(found.get(n) for n in ("AccessKeyId", "SecretAccessKey")):
            raise Refusal(
                502,
                "BadGateway",
                "Bad Gateway",
                "the object store's STS answer has no credentials",
            )
        return sts.TemporaryCredentials(
            access_key_id=found["AccessKeyId"],
            secret_access_key=found["SecretAccessKey"],
            session_token=found.get("SessionToken", ""),
            expiration=self.clock() + timedelta(seconds=duration),
        )

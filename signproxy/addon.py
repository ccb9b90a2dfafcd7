"""The mitmproxy addon that re-signs every S3 request.

For each request: refuse hosts that are not ours (forward mode), drop the
client's signature (Authorization, x-amz-date, x-amz-security-token,
x-amz-content-sha256 and presigned-URL query parameters), point the request
at the store (virtual-host-style requests become path-style on the
upstream), decide how the payload is hashed (`payload.decide`), sign, and
forward.  A streamed body is signed in `requestheaders`, before its headers
go upstream; a small body is buffered, hashed and signed in `request`.
Responses stream back to the client.

Any failure inside a hook becomes an S3 XML error answered by the proxy: the
request is never forwarded unsigned.

Modes.  Reverse: clients use the proxy as their endpoint; a Host of
`BUCKET.<virtual-host domain>` (default `localhost`) is rewritten to the
path-style `/BUCKET/...` on the upstream, which every S3 store accepts.
Forward: clients set HTTP_PROXY/HTTPS_PROXY; only hosts on --allow-hosts are
signed and forwarded, anything else (CONNECT included) gets 403.  HTTPS
through the forward proxy is intercepted: clients must trust mitmproxy's CA,
`<confdir>/mitmproxy-ca-cert.pem` (created on first start; `--confdir`).

Known shortcomings, in the open:
* a refused request with a large body is answered only after mitmproxy has
  read (and buffered) the body; mitmproxy cannot answer while a body is
  still arriving unless it streams, and a streamed request goes upstream;
* a body of unknown length is buffered whole before the 411 check;
* if a client's aws-chunked body turns out malformed mid-stream, the stream
  callable raises, mitmproxy drops both connections and the store sees a
  short body it refuses; the client gets no XML answer then.

Two ways to load it:

* `signproxy run` builds a `SigningAddon(config, signer, metrics)` and an
  embedded, trimmed mitmproxy (see `signproxy.server`);
* `mitmdump -s signproxy/addon.py --set signproxy_upstream=http://store:8333`
  loads the module-level `addons` list; the options then come from
  `--set signproxy_<name>=...` or `SIGNPROXY_<NAME>`, and the addon builds
  its own signer when mitmproxy starts running.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from mitmproxy import ctx, exceptions, http
from mitmproxy.proxy import mode_specs
from mitmproxy.proxy.layers.http import _http1

from signproxy import errors, logs, options, payload, sigv4

if TYPE_CHECKING:
    from signproxy.clientauth import ClientVerifier
    from signproxy.metrics import Metrics
    from signproxy.signers import RequestSigner

logger = logging.getLogger(__name__)

METADATA_KEY = "signproxy"
# Set on a flow once its signature is on the request, and only then.
SIGNED_KEY = "signproxy.signed"

# Headers of the client's own signature; the signer sets its own.
_CLIENT_AUTH_HEADERS = frozenset(
    {b"authorization", b"x-amz-date", b"x-amz-security-token", b"x-amz-content-sha256"}
)
# Headers replaced when the body is re-framed as aws-chunked.
_FRAMING_HEADERS = frozenset(
    {b"content-length", b"transfer-encoding", b"x-amz-decoded-content-length"}
)
_V2_PRESIGN_PARAMS = frozenset({"AWSAccessKeyId", "Signature", "Expires"})


class FlowState:
    """What the addon remembers about one flow, in flow.metadata.

    A plain class: mitmproxy loads this file as a script module that is not
    in sys.modules, where dataclasses cannot resolve their annotations.
    """

    __slots__ = (
        "client",
        "counted",
        "outcome",
        "plan",
        "request_id",
        "signed_by",
        "signing_request",
        "started",
        "virtual_host",
    )

    def __init__(self, request_id: str, started: float) -> None:
        self.request_id = request_id
        self.started = started
        self.plan: payload.PayloadPlan | None = None
        self.signing_request: Any = None  # signers.SigningRequest until signed
        self.signed_by: str | None = None
        self.outcome: str | None = None  # set when the proxy answered itself
        self.virtual_host = False
        self.counted = False  # whether in_flight counts this flow
        self.client: Any = None  # clientauth.VerifiedClient when keys are set


class SigningAddon:
    """Strip, decide the payload, sign, forward; answer failures in S3 XML."""

    def __init__(
        self,
        config: options.ProxyConfig | None = None,
        signer: RequestSigner | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.config = config
        self.signer = signer
        self.metrics = metrics
        self.in_flight = 0
        self._idle: asyncio.Event | None = None
        self._embedded = config is not None
        self._owns_signer = False
        self._upstream_host: bytes | None = None
        self.verifier: ClientVerifier | None = None
        if config is not None:
            self._set_config(config)

    # --- life cycle (the mitmdump way) ------------------------------------

    def load(self, loader: Any) -> None:
        install_xml_protocol_errors()
        if self._embedded:
            return
        for option in options.OPTIONS:
            loader.add_option(
                option.mitmproxy_name, str | None, None, f"signproxy: {option.help}"
            )

    def configure(self, updated: set[str]) -> None:
        if self._embedded or not any(n.startswith("signproxy_") for n in updated):
            return
        given = {
            o.name: getattr(ctx.options, o.mitmproxy_name) for o in options.OPTIONS
        }
        try:
            config = options.resolve(given, label=_mitmproxy_label)
            self._set_config(config)
        except ValueError as exc:  # OptionError, or a client key without secret
            raise exceptions.OptionsError(str(exc)) from None
        mitm_mode = (
            "reverse:" + config.upstream if config.mode == "reverse" else "regular"
        )
        host, port = config.listen
        ctx.options.update(
            mode=[mitm_mode],
            listen_host=host,
            listen_port=port,
            keep_host_header=True,
            connection_strategy="lazy",
            store_streamed_bodies=False,
        )

    async def running(self) -> None:
        if not self._embedded and self.config is not None:
            # mitmdump may have bound its listeners before this script set
            # the mode and address; bring them in line (a no-op otherwise).
            server = ctx.master.addons.get("proxyserver")
            if server is not None:
                await server.setup_servers()
        if self.signer is None and self.config is not None:
            from signproxy.signers import create_signer

            self.signer = create_signer(
                self.config.signer_settings(), metrics=self.metrics
            )
            self._owns_signer = True
            await self.signer.start()
            logger.info("signer %s started", self.signer.name)

    async def done(self) -> None:
        if self._owns_signer and self.signer is not None:
            await self.signer.close()

    def _set_config(self, config: options.ProxyConfig) -> None:
        self.config = config
        if config.upstream is not None:
            self._upstream_host = sigv4.host_header(config.upstream).encode()
        keys = config.client_keys()
        if keys:
            from signproxy.clientauth import ClientVerifier

            self.verifier = ClientVerifier(keys)

    # --- hooks ------------------------------------------------------------

    def http_connect(self, flow: http.HTTPFlow) -> None:
        """Forward mode: CONNECT only to allowed hosts."""
        state = self._state(flow)
        try:
            self._check_allowed(flow.request.host, flow.request.port)
        except errors.S3Error as error:
            self._answer(flow, state, error, "refused")

    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        state = self._state(flow)
        self.in_flight += 1
        state.counted = True
        await self._guarded(flow, state, self._prepare(flow, state))

    async def request(self, flow: http.HTTPFlow) -> None:
        state = self._state(flow)
        if flow.response is not None or state.signing_request is None:
            return
        await self._guarded(flow, state, self._sign_buffered(flow, state))

    async def _guarded(
        self, flow: http.HTTPFlow, state: FlowState, step: Awaitable[None]
    ) -> None:
        """Run one step; any failure becomes an answer, never a forward."""
        try:
            try:
                await step
            except errors.S3Error as error:
                self._answer(flow, state, error, "refused")
            except Exception as error:
                self._answer_unexpected(flow, state, error)
        except Exception:
            # Not even an error answer could be made: drop the connection
            # rather than let the request go upstream.
            logger.exception("request %s: dropping the flow", state.request_id)
            flow.request.stream = False
            flow.kill()

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        state = flow.metadata.get(METADATA_KEY)
        if flow.response is not None and (state is None or state.outcome is None):
            # Downloads stream through; nothing is held whole in memory.
            flow.response.stream = True

    def response(self, flow: http.HTTPFlow) -> None:
        state = flow.metadata.get(METADATA_KEY)
        if state is None or flow.response is None:
            return
        self._finish(
            flow, state, state.outcome or "forwarded", flow.response.status_code
        )

    def error(self, flow: http.HTTPFlow) -> None:
        """The store could not be reached, or a connection broke mid-flow."""
        state = flow.metadata.get(METADATA_KEY)
        if state is None:
            return
        message = flow.error.msg if flow.error else "unknown error"
        logger.warning("request %s failed upstream: %s", state.request_id, message)
        self._finish(flow, state, "upstream_error", 502)

    async def wait_idle(self, seconds: float) -> bool:
        """Wait until no request is in flight; False if `seconds` ran out."""
        if self.in_flight == 0:
            return True
        self._idle = asyncio.Event()
        try:
            await asyncio.wait_for(self._idle.wait(), seconds)
        except TimeoutError:
            return False
        return True

    # --- the request path -------------------------------------------------

    async def _prepare(self, flow: http.HTTPFlow, state: FlowState) -> None:
        config = self._require_config()
        request = flow.request
        reverse = isinstance(flow.client_conn.proxy_mode, mode_specs.ReverseMode)
        if not reverse:
            self._check_allowed(request.host, request.port)
        if self.signer is None:
            raise errors.signing_unavailable("signproxy has no signer yet", 1)
        check_limits(flow, self.in_flight, config)

        path, _, query = request.path.partition("?")
        fields = list(request.headers.fields)
        if self.verifier is not None:
            # Before anything is stripped: the client's signature covers the
            # request exactly as it arrived.
            state.client = self.verifier.verify(
                request.method,
                path,
                query,
                [(_text(n), _text(v)) for n, v in fields],
                datetime.now(UTC),
            )
        query = strip_presign_params(query, datetime.now(UTC))
        host_value = self._forward_host(flow, fields, reverse)
        if reverse:
            bucket = virtual_host_bucket(fields, config.virtual_host_domains)
            if bucket is not None:
                path = f"/{bucket}{path}"
                state.virtual_host = True

        info = payload.body_info(request.method, fields)
        plan = payload.decide(
            info, config.payload, config.hash_limit, self.signer.can_stream()
        )
        state.plan = plan
        logger.debug(
            "request %s: payload=%s body=%s",
            state.request_id,
            plan.mode,
            plan.body.value,
        )
        fields = [
            (name, value)
            for name, value in fields
            if name.lower() not in _CLIENT_AUTH_HEADERS and name.lower() != b"host"
        ]
        fields.insert(0, (b"host", host_value))
        if plan.body is payload.Body.ENCODE:
            fields = encode_headers(fields, plan, config.chunk_size)
        elif plan.body is payload.Body.RESIGN:
            fields = resign_headers(fields, plan, info, config.chunk_size)

        state.signing_request = self._signing_request(flow, path, query, fields)
        request.headers.fields = tuple(fields)
        if not plan.sign_early:
            request.stream = False
            return
        signed = await self._sign(state, plan.payload_hash or "")
        self._apply(flow, signed)
        stream = body_stream(
            plan, signed, config.chunk_size, info, client_decoder(state.client)
        )
        request.stream = FailClosed(stream, flow, state) if callable(stream) else stream

    async def _sign_buffered(self, flow: http.HTTPFlow, state: FlowState) -> None:
        config = self._require_config()
        body = flow.request.raw_content or b""
        if state.plan is not None and state.plan.decoded_length is None:
            # The client did not say how long the body is; now we know.
            if len(body) > config.hash_limit:
                raise errors.missing_content_length(config.hash_limit)
            fields = [
                (n, v)
                for n, v in flow.request.headers.fields
                if n.lower() not in (b"transfer-encoding", b"content-length")
            ]
            fields.append((b"content-length", str(len(body)).encode()))
            flow.request.headers.fields = tuple(fields)
        if len(body) >= payload.THREAD_HASH_THRESHOLD:
            payload_hash = await asyncio.to_thread(payload.sha256_hex, body)
        else:
            payload_hash = payload.sha256_hex(body)
        signed = await self._sign(state, payload_hash)
        self._apply(flow, signed)

    async def _sign(self, state: FlowState, payload_hash: str) -> sigv4.SignedRequest:
        from signproxy.signers import SigningFailed

        assert self.signer is not None
        request = state.signing_request
        request = dataclasses.replace(request, payload_hash=payload_hash)
        state.signing_request = None
        timeout = self.config.request_timeout if self.config else None
        try:
            result = await asyncio.wait_for(self.signer.sign(request), timeout)
        except TimeoutError:
            state.outcome = "sign_error"
            raise errors.signing_unavailable(
                f"signing took longer than {timeout} s (--request-timeout)", 5
            ) from None
        except SigningFailed as failure:
            state.outcome = "sign_error"
            raise errors.S3Error(
                failure.status, failure.code, failure.message, failure.retry_after
            ) from None
        except sigv4.SigningError as failure:
            state.outcome = "sign_error"
            raise errors.bad_request("InvalidRequest", str(failure)) from None
        # The signers record their own signing metrics.
        state.signed_by = result.signed_by
        return result.request

    def _signing_request(
        self,
        flow: http.HTTPFlow,
        path: str,
        query: str,
        fields: list[tuple[bytes, bytes]],
    ) -> Any:
        from signproxy.signers import SigningRequest

        return SigningRequest(
            method=flow.request.method,
            path=path,
            query=query,
            headers=tuple((_text(n), _text(v)) for n, v in fields),
            payload_hash="",
            scheme=flow.request.scheme,
        )

    def _apply(self, flow: http.HTTPFlow, signed: sigv4.SignedRequest) -> None:
        """Put exactly what was signed on the wire: path, query, headers."""
        request = flow.request
        request.path = signed.path + (f"?{signed.query}" if signed.query else "")
        own = {name.encode() for name, _ in signed.headers}
        fields = [(n, v) for n, v in request.headers.fields if n.lower() not in own]
        fields += [(name.encode(), value.encode()) for name, value in signed.headers]
        request.headers.fields = tuple(fields)
        flow.metadata[SIGNED_KEY] = True

    def _forward_host(
        self, flow: http.HTTPFlow, fields: list[tuple[bytes, bytes]], reverse: bool
    ) -> bytes:
        if reverse and self._upstream_host is not None:
            return self._upstream_host
        if reverse:
            return (
                flow.request.host_header.encode() if flow.request.host_header else b""
            )
        for name, value in fields:
            if name.lower() == b"host":
                return value
        return sigv4.host_header(flow.request.url).encode()

    def _check_allowed(self, host: str, port: int) -> None:
        config = self._require_config()
        if not host_allowed(host, port, config.allow_hosts):
            raise errors.host_not_allowed(host)

    def _require_config(self) -> options.ProxyConfig:
        if self.config is None:
            raise errors.signing_unavailable(
                "signproxy is not configured (set signproxy_upstream)", 5
            )
        return self.config

    # --- answers and bookkeeping ------------------------------------------

    def _state(self, flow: http.HTTPFlow) -> FlowState:
        state = flow.metadata.get(METADATA_KEY)
        if state is None:
            state = FlowState(errors.new_request_id(), time.perf_counter())
            flow.metadata[METADATA_KEY] = state
        return state

    def _answer(
        self, flow: http.HTTPFlow, state: FlowState, error: errors.S3Error, outcome: str
    ) -> None:
        state.outcome = state.outcome or outcome
        level = logging.ERROR if error.status >= 500 else logging.WARNING
        logger.log(
            level, "request %s answered by the proxy: %s", state.request_id, error
        )
        # A request that is answered here is never sent upstream.
        # TODO: mitmproxy reads the whole body before sending this answer; a
        # large refused upload is buffered (see the module docstring).
        flow.request.stream = False
        flow.response = http.Response.make(
            error.status,
            error.body(state.request_id),
            _headers(error, state.request_id),
        )

    def _answer_unexpected(
        self, flow: http.HTTPFlow, state: FlowState, error: Exception
    ) -> None:
        logger.exception(
            "request %s: unexpected %s while signing", state.request_id,
            type(error).__name__,
        )  # fmt: skip
        state.outcome = "sign_error"
        self._answer(flow, state, errors.signing_failed("internal error"), "sign_error")

    def _finish(
        self, flow: http.HTTPFlow, state: FlowState, outcome: str, status: int
    ) -> None:
        if state.counted:
            state.counted = False
            self.in_flight -= 1
            if self.in_flight == 0 and self._idle is not None:
                self._idle.set()
        total = time.perf_counter() - state.started
        upstream: float | None = None
        response = flow.response
        if outcome == "forwarded" and response is not None:
            sent = flow.request.timestamp_end or flow.request.timestamp_start
            if response.timestamp_start and sent:
                upstream = max(0.0, response.timestamp_start - sent)
        try:
            self._record(flow, state, outcome, status, total, upstream)
        except Exception:
            logger.exception("request %s: recording it failed", state.request_id)

    def _record(
        self,
        flow: http.HTTPFlow,
        state: FlowState,
        outcome: str,
        status: int,
        total: float,
        upstream: float | None,
    ) -> None:
        if self.metrics is not None:
            self.metrics.request_done(
                flow.request.method, outcome, status, total, upstream
            )
            if state.plan is not None and outcome == "forwarded":
                self.metrics.payload(state.plan.mode, state.plan.decoded_length)
        path, _, query = flow.request.path.partition("?")
        logs.log_access(
            flow.request.method,
            path,
            query,
            status,
            total,
            upstream,
            outcome=outcome,
            signer=state.signed_by,
            # A signed request's path is already path-style.
            virtual_host=state.virtual_host and state.signed_by is None,
        )


# --- pure helpers -----------------------------------------------------------


def host_allowed(host: str, port: int, allowed: tuple[str, ...]) -> bool:
    """Whether `host` (and port) is on the allow list; `*.x` matches sub-domains."""
    host = host.lower().rstrip(".")
    for entry in allowed:
        name, _, entry_port = entry.partition(":")
        if entry_port and int(entry_port) != port:
            continue
        if name.startswith("*."):
            if host.endswith(name[1:]):
                return True
        elif host == name:
            return True
    return False


def virtual_host_bucket(
    fields: list[tuple[bytes, bytes]], domains: tuple[str, ...]
) -> str | None:
    """The bucket of a virtual-host-style request (`bucket.localhost:8080`)."""
    host = next((v for n, v in fields if n.lower() == b"host"), b"").decode("latin-1")
    name = host.lower()
    if name.startswith("["):
        return None
    name = name.rpartition(":")[0] if ":" in name else name
    for domain in domains:
        suffix = "." + domain.removeprefix("*.")
        if name.endswith(suffix) and len(name) > len(suffix):
            return host[: len(name) - len(suffix)]
    return None


def strip_presign_params(query: str, now: datetime) -> str:
    """The query without presigned-URL authentication; refuses expired ones."""
    if not query or ("X-Amz-" not in query and "Signature=" not in query):
        return query
    pairs = query.split("&")
    names = [unquote(p.partition("=")[0]) for p in pairs]
    values = {
        n: unquote(p.partition("=")[2]) for n, p in zip(names, pairs, strict=True)
    }
    v4 = "X-Amz-Signature" in values or "X-Amz-Credential" in values
    v2 = "Signature" in values and "AWSAccessKeyId" in values
    if v4:
        _check_v4_expiry(values, now)
        drop: frozenset[str] = sigv4.QUERY_AUTH_PARAMS
    elif v2:
        _check_v2_expiry(values, now)
        drop = _V2_PRESIGN_PARAMS
    else:
        return query
    return "&".join(p for n, p in zip(names, pairs, strict=True) if n not in drop)


def _check_v4_expiry(values: dict[str, str], now: datetime) -> None:
    try:
        signed_at = sigv4.parse_amz_date(values.get("X-Amz-Date", ""))
        expires = int(values.get("X-Amz-Expires", "0"))
    except ValueError:
        raise errors.bad_request(
            "AuthorizationQueryParametersError",
            "X-Amz-Date or X-Amz-Expires of the presigned URL is malformed",
        ) from None
    if now > signed_at + timedelta(seconds=expires):
        raise errors.request_expired()


def _check_v2_expiry(values: dict[str, str], now: datetime) -> None:
    expires = values.get("Expires", "")
    if not expires.isdigit():
        raise errors.bad_request(
            "AuthorizationQueryParametersError", "Expires must be a number"
        )
    if now.timestamp() > int(expires):
        raise errors.request_expired()


def encode_headers(
    fields: list[tuple[bytes, bytes]], plan: payload.PayloadPlan, chunk_size: int
) -> list[tuple[bytes, bytes]]:
    """Headers for a body re-framed as signed aws-chunked."""
    from signproxy import chunked

    assert plan.decoded_length is not None
    encoded = chunked.encoded_length(plan.decoded_length, chunk_size, signed=True)
    return _framed(fields, encoded, plan.decoded_length)


def resign_headers(
    fields: list[tuple[bytes, bytes]],
    plan: payload.PayloadPlan,
    info: payload.BodyInfo,
    chunk_size: int,
) -> list[tuple[bytes, bytes]]:
    """Headers for a client's aws-chunked body whose chunk signatures change.

    The body is re-framed into `chunk_size` chunks, signed, with the client's
    checksum trailers carried over; its exact length is known up front.
    """
    from signproxy import chunked

    assert plan.decoded_length is not None
    try:
        trailer = chunked.checksum_trailer_lengths(info.trailer)
    except chunked.ChunkedFormatError as error:
        raise errors.bad_request("InvalidRequest", str(error)) from None
    encoded = chunked.encoded_length(
        plan.decoded_length, chunk_size, signed=True, trailer=trailer
    )
    return _framed(fields, encoded, plan.decoded_length)


def _framed(
    fields: list[tuple[bytes, bytes]], encoded: int, decoded: int
) -> list[tuple[bytes, bytes]]:
    kept = [(n, v) for n, v in fields if n.lower() not in _FRAMING_HEADERS]
    encodings = [
        e.strip()
        for n, v in kept
        if n.lower() == b"content-encoding"
        for e in v.split(b",")
        if e.strip() and e.strip().lower() != b"aws-chunked"
    ]
    kept = [(n, v) for n, v in kept if n.lower() != b"content-encoding"]
    encoding = b",".join([b"aws-chunked", *encodings])
    kept += [
        (b"content-encoding", encoding),
        (b"x-amz-decoded-content-length", str(decoded).encode()),
        (b"content-length", str(encoded).encode()),
    ]
    return kept


class FailClosed:
    """A body stream whose malformed or forged input closes the connections.

    mitmproxy calls the stream for each piece of body; an exception there
    would leave both connections hanging until a timeout.  Instead the rest
    of the body is dropped and the client connection is closed, so the store
    sees a truncated body and keeps nothing.
    """

    def __init__(self, inner: Any, flow: http.HTTPFlow, state: FlowState) -> None:
        self.inner = inner
        self.flow = flow
        self.state = state
        self.failed = False

    def __call__(self, data: bytes) -> bytes:
        if self.failed:
            return b""
        try:
            return self.inner(data)
        except ValueError as error:  # ChunkedFormatError and its kin
            self.failed = True
            self.state.outcome = "refused"
            logger.warning(
                "request %s: body refused, closing the connection: %s",
                self.state.request_id,
                error,
            )
            close_client(self.flow, "request body refused")
            return b""


def close_client(flow: http.HTTPFlow, reason: str) -> None:
    """Cancel the connection handler that serves `flow`'s client."""
    server = ctx.master.addons.get("proxyserver") if ctx.master else None
    for handler in list(getattr(server, "connections", {}).values()):
        if handler.client.id == flow.client_conn.id:
            transport = handler.transports.get(handler.client)
            if transport is not None and transport.handler is not None:
                transport.handler.cancel(reason)


def check_limits(flow: http.HTTPFlow, in_flight: int, config: options.ProxyConfig):
    """--max-header-size and --max-connections, answered in S3's words."""
    request = flow.request
    head = len(request.method) + len(request.path) + 12
    head += sum(len(n) + len(v) + 4 for n, v in request.headers.fields)
    if head > config.max_header_size:
        raise errors.S3Error(
            431,
            "RequestHeaderSectionTooLarge",
            f"the request head is {head} bytes; signproxy accepts at most "
            f"{config.max_header_size} (--max-header-size)",
        )
    if in_flight > config.max_connections:
        raise errors.S3Error(
            503,
            "SlowDown",
            f"signproxy has {config.max_connections} requests in flight to the "
            "store, its limit (--max-connections); retry shortly",
            retry_after=1,
        )


def client_decoder(client: Any) -> Any:
    """A decoder that checks the chunk signatures of a signed client stream.

    Only for authenticated clients (client keys set) sending
    STREAMING-AWS4-HMAC-SHA256-PAYLOAD(-TRAILER); None otherwise.
    """
    if client is None or not client.payload_hash.startswith(sigv4.STREAMING_SIGNED):
        return None
    from signproxy.clientauth import VerifyingDecoder

    return VerifyingDecoder(client)


def body_stream(
    plan: payload.PayloadPlan,
    signed: sigv4.SignedRequest,
    chunk_size: int,
    info: payload.BodyInfo,
    decoder: Any = None,
) -> bool | payload.BodyStream:
    """What flow.request.stream becomes for a request signed up front."""
    if plan.body is payload.Body.ENCODE:
        from signproxy import chunked

        signer = chunked.ChunkSigner(
            signed.signing_key, signed.amz_date, signed.scope, signed.signature
        )
        return chunked.StreamEncoder(chunk_size, signer)
    if plan.body is payload.Body.RESIGN:
        from signproxy import chunked

        signer = chunked.ChunkSigner(
            signed.signing_key, signed.amz_date, signed.scope, signed.signature
        )
        return chunked.Resigner(
            chunk_size,
            signer,
            info.trailer,
            expected_length=plan.decoded_length,
            decoder=decoder,
        )
    return plan.body is payload.Body.STREAM


def _headers(error: errors.S3Error, request_id: str) -> http.Headers:
    return http.Headers(
        [(name.encode(), value.encode()) for name, value in error.headers(request_id)]
    )


def _text(raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _mitmproxy_label(option: options.Option, source: str) -> str:
    return option.env if source == "env" else option.mitmproxy_name


# --- mitmproxy's own error pages, in S3's words ------------------------------

_PROTOCOL_ERROR_CODES = {
    400: "BadRequest",
    403: "AccessDenied",
    407: "AccessDenied",
    413: "EntityTooLarge",
    414: "RequestURITooLong",
    431: "RequestHeaderSectionTooLarge",
    502: "BadGateway",
    504: "GatewayTimeout",
}


def xml_error_response(status_code: int, message: str = "") -> bytes:
    """An S3 XML error for failures mitmproxy answers itself (e.g. 502)."""
    code = _PROTOCOL_ERROR_CODES.get(status_code, "InternalError")
    if status_code == 502:
        message = f"signproxy could not reach the object store: {message}"
    request_id = errors.new_request_id()
    error = errors.S3Error(status_code, code, message)
    headers = _headers(error, request_id)
    headers.add("connection", "close")
    response = http.Response.make(status_code, error.body(request_id), headers)
    from mitmproxy.net.http import http1

    return http1.assemble_response(response)


def install_xml_protocol_errors() -> None:
    """Make mitmproxy's own error answers (502 and friends) S3 XML too.

    mitmproxy writes connection failures straight to the client with an HTML
    page from `_http1.make_error_response`; S3 clients parse XML.  The
    function is replaced at module level (pinned to mitmproxy 12).
    """
    if getattr(_http1, "make_error_response", None) is None:
        logger.warning("mitmproxy changed: its error pages stay HTML")
        return
    _http1.make_error_response = xml_error_response
    _answer_errors_after_100_continue()


def _answer_errors_after_100_continue() -> None:
    """Let a request that got `100 Continue` still get its 502 answer.

    mitmproxy answers `Expect: 100-continue` itself and then remembers the
    100 as "the response", so when the store fails afterwards it closes the
    client connection without the error answer (boto3 sends that header with
    every PUT).  An interim 1xx is not the response: forget it once sent.
    """
    server_class = _http1.Http1Server
    original = server_class.send
    if getattr(original, "_signproxy_wrapped", False):
        return

    def send(self: Any, event: Any) -> Any:
        yield from original(self, event)
        response = getattr(event, "response", None)
        if response is not None and response.status_code < 200:
            self.response = None

    send._signproxy_wrapped = True  # type: ignore[attr-defined]
    server_class.send = send


class SignedOnly:
    """The last link of the chain: nothing leaves unsigned.

    `SigningAddon` answers its own failures, but an exception that escapes a
    hook is only logged by mitmproxy, which then forwards the request as it
    stands: with the client's signature, or none.  This addon runs after it,
    shares no code with it, and answers any request that is neither signed
    nor already answered.  A request whose body streams must be signed by
    `requestheaders`; a buffered one by `request`.
    """

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.request.stream:
            self._refuse_unsigned(flow)

    def request(self, flow: http.HTTPFlow) -> None:
        self._refuse_unsigned(flow)

    @staticmethod
    def _refuse_unsigned(flow: http.HTTPFlow) -> None:
        if flow.response is not None or flow.metadata.get(SIGNED_KEY):
            return
        request_id = errors.new_request_id()
        logger.error("request %s would have left unsigned: refused", request_id)
        error = errors.signing_failed("internal error")
        flow.request.stream = False
        flow.response = http.Response.make(
            error.status, error.body(request_id), _headers(error, request_id)
        )


addons = [SigningAddon(), SignedOnly()]

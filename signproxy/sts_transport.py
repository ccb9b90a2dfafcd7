"""A lean HTTP/1.1 keep-alive transport for the STS client.

httpx's default transport (httpcore over anyio) spent ~1.8 ms of CPU per STS
call in the remote-signing benchmark: its pool re-scans every connection for
each request and polls each idle socket, anyio wraps every read, and httpcore
tries to import the missing `sniffio` on every call.  STS calls are small
JSON POSTs to one origin, so this transport does only that, over asyncio
streams:

* one request at a time per connection, idle connections kept per origin
  (at most `max_idle` of them) and reused last-in first-out;
* bodies framed by Content-Length, chunked transfer coding, or the end of
  the connection;
* httpx's timeouts (connect, read, write, pool) and httpx's exceptions, so
  `StsClient`'s retries and errors behave exactly as with httpx's transport;
* a request that finds a reused connection closed by the server before any
  byte of the answer arrives is sent once more on a new connection (as
  browsers and urllib3 do; the server has not seen it).

Not supported, and refused with a clear error: HTTP/2, proxies, request
bodies that are not in memory.  TLS uses httpx's default context (certifi).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from typing import Any

import httpx

logger = logging.getLogger(__name__)

_DEFAULT_PORTS = {b"http": 80, b"https": 443}
_MAX_HEAD = 64 * 1024  # longest response head accepted
_MAX_BODY = 16 * 1024 * 1024  # STS answers are a few hundred bytes

Origin = tuple[bytes, str, int]


class _Connection:
    """One HTTP/1.1 connection: its streams and whether it may be reused."""

    __slots__ = ("reader", "reused", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer
        self.reused = False

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()

    @property
    def usable(self) -> bool:
        return not self.reader.at_eof() and not self.writer.is_closing()


class _Closed(Exception):
    """A reused connection was closed before any byte of the answer came."""


class StsTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 over asyncio streams with keep-alive; see the module docstring."""

    def __init__(
        self,
        *,
        max_connections: int = 100,
        max_idle: int = 20,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._idle: dict[Origin, list[_Connection]] = {}
        self._max_idle = max_idle
        self._slots = asyncio.Semaphore(max_connections)
        self._ssl_context = ssl_context
        self._closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._closed:
            raise httpx.ConnectError("the STS transport is closed", request=request)
        timeouts = request.extensions.get("timeout", {})
        body = await request.aread()
        head = _request_head(request, len(body))
        await _with_timeout(
            self._slots.acquire(), timeouts.get("pool"), httpx.PoolTimeout, request
        )
        try:
            origin = _origin(request)
            for _attempt in range(2):
                connection = await self._connection(origin, timeouts, request)
                try:
                    return await self._exchange(
                        connection, origin, head + body, timeouts, request
                    )
                except _Closed:
                    continue  # the server closed a kept-alive connection
            raise httpx.RemoteProtocolError(
                "the STS server closed the connection without answering",
                request=request,
            )
        finally:
            self._slots.release()

    async def aclose(self) -> None:
        self._closed = True
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()

    async def _connection(
        self, origin: Origin, timeouts: dict[str, Any], request: httpx.Request
    ) -> _Connection:
        idle = self._idle.get(origin)
        while idle:
            connection = idle.pop()
            if connection.usable:
                connection.reused = True
                return connection
            connection.close()
        scheme, host, port = origin
        tls = self._tls() if scheme == b"https" else None
        try:
            reader, writer = await _with_timeout(
                asyncio.open_connection(
                    host, port, ssl=tls, server_hostname=host if tls else None
                ),
                timeouts.get("connect"),
                httpx.ConnectTimeout,
                request,
            )
        except OSError as error:
            raise httpx.ConnectError(
                f"cannot connect to {host}:{port}: {error}", request=request
            ) from error
        return _Connection(reader, writer)

    def _tls(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = httpx.create_ssl_context()
        return self._ssl_context

    async def _exchange(
        self,
        connection: _Connection,
        origin: Origin,
        data: bytes,
        timeouts: dict[str, Any],
        request: httpx.Request,
    ) -> httpx.Response:
        keep = False
        try:
            connection.writer.write(data)
            await _with_timeout(
                _drain(connection, request),
                timeouts.get("write"),
                httpx.WriteTimeout,
                request,
            )
            response, keep = await _with_timeout(
                _read_response(connection, request),
                timeouts.get("read"),
                httpx.ReadTimeout,
                request,
            )
            return response
        finally:
            # Cancelled, failed or not keep-alive: the connection is done.
            if keep and not self._closed:
                self._release(origin, connection)
            else:
                connection.close()

    def _release(self, origin: Origin, connection: _Connection) -> None:
        idle = self._idle.setdefault(origin, [])
        if len(idle) < self._max_idle:
            idle.append(connection)
        else:
            connection.close()


def _origin(request: httpx.Request) -> Origin:
    url = request.url
    scheme = url.raw_scheme
    if scheme not in _DEFAULT_PORTS:
        raise httpx.UnsupportedProtocol(
            f"the STS transport speaks http and https, not {url.scheme!r}",
            request=request,
        )
    return scheme, url.host, url.port or _DEFAULT_PORTS[scheme]


def _request_head(request: httpx.Request, length: int) -> bytes:
    """Request line and headers; the body is framed by Content-Length."""
    lines = [b"%s %s HTTP/1.1" % (request.method.encode(), request.url.raw_path)]
    for name, value in request.headers.raw:
        lower = name.lower()
        if lower in (b"content-length", b"transfer-encoding"):
            continue
        lines.append(name + b": " + value)
    if length or request.method not in ("GET", "HEAD"):
        lines.append(b"Content-Length: %d" % length)
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def _with_timeout(
    awaitable: Any, seconds: float | None, error: type[httpx.TimeoutException], request
) -> Any:
    try:
        return await asyncio.wait_for(awaitable, seconds)
    except TimeoutError:
        raise error(
            f"STS {error.__name__} after {seconds} s", request=request
        ) from None


async def _drain(connection: _Connection, request: httpx.Request) -> None:
    try:
        await connection.writer.drain()
    except OSError as error:
        if connection.reused:
            raise _Closed from None  # nothing of it reached the server
        raise httpx.WriteError(
            f"sending to STS failed: {error}", request=request
        ) from error


async def _read_response(
    connection: _Connection, request: httpx.Request
) -> tuple[httpx.Response, bool]:
    """The response, and whether the connection may carry another request."""
    reader = connection.reader
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as error:
        if connection.reused and not error.partial:
            raise _Closed from None
        raise httpx.RemoteProtocolError(
            "the STS server closed the connection mid-answer", request=request
        ) from None
    except asyncio.LimitOverrunError:
        raise httpx.RemoteProtocolError(
            "the STS answer's head is too long", request=request
        ) from None
    except OSError as error:
        if connection.reused:
            raise _Closed from None
        raise httpx.ReadError(
            f"reading from STS failed: {error}", request=request
        ) from error
    if len(head) > _MAX_HEAD:
        raise httpx.RemoteProtocolError(
            "the STS answer's head is too long", request=request
        )
    status, reason, headers, version = _parse_head(head, request)
    if 100 <= status < 200:
        # An interim answer (100 Continue): the real one follows.
        return await _read_response(connection, request)
    fields = {name.lower(): value for name, value in headers}
    body, framed = await _read_body(reader, fields, request, status)
    keep = (
        framed
        and version == b"HTTP/1.1"
        and b"close" not in fields.get(b"connection", b"").lower()
    )
    response = httpx.Response(
        status,
        headers=headers,
        content=body,
        extensions={"http_version": version, "reason_phrase": reason},
        request=request,
    )
    return response, keep


def _parse_head(
    head: bytes, request: httpx.Request
) -> tuple[int, bytes, list[tuple[bytes, bytes]], bytes]:
    lines = head[:-4].split(b"\r\n")
    version, _, rest = lines[0].partition(b" ")
    code, _, reason = rest.partition(b" ")
    if version not in (b"HTTP/1.1", b"HTTP/1.0") or not code.isdigit():
        raise httpx.RemoteProtocolError(
            f"not an HTTP/1.x status line: {lines[0][:80]!r}", request=request
        )
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip():
            raise httpx.RemoteProtocolError(
                f"malformed header line in the STS answer: {line[:80]!r}",
                request=request,
            )
        headers.append((name, value.strip()))
    return int(code), reason, headers, version


async def _read_body(
    reader: asyncio.StreamReader,
    fields: dict[bytes, bytes],
    request: httpx.Request,
    status: int,
) -> tuple[bytes, bool]:
    """The body and whether its end was framed (not the connection's end)."""
    if request.method == "HEAD" or status in (204, 304):
        return b"", True
    try:
        if b"chunked" in fields.get(b"transfer-encoding", b"").lower():
            return await _read_chunked(reader, request), True
        length = fields.get(b"content-length")
        if length is not None:
            if not length.isdigit() or int(length) > _MAX_BODY:
                raise httpx.RemoteProtocolError(
                    f"bad Content-Length in the STS answer: {length[:40]!r}",
                    request=request,
                )
            return await reader.readexactly(int(length)), True
        body = await reader.read(_MAX_BODY + 1)
        while len(body) <= _MAX_BODY:
            more = await reader.read(_MAX_BODY + 1 - len(body))
            if not more:
                return body, False
            body += more
        raise httpx.RemoteProtocolError("the STS answer is too long", request=request)
    except asyncio.IncompleteReadError:
        raise httpx.RemoteProtocolError(
            "the STS server closed the connection mid-body", request=request
        ) from None
    except OSError as error:
        raise httpx.ReadError(
            f"reading from STS failed: {error}", request=request
        ) from error


async def _read_chunked(reader: asyncio.StreamReader, request: httpx.Request) -> bytes:
    parts = []
    total = 0
    while True:
        line = await reader.readuntil(b"\r\n")
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise httpx.RemoteProtocolError(
                f"bad chunk size in the STS answer: {size_text[:20]!r}",
                request=request,
            ) from None
        if size == 0:
            # Trailers, if any, end with an empty line.
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass
            return b"".join(parts)
        total += size
        if total > _MAX_BODY:
            raise httpx.RemoteProtocolError(
                "the STS answer is too long", request=request
            )
        parts.append(await reader.readexactly(size))
        if await reader.readexactly(2) != b"\r\n":
            raise httpx.RemoteProtocolError(
                "a chunk of the STS answer lacks its CRLF", request=request
            )

"""The STS client's own HTTP/1.1 transport, against real sockets.

Each test runs a small asyncio server on loopback that answers the way the
case needs (keep-alive, closing idle connections, chunked bodies, no length,
silence, garbage) and counts the connections it accepted.  The emulator
tests (tests/test_sts.py, tests/faults/) drive the transport through
`StsClient` end to end; these pin down its HTTP behaviour.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from signproxy.sts import ScpCredentials, StsClient, StsUnavailable
from signproxy.sts_transport import StsTransport

AUTHORIZATION = "AWS4-HMAC-SHA256 Credential=AK/20260101/kr-west1/s3/aws4_request"
BODY = json.dumps({"Authorization": AUTHORIZATION}).encode()
DATE = "20260101T000000Z"

Handler = Callable[
    ["Server", asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]
]


class Server:
    """A loopback HTTP server whose answers come from `handler`."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.ssl: ssl.SSLContext | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        scheme = "https" if self.ssl else "http"
        host = "localhost" if self.ssl else "127.0.0.1"
        return f"{scheme}://{host}:{port}/v1/object-store-authorization"

    async def start(self) -> None:
        self.server = await asyncio.start_server(
            self._serve, "127.0.0.1", 0, ssl=self.ssl
        )

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.connections += 1
        try:
            await self.handler(self, reader, writer, self.connections)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        request = head + await reader.readexactly(length)
        self.requests.append(request)
        return request

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


def answer(body: bytes = BODY, *extra: bytes) -> bytes:
    head = [b"HTTP/1.1 200 OK", b"Content-Type: application/json", *extra]
    if not any(h.lower().startswith(b"transfer-encoding") for h in extra):
        head.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(head) + b"\r\n\r\n" + body


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[Server]]]:
    servers: list[Server] = []

    async def start(handler: Handler, tls: ssl.SSLContext | None = None) -> Server:
        server = Server(handler)
        server.ssl = tls
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.close()


async def post(transport: StsTransport, url: str, seconds: float = 5.0):
    request = httpx.Request(
        "POST",
        url,
        content=b'{"method":"GET"}',
        headers={"Content-Type": "application/json"},
        extensions={"timeout": httpx.Timeout(seconds).as_dict()},
    )
    response = await transport.handle_async_request(request)
    await response.aread()
    return response


async def keep_alive(server: Server, reader, writer, _n) -> None:
    while True:
        await server.read_request(reader)
        writer.write(answer())
        await writer.drain()


async def test_sequential_calls_share_one_kept_alive_connection(serve) -> None:
    server = await serve(keep_alive)
    transport = StsTransport()
    try:
        responses = [await post(transport, server.url) for _ in range(5)]
    finally:
        await transport.aclose()

    assert [r.status_code for r in responses] == [200] * 5
    assert [r.json()["Authorization"] for r in responses] == [AUTHORIZATION] * 5
    assert server.connections == 1
    first = server.requests[0]
    assert first.startswith(b"POST /v1/object-store-authorization HTTP/1.1\r\n")
    assert b"\r\nContent-Length: 16\r\n" in first
    assert first.endswith(b'\r\n\r\n{"method":"GET"}')


async def test_a_connection_the_server_closed_while_idle_is_replaced(serve) -> None:
    async def one_answer_then_close(server, reader, writer, _n) -> None:
        await server.read_request(reader)
        # No "Connection: close": the client learns only from the socket.
        writer.write(answer())
        await writer.drain()

    server = await serve(one_answer_then_close)
    transport = StsTransport()
    try:
        first = await post(transport, server.url)
        second = await post(transport, server.url)  # reused, found closed
        third = await post(transport, server.url)
    finally:
        await transport.aclose()

    assert [r.status_code for r in (first, second, third)] == [200, 200, 200]
    assert server.connections == 3
    assert len(server.requests) == 3  # none was lost or sent twice


async def test_chunked_and_unframed_answers_are_read_whole(serve) -> None:
    async def chunked(server, reader, writer, n) -> None:
        await server.read_request(reader)
        if n == 1:
            half = len(BODY) // 2
            body = b"%x;ext=1\r\n%s\r\n%x\r\n%s\r\n0\r\nX-Trailer: t\r\n\r\n" % (
                half,
                BODY[:half],
                len(BODY) - half,
                BODY[half:],
            )
            writer.write(answer(body, b"Transfer-Encoding: chunked"))
        else:
            # No length, no chunking: the body ends with the connection.
            writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + BODY)
        await writer.drain()

    server = await serve(chunked)
    transport = StsTransport()
    try:
        first = await post(transport, server.url)
        # The chunked answer left the connection reusable; the server closed
        # it anyway, so the second call is retried on connection 2.
        second = await post(transport, server.url)
        third = await post(transport, server.url)
    finally:
        await transport.aclose()

    assert first.json()["Authorization"] == AUTHORIZATION
    assert second.json()["Authorization"] == AUTHORIZATION
    assert third.json()["Authorization"] == AUTHORIZATION
    assert server.connections == 3  # the unframed answer's connection was not kept


async def test_errors_are_httpx_transport_errors(serve) -> None:
    async def silent(server, reader, writer, _n) -> None:
        await server.read_request(reader)
        await reader.read()  # never answers; returns when the client leaves

    async def garbage(server, reader, writer, _n) -> None:
        await server.read_request(reader)
        writer.write(b"SPDY/9 what\r\n\r\n")
        await writer.drain()

    async def hang_up(server, reader, writer, _n) -> None:
        await server.read_request(reader)

    server = await serve(silent)
    bad = await serve(garbage)
    hung = await serve(hang_up)
    closed = await serve(silent)
    closed_url = closed.url
    await closed.close()
    transport = StsTransport()
    try:
        with pytest.raises(httpx.ReadTimeout, match=r"ReadTimeout after 0.2 s"):
            await post(transport, server.url, seconds=0.2)
        with pytest.raises(httpx.RemoteProtocolError, match=r"not an HTTP/1.x"):
            await post(transport, bad.url)
        with pytest.raises(httpx.RemoteProtocolError, match=r"closed the connection"):
            await post(transport, hung.url)
        with pytest.raises(httpx.ConnectError, match=r"cannot connect to 127.0.0.1"):
            await post(transport, closed_url)
    finally:
        await transport.aclose()
    with pytest.raises(httpx.ConnectError, match=r"transport is closed"):
        await post(transport, server.url)


async def test_a_cancelled_call_does_not_return_its_connection(serve) -> None:
    answered = asyncio.Event()

    async def slow_then_fast(server, reader, writer, n) -> None:
        while True:
            await server.read_request(reader)
            if n == 1:
                answered.set()
                await reader.read()  # no answer: the client gives up first
                return
            writer.write(answer())
            await writer.drain()

    server = await serve(slow_then_fast)
    transport = StsTransport()
    try:
        call = asyncio.create_task(post(transport, server.url))
        await answered.wait()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        response = await post(transport, server.url)
    finally:
        await transport.aclose()
    assert response.status_code == 200
    assert server.connections == 2  # the half-used connection was dropped


async def test_sts_client_over_the_transport_retries_then_gives_up(serve) -> None:
    async def unavailable(server, reader, writer, _n) -> None:
        while True:
            await server.read_request(reader)
            body = b'{"errors":[{"code":"Busy","title":"busy"}]}'
            writer.write(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: %d\r\n\r\n%s"
                % (len(body), body)
            )
            await writer.drain()

    server = await serve(unavailable)
    endpoint = server.url.removesuffix("/v1/object-store-authorization")
    async with StsClient(
        endpoint, ScpCredentials("AK", "secret"), max_retries=2, backoff_base=0.001
    ) as client:
        with pytest.raises(StsUnavailable, match=r"503 Busy") as caught:
            await client.object_store_authorization(
                "GET", "http://h/b/k", DATE, "e" * 64
            )
    assert caught.value.title == "busy"
    assert len(server.requests) == 3  # first try and two retries
    assert server.connections == 1  # all on one kept-alive connection
    assert b"\r\nScp-Signature: " in server.requests[0]


async def test_https_with_a_trusted_certificate(serve, tmp_path: Path) -> None:
    server_tls, client_tls = tls_pair(tmp_path)
    server = await serve(keep_alive, server_tls)
    transport = StsTransport(ssl_context=client_tls)
    try:
        responses = [await post(transport, server.url) for _ in range(2)]
    finally:
        await transport.aclose()
    assert [r.json()["Authorization"] for r in responses] == [AUTHORIZATION] * 2
    assert server.connections == 1

    untrusting = StsTransport(ssl_context=ssl.create_default_context())
    try:
        with pytest.raises(httpx.ConnectError, match=r"CERTIFICATE_VERIFY_FAILED"):
            await post(untrusting, server.url)
    finally:
        await untrusting.aclose()


def tls_pair(directory: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A self-signed certificate for localhost: server and trusting client."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_file = directory / "cert.pem"
    key_file = directory / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cafile=str(cert_file))
    return server, client

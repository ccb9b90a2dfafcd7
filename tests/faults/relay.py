"""A recording hop: a tiny TCP relay between the proxy and the store.

Every byte is passed through unchanged; on the way to the store the relay
parses HTTP/1.1 framing (request heads, Content-Length and chunked bodies) so
that it can record the head of every request that reached the store.  The
fault tests assert that each one carries a signature.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass

_MAX_HEAD = 256 * 1024


@dataclass(frozen=True)
class RequestHead:
    """One request as the store saw it (method, target, header fields)."""

    method: str
    target: str
    headers: tuple[tuple[str, str], ...]

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    @property
    def signed(self) -> bool:
        authorization = self.header("authorization") or ""
        return (
            authorization.startswith("AWS4-HMAC-SHA256 ")
            and "Signature=" in authorization
        ) or "X-Amz-Signature=" in self.target


class RequestParser:
    """Incremental HTTP/1.1 request framing; records heads, skips bodies."""

    def __init__(self) -> None:
        self.heads: list[RequestHead] = []
        self.errors: list[str] = []
        self._buffer = bytearray()
        self._body_left = 0
        self._chunked = False
        self._chunk_state = "size"  # size | data | data_crlf | trailer

    def feed(self, data: bytes) -> None:
        if self.errors:
            return
        self._buffer += data
        try:
            while self._step():
                pass
        except ValueError as error:
            self.errors.append(str(error))

    def _step(self) -> bool:
        if self._chunked:
            return self._chunk_step()
        if self._body_left:
            taken = min(self._body_left, len(self._buffer))
            del self._buffer[:taken]
            self._body_left -= taken
            return bool(taken) and bool(self._buffer)
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > _MAX_HEAD:
                raise ValueError("request head too long")
            return False
        head = bytes(self._buffer[:end]).decode("latin-1")
        del self._buffer[: end + 4]
        self._parse_head(head)
        return True

    def _parse_head(self, head: str) -> None:
        request_line, *lines = head.split("\r\n")
        parts = request_line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise ValueError(f"not an HTTP/1.1 request line: {request_line[:80]!r}")
        headers = []
        for line in lines:
            name, colon, value = line.partition(":")
            if not colon:
                raise ValueError(f"bad header line {line[:80]!r}")
            headers.append((name.strip(), value.strip()))
        record = RequestHead(parts[0], parts[1], tuple(headers))
        self.heads.append(record)
        encoding = (record.header("transfer-encoding") or "").lower()
        if "chunked" in encoding:
            self._chunked = True
            self._chunk_state = "size"
        else:
            self._body_left = int(record.header("content-length") or "0")

    def _chunk_step(self) -> bool:
        if self._chunk_state == "data":
            if not self._buffer:
                return False
            taken = min(self._body_left, len(self._buffer))
            del self._buffer[:taken]
            self._body_left -= taken
            if self._body_left == 0:
                self._chunk_state = "data_crlf"
            return True
        end = self._buffer.find(b"\r\n")
        if end < 0:
            return False
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 2]
        if self._chunk_state == "data_crlf":
            self._chunk_state = "size"
        elif self._chunk_state == "size":
            size = int(line.split(b";")[0], 16)
            if size:
                self._body_left = size
                self._chunk_state = "data"
            else:
                self._chunk_state = "trailer"
        elif not line:  # the empty line that ends the trailer
            self._chunked = False
        return True


class RecordingRelay:
    """Listens on a free loopback port and relays to `upstream_port`."""

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.parsers: list[RequestParser] = []
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def heads(self) -> list[RequestHead]:
        with self._lock:
            return [head for parser in self.parsers for head in parser.heads]

    @property
    def errors(self) -> list[str]:
        with self._lock:
            return [error for parser in self.parsers for error in parser.errors]

    def unsigned(self) -> list[RequestHead]:
        return [head for head in self.heads if not head.signed]

    async def _serve(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        parser = RequestParser()
        with self._lock:
            self.parsers.append(parser)
        try:
            store_reader, store_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(
            _pipe(client_reader, store_writer, parser),
            _pipe(store_reader, client_writer, None),
        )

    @contextlib.contextmanager
    def run_in_thread(self) -> Iterator[RecordingRelay]:
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        server: list[asyncio.Server] = []

        def run() -> None:
            asyncio.set_event_loop(loop)

            async def start() -> None:
                started = await asyncio.start_server(self._serve, "127.0.0.1", 0)
                server.append(started)
                self.port = started.sockets[0].getsockname()[1]

            loop.run_until_complete(start())
            ready.set()
            loop.run_forever()
            server[0].close()
            for task in asyncio.all_tasks(loop):
                task.cancel()
            with contextlib.suppress(Exception):
                loop.run_until_complete(asyncio.sleep(0))
            loop.close()

        thread = threading.Thread(target=run, name="recording-relay", daemon=True)
        thread.start()
        if not ready.wait(10):
            raise RuntimeError("the recording relay did not start")
        self._loop = loop
        try:
            yield self
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)


async def _pipe(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    parser: RequestParser | None,
) -> None:
    try:
        while data := await reader.read(65536):
            if parser is not None:
                parser.feed(data)
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()

"""Clients for the fault suite: boto3 with dummy keys, and a raw HTTP client
that can upload slowly or hang up half-way."""

from __future__ import annotations

import base64
import hashlib
import http.client
import socket
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass

from botocore.client import BaseClient

from tests import s3clients

DUMMY_KEY = "AKIDFAULTSDUMMY00000"
DUMMY_SECRET = "dummy-secret-for-fault-tests"


def s3_client(endpoint: str, **config: object) -> BaseClient:
    return s3clients.s3_client(
        endpoint,
        access_key=DUMMY_KEY,
        secret_key=DUMMY_SECRET,
        connect_timeout=10,
        read_timeout=60,
        **config,
    )


def md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()  # noqa: S324


def payload(size: int, seed: int) -> bytes:
    block = hashlib.sha256(f"{seed}".encode()).digest() * 2048  # 64 KiB
    return (block * (size // len(block) + 1))[:size]


@dataclass
class Answer:
    """What a raw request got back: a status and body, or a broken connection."""

    status: int | None
    headers: dict[str, str]
    body: bytes
    error: str | None = None

    def s3_error_code(self) -> str:
        """The <Code> of an S3 XML error body; AssertionError if not XML."""
        assert self.headers.get("content-type", "").startswith("application/xml"), self
        root = ET.fromstring(self.body)  # noqa: S314 - our own proxy's answer
        assert root.tag == "Error", self.body[:200]
        code = root.findtext("Code")
        assert code, self.body[:200]
        assert root.findtext("RequestId"), self.body[:200]
        return code


def raw_put(
    host: str,
    port: int,
    path: str,
    data: bytes,
    *,
    piece: int = 256 * 1024,
    between: Callable[[int], None] | None = None,
    send_only: int | None = None,
) -> Answer:
    """PUT `data` with Content-Length and Content-MD5 in `piece`-sized writes.

    `between(i)` runs after piece i was written (the client is "slow" while
    it runs).  `send_only=n` hangs up after n bytes, without reading an answer.
    """
    conn = http.client.HTTPConnection(host, port, timeout=120)
    try:
        conn.putrequest("PUT", path, skip_accept_encoding=True)
        conn.putheader("Content-Length", str(len(data)))
        conn.putheader("Content-MD5", md5_b64(data))
        conn.endheaders()
        limit = len(data) if send_only is None else send_only
        for index, start in enumerate(range(0, limit, piece)):
            conn.send(data[start : min(start + piece, limit)])
            if between is not None:
                between(index)
        if send_only is not None:
            conn.sock.shutdown(socket.SHUT_RDWR)
            return Answer(None, {}, b"", "hung up on purpose")
        response = conn.getresponse()
        headers = {k.lower(): v for k, v in response.getheaders()}
        return Answer(response.status, headers, response.read())
    except (OSError, http.client.HTTPException) as error:
        return Answer(None, {}, b"", f"{type(error).__name__}: {error}")
    finally:
        conn.close()

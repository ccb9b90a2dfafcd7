"""A 1 GiB upload and download through the proxy in bounded memory.

The body is generated block by block from a seeded generator, never held
whole: once to learn its MD5, once to send it.  The proxy (local signer)
streams it to SeaweedFS as signed aws-chunked; Content-MD5 lets the store
check every byte.  The download streams back and is hashed as it arrives.
The proxy's peak resident memory (VmHWM of its process) must stay far below
the body size: a bound on memory, not a timing.
"""

from __future__ import annotations

import base64
import hashlib
import random
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

BODY_SIZE = 1024 * 1024 * 1024
BLOCK = 1024 * 1024
MEMORY_BOUND = BODY_SIZE // 4  # far below the body; a few chunks are expected


def blocks(seed: int) -> Iterator[bytes]:
    generator = random.Random(seed)
    for _ in range(BODY_SIZE // BLOCK):
        yield generator.randbytes(BLOCK)


def digests(seed: int) -> tuple[str, str]:
    md5, sha256 = hashlib.md5(), hashlib.sha256()  # noqa: S324 - Content-MD5
    for block in blocks(seed):
        md5.update(block)
        sha256.update(block)
    return base64.b64encode(md5.digest()).decode(), sha256.hexdigest()


def peak_rss(pid: int) -> int:
    """VmHWM of a process, in bytes."""
    status = Path(f"/proc/{pid}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_one_gib_round_trip_in_bounded_proxy_memory(store, start_proxy):
    proxy = start_proxy(signer="local")
    bucket = f"big-{uuid.uuid4().hex[:12]}"
    assert httpx.put(f"{proxy.endpoint}/{bucket}").status_code == 200
    seed = random.randrange(2**32)
    content_md5, sha256 = digests(seed)
    url = f"{proxy.endpoint}/{bucket}/one-gib.bin"

    with httpx.Client(timeout=300) as client:
        response = client.put(
            url,
            content=blocks(seed),
            headers={"content-length": str(BODY_SIZE), "content-md5": content_md5},
        )
        assert response.status_code == 200, response.text
        after_upload = peak_rss(proxy.process.pid)

        received, digest = 0, hashlib.sha256()
        with client.stream("GET", url) as download:
            assert download.status_code == 200
            for block in download.iter_bytes(BLOCK):
                received += len(block)
                digest.update(block)
        after_download = peak_rss(proxy.process.pid)
        client.delete(url)

    assert received == BODY_SIZE
    assert digest.hexdigest() == sha256
    assert after_upload < MEMORY_BOUND, f"proxy peak RSS {after_upload} bytes"
    assert after_download < MEMORY_BOUND, f"proxy peak RSS {after_download} bytes"
    assert "payload=chunked_signed" in proxy.log_text()

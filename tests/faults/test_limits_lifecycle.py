"""Limits and the life cycle of a running proxy (real processes).

--max-header-size, --max-connections and --idle-timeout answer in S3's words
or close idle connections; SIGTERM stops accepting, reports not-ready on the
management port, lets the request in flight finish, and exits 0.
"""

from __future__ import annotations

import signal
import socket
import threading
import uuid

import httpx
import pytest

from signproxy.seaweed import free_port
from tests.faults.helpers import payload, raw_put, s3_client
from tests.fixtures.proxy import StartProxy
from tests.polling import poll

DEADLINE = 30.0


def test_oversized_request_head_gets_431(start_proxy: StartProxy) -> None:
    proxy = start_proxy(max_header_size="8KiB")
    answer = httpx.get(
        f"{proxy.endpoint}/bucket", headers={"x-amz-meta-big": "v" * 10_000}
    )
    assert answer.status_code == 431
    assert "<Code>RequestHeaderSectionTooLarge</Code>" in answer.text
    assert "--max-header-size" in answer.text


def test_requests_beyond_max_connections_get_slow_down(
    start_proxy: StartProxy,
) -> None:
    proxy = start_proxy(max_connections="1", hash_limit="1MiB")
    s3 = s3_client(proxy.endpoint)
    bucket = f"l-{uuid.uuid4().hex[:20]}"
    s3.create_bucket(Bucket=bucket)
    seen: list[httpx.Response] = []

    def while_in_flight(index: int) -> None:
        if index == 1:
            seen.append(httpx.get(f"{proxy.endpoint}/{bucket}", timeout=30))

    answer = raw_put(
        proxy.host,
        proxy.port,
        f"/{bucket}/held",
        payload(4 * 1024 * 1024, 1),
        between=while_in_flight,
    )
    assert answer.status == 200, answer
    assert seen[0].status_code == 503
    assert "<Code>SlowDown</Code>" in seen[0].text
    assert seen[0].headers["retry-after"] == "1"
    assert httpx.get(f"{proxy.endpoint}/{bucket}", timeout=30).status_code == 200


def test_idle_connection_is_closed(start_proxy: StartProxy) -> None:
    proxy = start_proxy(idle_timeout="1")
    with socket.create_connection((proxy.host, proxy.port), timeout=DEADLINE) as sock:
        # Says nothing; the proxy hangs up (recv returns b"" on close).
        assert sock.recv(1024) == b""


def test_sigterm_drains_in_flight_request_then_exits_zero(
    start_proxy: StartProxy,
) -> None:
    metrics_port = free_port()
    proxy = start_proxy(metrics_listen=f"127.0.0.1:{metrics_port}", drain_seconds="60")
    readyz = f"http://127.0.0.1:{metrics_port}/readyz"

    def ready() -> bool:
        try:
            return httpx.get(readyz, timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    poll(ready, "/readyz reports ready")
    s3 = s3_client(proxy.endpoint)
    bucket = f"d-{uuid.uuid4().hex[:20]}"
    s3.create_bucket(Bucket=bucket)
    data = payload(2 * 1024 * 1024, 3)
    release = threading.Event()
    answers = []

    def hold_after_first_piece(index: int) -> None:
        if index == 0:
            release.wait(DEADLINE)

    uploader = threading.Thread(
        target=lambda: answers.append(
            raw_put(
                proxy.host,
                proxy.port,
                f"/{bucket}/drained",
                data,
                between=hold_after_first_piece,
            )
        )
    )
    prepared = proxy.log_text().count(": payload=")  # one debug line per request
    uploader.start()
    poll(
        lambda: proxy.log_text().count(": payload=") > prepared,
        "the PUT is in flight in the proxy",
    )
    proxy.process.send_signal(signal.SIGTERM)

    def not_ready() -> bool:
        try:
            answer = httpx.get(readyz, timeout=5)
        except httpx.TransportError:
            return False
        return answer.status_code == 503 and "draining" in answer.text

    poll(not_ready, "/readyz reports draining")

    def refuses_new_connections() -> bool:
        try:
            socket.create_connection((proxy.host, proxy.port), timeout=1).close()
        except OSError:
            return True
        return False

    poll(refuses_new_connections, "no longer accepting")
    assert proxy.process.poll() is None  # still draining
    release.set()
    uploader.join(DEADLINE)
    assert answers[0].status == 200, answers[0]
    assert proxy.process.wait(timeout=DEADLINE) == 0
    assert "Traceback" not in proxy.log_text()


@pytest.mark.parametrize("value", ["-1", "soon"])
def test_bad_limit_is_named(value: str) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "signproxy.cli", "run", "--upstream",
         "http://127.0.0.1:9", "--drain-seconds", value],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert f"--drain-seconds: invalid value '{value}'" in result.stderr

"""`signproxy run --workers N`: several processes serving one port.

Real proxies against the session's SeaweedFS: the requests must be served
by both worker processes (their pids are in the JSON access lines), SIGTERM
must stop everything with exit 0, and a worker that dies must end the whole
proxy with exit 1 rather than leave it running half-staffed.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from pathlib import Path

import httpx
import pytest

from signproxy.options import OptionError, resolve
from signproxy.seaweed import Identity, LocalStore, free_port
from tests.fixtures.proxy import RunningProxy, StartProxy, proxy_command
from tests.polling import poll

DEADLINE = 30.0


def log_entries(proxy: RunningProxy) -> list[dict]:
    entries = []
    for line in proxy.log_text().splitlines():
        if line.startswith("{"):
            entries.append(json.loads(line))
    return entries


def listening_workers(proxy: RunningProxy) -> set[int]:
    return {
        entry["worker_pid"]
        for entry in log_entries(proxy)
        if entry["message"].startswith("signproxy listening on")
    }


def parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rpartition(")")[2].split()[1])


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting for its reaper does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def test_two_workers_serve_one_port_and_stop_on_sigterm(
    start_proxy: StartProxy,
) -> None:
    proxy = start_proxy(workers=2, log_format="json", log_level="info")
    poll(lambda: len(listening_workers(proxy)) == 2, "two workers")
    workers = listening_workers(proxy)
    assert {parent_of(pid) for pid in workers} == {proxy.process.pid}

    served: set[int] = set()

    def both_served() -> bool:
        # A new connection each time: the kernel spreads connections.
        response = httpx.get(proxy.endpoint + "/", headers={"connection": "close"})
        assert response.status_code == 200, response.text
        served.update(
            entry["worker_pid"]
            for entry in log_entries(proxy)
            if entry["logger"] == "signproxy.access"
        )
        return served == workers

    poll(both_served, "requests served by both workers")

    assert proxy.stop() == 0
    assert not any(alive(pid) for pid in workers)
    messages = [entry["message"] for entry in log_entries(proxy)]
    assert any(m.startswith("signproxy: 2 workers (pids ") for m in messages)
    assert "signproxy: all workers stopped" in messages


def start_unsupervised(
    store: LocalStore, store_identity: Identity, tmp_path: Path
) -> RunningProxy:
    """Two workers, not under the start_proxy fixture (which wants exit 0)."""
    port = free_port()
    log_path = tmp_path / "workers.log"
    environ = {
        k: v for k, v in os.environ.items() if not k.startswith(("SIGNPROXY_", "SCP_"))
    }
    environ["SCP_ACCESS_KEY"] = store_identity.access_key
    environ["SCP_SECRET_KEY"] = store_identity.secret_key
    args = proxy_command(
        upstream=store.endpoint,
        signer="local",
        listen=f"127.0.0.1:{port}",
        workers=2,
        log_format="json",
    )
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, env=environ
        )
    proxy = RunningProxy(
        f"http://127.0.0.1:{port}", "127.0.0.1", port, log_path, process, args
    )
    poll(lambda: len(listening_workers(proxy)) == 2, "two workers")
    return proxy


def test_a_dead_worker_stops_the_proxy_with_exit_1(
    store: LocalStore, store_identity: Identity, tmp_path: Path
) -> None:
    proxy = start_unsupervised(store, store_identity, tmp_path)
    try:
        victim, other = sorted(listening_workers(proxy))
        os.kill(victim, signal.SIGKILL)
        assert proxy.process.wait(timeout=DEADLINE) == 1
    finally:
        if proxy.process.poll() is None:
            proxy.process.kill()
            proxy.process.wait()
    assert not alive(other)
    errors = [e["message"] for e in log_entries(proxy) if e["level"] == "error"]
    assert any(
        f"(pid {victim}) ended on its own (signal 9)" in message for message in errors
    ), errors


def test_workers_stop_when_the_parent_is_killed(
    store: LocalStore, store_identity: Identity, tmp_path: Path
) -> None:
    proxy = start_unsupervised(store, store_identity, tmp_path)
    workers = listening_workers(proxy)
    proxy.process.kill()
    proxy.process.wait()
    poll(lambda: not any(alive(pid) for pid in workers), "orphaned workers to stop")
    with pytest.raises(httpx.ConnectError, match=r"refused"):
        httpx.get(proxy.endpoint + "/")


def test_a_taken_port_fails_start_up(
    store: LocalStore, store_identity: Identity
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        environ = {
            k: v for k, v in os.environ.items() if not k.startswith("SIGNPROXY_")
        }
        environ["SCP_ACCESS_KEY"] = store_identity.access_key
        environ["SCP_SECRET_KEY"] = store_identity.secret_key
        completed = subprocess.run(
            proxy_command(
                upstream=store.endpoint,
                signer="local",
                listen=f"127.0.0.1:{port}",
                workers=2,
            ),
            capture_output=True,
            text=True,
            env=environ,
            timeout=DEADLINE,
            check=False,
        )
    assert completed.returncode == 1
    assert f"unable to listen on 127.0.0.1:{port}" in completed.stderr


@pytest.mark.parametrize("value", ["0", "65", "two"])
def test_workers_option_is_checked(value: str) -> None:
    with pytest.raises(OptionError, match=rf"--workers: invalid value '{value}'"):
        resolve({"upstream": "http://127.0.0.1:8333", "workers": value}, environ={})

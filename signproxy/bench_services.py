"""The processes a benchmark starts: emulator, signproxy, stock mitmdump.

Each runs in its own process (so its CPU is its own and can be measured
from /proc), bound to 127.0.0.1 on a free port, and is polled until it
answers; nothing sleeps a fixed time.  `Services` stops everything it
started, by process group, in reverse order.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from signproxy.seaweed import Identity, free_port

logger = logging.getLogger(__name__)

READY_TIMEOUT = 60.0


@dataclass
class Service:
    """A started process and where it listens."""

    name: str
    process: subprocess.Popen[bytes]
    host: str
    port: int
    log_path: Path
    facts: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def host_header(self) -> str:
        return f"{self.host}:{self.port}"

    def log_tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text().splitlines()[-lines:])
        return ""


def signproxy_command(*args: str) -> list[str]:
    """`signproxy ARGS...` with this interpreter."""
    return [sys.executable, "-m", "signproxy.cli", *args]


def random_identity(name: str = "bench") -> Identity:
    return Identity(
        name=name,
        access_key="AKBN" + secrets.token_hex(8).upper(),
        secret_key=secrets.token_urlsafe(30),
    )


@dataclass
class Services:
    """Starts processes for one benchmark part and stops them all at the end."""

    work_dir: Path | None = None
    started: list[Service] = field(default_factory=list)
    _owned: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> Services:
        if self.work_dir is None:
            self._owned = tempfile.TemporaryDirectory(prefix="signproxy-bench-")
            self.work_dir = Path(self._owned.name)
        return self

    def __exit__(self, *exc: object) -> None:
        for service in reversed(self.started):
            stop_process(service.process)
        self.started.clear()
        if self._owned is not None:
            self._owned.cleanup()

    @property
    def dir(self) -> Path:
        assert self.work_dir is not None, "use Services as a context manager"
        return self.work_dir

    def file(self, name: str, text: str) -> Path:
        path = self.dir / name
        path.write_text(text)
        path.chmod(0o600)
        return path

    def start(
        self,
        name: str,
        args: Sequence[str],
        port: int,
        env: dict[str, str] | None = None,
        host: str = "127.0.0.1",
    ) -> Service:
        """Start `args`, which must listen on host:port; wait until it accepts."""
        log_path = self.dir / f"{name}.log"
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                list(args),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                start_new_session=True,
                cwd=self.dir,
            )
        service = Service(name, process, host, port, log_path)
        self.started.append(service)
        wait_listening(service)
        return service

    def emulator(self, identity: Identity, store: str | None = None) -> Service:
        """`signproxy emulator` with one account whose keys are `identity`'s."""
        from signproxy.emulator import Account, accounts_toml

        account = Account(
            access_key=identity.access_key,
            secret_key=identity.secret_key,
            account_id=secrets.token_hex(16) + "a",
            roles=(ROLE_NAME,),
        )
        accounts = self.file("accounts.toml", accounts_toml([account]))
        port = free_port()
        args = ["emulator", "--listen", f"127.0.0.1:{port}", "--accounts"]
        args += [str(accounts), "--log-level", "warning"]
        if store is not None:
            args += ["--store", store]
        service = self.start("emulator", signproxy_command(*args), port)
        service.facts["account_id"] = account.account_id
        return service

    def mitmdump(self, upstream: str) -> Service:
        """Stock `mitmdump --mode reverse:UPSTREAM`, no addon, default options."""
        mitmdump = shutil.which("mitmdump") or str(
            Path(sys.executable).parent / "mitmdump"
        )
        port = free_port()
        args = [mitmdump, "--mode", f"reverse:{upstream}"]
        args += ["--listen-host", "127.0.0.1", "--listen-port", str(port)]
        args += ["--set", f"confdir={self.dir / 'mitmproxy'}"]
        return self.start("mitmdump", args, port)


ROLE_NAME = "bench-role"
OFFERING = "bench"


def role_indicator(account_id: str) -> str:
    return f"{OFFERING}:{account_id}:{ROLE_NAME}"


def wait_listening(service: Service, timeout: float = READY_TIMEOUT) -> None:
    """Poll until service accepts TCP connections; raise if it exits or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            raise RuntimeError(
                f"{service.name} exited with {service.process.returncode} before "
                f"listening; its log ends:\n{service.log_tail()}"
            )
        with contextlib.suppress(OSError):
            socket.create_connection((service.host, service.port), 0.5).close()
            return
        time.sleep(0.05)
    raise RuntimeError(
        f"{service.name} did not listen on {service.host_header} within "
        f"{timeout:.0f}s; its log ends:\n{service.log_tail()}"
    )


def stop_process(process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM the process group, then SIGKILL if it lingers."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()

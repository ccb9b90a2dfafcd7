"""`signproxy demo` as a user runs it: a subprocess, its ready line, a client.

Each run starts its own SeaweedFS (with `--data-dir` in the test's tmp
directory, so its `weed` process can be told apart from the session store's),
the STS emulator and the proxy.  A boto3 client holding only the printed dummy
keys must work through the printed endpoint; a signal must stop the demo with
status 0 and leave no `weed` process behind; the store's real secret must not
appear in anything the demo printed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import httpx
import pytest
from botocore.client import BaseClient
from botocore.config import Config

from signproxy import demo
from signproxy.seaweed import free_port

READY_TIMEOUT = 90.0
STOP_TIMEOUT = 60.0
READY_LINE = re.compile(
    r"^signproxy demo: ready endpoint=(?P<endpoint>\S+) "
    r"access_key=(?P<access_key>\S+) secret_key=(?P<secret_key>\S+) "
    r"bucket=(?P<bucket>\S+) signer=(?P<signer>\S+)$",
    re.MULTILINE,
)


@dataclass
class DemoProcess:
    process: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path
    data_dir: Path

    def output(self) -> str:
        return self.stdout.read_text(errors="replace") + self.stderr.read_text(
            errors="replace"
        )

    def wait_ready(self) -> re.Match[str]:
        """Poll stdout for the ready line; fail early if the demo exits."""
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            found = READY_LINE.search(self.stdout.read_text(errors="replace"))
            if found:
                return found
            if self.process.poll() is not None:
                raise AssertionError(
                    f"demo exited with {self.process.returncode} before ready:\n"
                    + self.output()[-4000:]
                )
            time.sleep(0.1)
        raise AssertionError(f"demo not ready in {READY_TIMEOUT}s:\n{self.output()}")

    def wait_exit(self) -> int:
        try:
            return self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError("demo did not stop:\n" + self.output()) from None


def weed_processes(data_dir: Path) -> list[int]:
    """Pids of `weed` processes whose command line names `data_dir`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # the process ended meanwhile
            continue
        if (
            argv
            and argv[0].endswith(b"weed")
            and str(data_dir).encode() in b"".join(argv)
        ):
            pids.append(int(entry.name))
    return pids


def demo_environ() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SIGNPROXY_", "SCP_", "AWS_"))
    }


@pytest.fixture
def start_demo(tmp_path: Path) -> Iterator:
    started: list[DemoProcess] = []

    def start(*args: str) -> DemoProcess:
        n = len(started)
        data_dir = tmp_path / f"store-{n}"
        out, err = tmp_path / f"demo-{n}.out", tmp_path / f"demo-{n}.err"
        with open(out, "wb") as stdout, open(err, "wb") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-m", "signproxy.cli", "demo", *args,
                 "--data-dir", str(data_dir)],
                stdout=stdout,
                stderr=stderr,
                stdin=subprocess.DEVNULL,
                env=demo_environ(),
            )  # fmt: skip
        running = DemoProcess(process, out, err, data_dir)
        started.append(running)
        return running

    yield start
    for running in started:
        if running.process.poll() is None:
            running.process.kill()
            running.process.wait()
        for pid in weed_processes(running.data_dir):  # never leave one behind
            os.kill(pid, signal.SIGKILL)


def client_for(ready: re.Match[str]) -> BaseClient:
    """boto3 with exactly what the demo printed, default checksum settings."""
    return boto3.client(
        "s3",
        endpoint_url=ready["endpoint"],
        aws_access_key_id=ready["access_key"],
        aws_secret_access_key=ready["secret_key"],
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}),
    )


def signing_counts(metrics_endpoint: str) -> dict[str, float]:
    text = httpx.get(metrics_endpoint + "/metrics").text
    return {
        m["signer"]: float(m["count"])
        for m in re.finditer(
            r'^signproxy_signing_duration_seconds_count\{signer="(?P<signer>\w+)"\} '
            r"(?P<count>\S+)$",
            text,
            re.MULTILINE,
        )
    }


@pytest.mark.parametrize(
    ("signer", "signum"),
    [("local", signal.SIGTERM), ("remote", signal.SIGINT)],
)
def test_demo_serves_boto3_with_the_printed_keys_then_stops_clean(
    start_demo, signer, signum
):
    port, metrics_port = free_port(), free_port()
    running = start_demo(
        "--listen", f"127.0.0.1:{port}",
        "--signer", signer,
        "--metrics-listen", f"127.0.0.1:{metrics_port}",
    )  # fmt: skip
    ready = running.wait_ready()
    assert ready["endpoint"] == f"http://127.0.0.1:{port}"
    assert ready["signer"] == signer
    assert f"aws s3 cp README.md s3://{ready['bucket']}/README.md --endpoint-url " \
        f"http://127.0.0.1:{port}" in running.output()  # fmt: skip
    stores = weed_processes(running.data_dir)
    assert len(stores) == 1, stores

    s3 = client_for(ready)
    # The demo's own round trip left its object in the printed bucket.
    checked = s3.get_object(Bucket=ready["bucket"], Key=demo.ROUND_TRIP_KEY)
    assert checked["Body"].read().startswith(b"signproxy demo round trip")

    body = os.urandom(3 * 1024 * 1024 + 17)
    s3.put_object(Bucket=ready["bucket"], Key="from boto3/ü+.bin", Body=body)
    got = s3.get_object(Bucket=ready["bucket"], Key="from boto3/ü+.bin")["Body"]
    assert hashlib.sha256(got.read()).digest() == hashlib.sha256(body).digest()
    listed = s3.list_objects_v2(Bucket=ready["bucket"], Prefix="from boto3/")
    assert [o["Key"] for o in listed["Contents"]] == ["from boto3/ü+.bin"]

    counts = signing_counts(f"http://127.0.0.1:{metrics_port}")
    assert counts.get(signer, 0) > 0, counts
    if signer == "remote":
        # boto3's checksum headers are x-amz-*: the remote signature cannot
        # cover them, so assume-role credentials signed those uploads.
        assert counts.get("local", 0) > 0, counts

    running.process.send_signal(signum)
    assert running.wait_exit() == 0, running.output()[-4000:]
    assert weed_processes(running.data_dir) == []
    assert "signproxy demo stopping" in running.output()

    config = json.loads((running.data_dir / "s3.json").read_text())
    secret = config["identities"][0]["credentials"][0]["secretKey"]
    assert len(secret) >= 30
    assert secret not in running.output()


def test_bad_option_stops_before_anything_starts(start_demo):
    running = start_demo("--payload", "sometimes")
    assert running.wait_exit() == 2
    assert "--payload: invalid value 'sometimes'" in running.output()
    assert not running.data_dir.exists()  # no store was started


def test_taken_port_fails_and_stops_the_store(start_demo):
    port = free_port()

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        running = start_demo("--listen", f"127.0.0.1:{port}")
        assert running.wait_exit() == 1
    assert "unable to listen on 127.0.0.1:" in running.output()
    assert (running.data_dir / "s3.json").exists()  # the store did start
    assert weed_processes(running.data_dir) == []

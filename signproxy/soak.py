"""A bounded soak: steady load on a running proxy while its RSS and open file
descriptors are sampled from /proc.

The verdict is a resource bound, not a timing: over the second half of the
run (after warm-up) the number of open fds must not grow beyond a small
slack and RSS must not grow by more than a generous bound.  `signproxy soak`
starts its own SeaweedFS and proxy; `soak()` works on any proxy given its
endpoint and pid (the tests use their own proxy).
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

FD_SLACK = 8  # connections opening and closing between samples
RSS_GROWTH_LIMIT = 32 * 1024 * 1024  # bytes, over the second half


@dataclass(frozen=True)
class Sample:
    seconds: float
    rss_bytes: int
    open_fds: int


@dataclass
class SoakReport:
    duration: float
    requests: int = 0
    failures: int = 0
    samples: list[Sample] = field(default_factory=list)

    def second_half(self) -> list[Sample]:
        return self.samples[len(self.samples) // 2 :]

    @property
    def fd_growth(self) -> int:
        half = self.second_half()
        return max(s.open_fds for s in half) - half[0].open_fds

    @property
    def rss_growth(self) -> int:
        half = self.second_half()
        return max(s.rss_bytes for s in half) - half[0].rss_bytes

    @property
    def flat(self) -> bool:
        return (
            len(self.samples) >= 4
            and self.failures == 0
            and self.fd_growth <= FD_SLACK
            and self.rss_growth <= RSS_GROWTH_LIMIT
        )

    def summary(self) -> dict[str, object]:
        return {
            "duration": self.duration,
            "requests": self.requests,
            "failures": self.failures,
            "fd_growth_second_half": self.fd_growth,
            "rss_growth_second_half": self.rss_growth,
            "flat": self.flat,
            "samples": [asdict(s) for s in self.samples],
        }


def sample(pid: int, started: float) -> Sample:
    """RSS (VmRSS) and the number of open fds of process `pid`."""
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return Sample(round(time.monotonic() - started, 2), rss, fds)


def soak(
    endpoint: str,
    pid: int,
    duration: float,
    *,
    interval: float = 1.0,
    concurrency: int = 4,
    object_size: int = 64 * 1024,
) -> SoakReport:
    """PUT/GET/DELETE loops through the proxy at `endpoint` for `duration` s."""
    import boto3
    from botocore.config import Config

    report = SoakReport(duration)
    lock = threading.Lock()
    stop = threading.Event()
    bucket = "soak-" + secrets.token_hex(8)
    config = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1})

    def client():  # -> botocore client; dummy keys, the proxy signs
        return boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="AKIDSOAKDUMMY0000000",
            aws_secret_access_key="soak-dummy-secret",  # noqa: S106 - thrown away
            region_name="us-east-1",
            config=config,
        )

    client().create_bucket(Bucket=bucket)

    def worker(number: int) -> None:
        s3 = client()
        data = hashlib.sha256(str(number).encode()).digest() * (object_size // 32)
        index = 0
        while not stop.is_set():
            key = f"w{number}/{index % 50}"
            ok = True
            try:
                s3.put_object(Bucket=bucket, Key=key, Body=data)
                ok = s3.get_object(Bucket=bucket, Key=key)["Body"].read() == data
                if index % 3 == 0:
                    s3.delete_object(Bucket=bucket, Key=key)
            except Exception:
                logger.exception("soak request failed")
                ok = False
            with lock:
                report.requests += 3 if index % 3 == 0 else 2
                report.failures += 0 if ok else 1
            index += 1

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(concurrency)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    try:
        while time.monotonic() - started < duration:
            report.samples.append(sample(pid, started))
            stop.wait(interval)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    return report

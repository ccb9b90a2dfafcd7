"""`signproxy bench upload`: one large PUT per payload mode, proxied and direct.

The body is generated block by block (a fixed pseudo-random MiB, repeated)
and streamed from a socket: it is never held in memory, by the client or,
if the proxy streams, by the proxy.  Payload modes, as the client sends
them:

- `signed`: aws-chunked with chunk signatures
  (STREAMING-AWS4-HMAC-SHA256-PAYLOAD), 64 KiB chunks as the AWS CLI sends;
- `unsigned`: UNSIGNED-PAYLOAD;
- `client-hash`: the body's SHA-256 in x-amz-content-sha256 (computed
  before the timed upload, by streaming the generator once).

Each mode goes through signproxy (the client signs with dummy keys) and
straight to the store (signed for it), at `--size` and at a quarter of it.
Cases: `upload/local-<mode>-<size>` in MiB/s against
`upload/direct-<mode>-<size>`, and `upload/local-<mode>-<size>-rss`, the
proxy's peak resident memory during that upload; the large size's RSS case
has the small size's as its baseline, so a ratio near 1 shows memory that
does not grow with the body.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from signproxy import chunked, sigv4
from signproxy.bench import (
    LOWER,
    Case,
    Failures,
    Progress,
    describe_http_error,
    size_label,
)
from signproxy.bench_proxy import (
    BUCKET,
    REGION,
    Target,
    bench_store,
    direct_target,
    prepare_store,
    start_signproxy,
)
from signproxy.bench_services import Services
from signproxy.seaweed import Identity

BLOCK = 1 << 20
CLIENT_CHUNK = 64 * 1024
MODES = ("signed", "unsigned", "client-hash")
MIB = float(1 << 20)


def body_blocks(size: int) -> Iterator[bytes]:
    """`size` bytes of a fixed pseudo-random MiB, repeated, one block at a time."""
    block = random.Random(20240901).randbytes(BLOCK)
    full, rest = divmod(size, BLOCK)
    for _ in range(full):
        yield block
    if rest:
        yield block[:rest]


def body_sha256(size: int) -> str:
    digest = hashlib.sha256()
    for block in body_blocks(size):
        digest.update(block)
    return digest.hexdigest()


@dataclass
class Upload:
    """One prepared PUT: its request head and how to frame its body."""

    head: bytes
    size: int
    encoder: chunked.StreamEncoder | None


def prepare_upload(target: Target, mode: str, size: int, key: str) -> Upload:
    headers = [("host", target.host_header), ("user-agent", "signproxy-bench/1")]
    if mode == "signed":
        headers += [
            ("content-encoding", "aws-chunked"),
            ("x-amz-decoded-content-length", str(size)),
        ]
        payload_hash = sigv4.STREAMING_SIGNED
        length = chunked.encoded_length(size, CLIENT_CHUNK, signed=True)
    elif mode == "unsigned":
        payload_hash, length = sigv4.UNSIGNED_PAYLOAD, size
    elif mode == "client-hash":
        payload_hash, length = body_sha256(size), size
    else:
        raise ValueError(f"unknown payload mode {mode!r}: choose {', '.join(MODES)}")
    signed = sigv4.Signer(REGION).sign(
        "PUT",
        f"/{BUCKET}/{key}",
        "",
        headers,
        payload_hash,
        target.credentials,
        datetime.now(UTC),
    )
    encoder = None
    if mode == "signed":
        encoder = chunked.StreamEncoder(
            CLIENT_CHUNK,
            chunked.ChunkSigner(
                signed.signing_key, signed.amz_date, signed.scope, signed.signature
            ),
        )
    lines = [f"PUT {signed.path} HTTP/1.1", *(f"{n}: {v}" for n, v in headers)]
    lines += [f"{n}: {v}" for n, v in signed.headers]
    lines.append(f"content-length: {length}")
    return Upload(("\r\n".join(lines) + "\r\n\r\n").encode(), size, encoder)


def send_upload(target: Target, upload: Upload) -> tuple[float, str | None]:
    """(seconds, error or None) for one upload over a fresh connection."""
    with socket.create_connection((target.host, target.port), timeout=120) as sock:
        start = time.perf_counter()
        try:
            sock.sendall(upload.head)
            for block in body_blocks(upload.size):
                sock.sendall(upload.encoder(block) if upload.encoder else block)
            if upload.encoder is not None:
                sock.sendall(upload.encoder(b""))
        except OSError as error:
            status, body = read_response(sock)
            answer = describe_http_error(status, body)
            return 0.0, f"upload cut short ({error}); answer: {answer}"
        status, body = read_response(sock)
        elapsed = time.perf_counter() - start
    if status != 200:
        return elapsed, describe_http_error(status, body)
    return elapsed, None


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """Status and body of one HTTP/1.1 response (Content-Length framed)."""
    data = b""
    with contextlib.suppress(OSError):
        while b"\r\n\r\n" not in data:
            more = sock.recv(65536)
            if not more:
                break
            data += more
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split(" ", 2)[1])
    except (IndexError, ValueError):
        return 0, b""
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    with contextlib.suppress(OSError):
        while len(body) < length:
            more = sock.recv(65536)
            if not more:
                break
            body += more
    return status, body


# --- memory of the proxy -----------------------------------------------------


class PeakRss:
    """The peak resident memory of a process during a `with` block.

    Resets the kernel's high-water mark (VmHWM) at the start where allowed
    (`/proc/<pid>/clear_refs`), and also samples VmRSS every 20 ms, so the
    figure belongs to this block and not to earlier uploads.
    """

    def __init__(self, pid: int):
        self.pid = pid
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _status_kib(self, field: str) -> int:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        return 0

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak_kib = max(self.peak_kib, self._status_kib("VmRSS"))

    def __enter__(self) -> PeakRss:
        self.hwm_reset = False
        with contextlib.suppress(OSError):
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
            self.hwm_reset = True
        self.peak_kib = self._status_kib("VmRSS")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if self.hwm_reset:
            self.peak_kib = max(self.peak_kib, self._status_kib("VmHWM"))
        else:
            self.peak_kib = max(self.peak_kib, self._status_kib("VmRSS"))

    @property
    def peak_mib(self) -> float:
        return self.peak_kib / 1024


# --- the part -------------------------------------------------------------------


def run_upload(
    size: int,
    rounds: int,
    progress: Progress,
    *,
    modes: tuple[str, ...] = MODES,
    workers: int | None = None,
    store_endpoint: str | None = None,
    store_identity: Identity | None = None,
) -> list[Case]:
    sizes = sorted({max(1, size // 4), size})
    results: dict[str, list[float]] = {}
    rss: dict[str, list[float]] = {}
    failures = Failures()
    total = 0
    with bench_store(store_endpoint, store_identity) as access, Services() as services:
        prepare_store(access, 1)
        proxy = start_signproxy(services, access, workers, "local")
        direct = direct_target(access)
        plan = [(m, s) for s in sizes for m in modes]
        with progress.task("upload: large PUTs", len(plan) * 2 * rounds) as step:
            for _ in range(rounds):
                for mode, body_size in plan:
                    name = f"{mode}-{size_label(body_size)}"
                    for target in (proxy, direct):
                        upload = prepare_upload(
                            target, mode, body_size, f"upload-{target.name}-{name}"
                        )
                        total += 1
                        peak = PeakRss(proxy.cpu_pids[0])
                        with peak if target is proxy else contextlib.nullcontext():
                            seconds, error = send_upload(target, upload)
                        step()
                        if error is not None:
                            failures.record(f"{target.name} {name}: {error}")
                            continue
                        label = "local" if target is proxy else "direct"
                        results.setdefault(f"upload/{label}-{name}", []).append(
                            body_size / MIB / seconds
                        )
                        if target is proxy:
                            rss.setdefault(f"upload/local-{name}-rss", []).append(
                                peak.peak_mib
                            )
    failures.check("upload", total)
    return _cases(results, rss, modes, sizes)


def _cases(
    results: dict[str, list[float]],
    rss: dict[str, list[float]],
    modes: tuple[str, ...],
    sizes: list[int],
) -> list[Case]:
    cases = []
    small = size_label(sizes[0])
    for body_size in sizes:
        label = size_label(body_size)
        for mode in modes:
            name = f"{mode}-{label}"
            cases.append(
                Case(
                    f"upload/local-{name}",
                    "MiB/s",
                    results[f"upload/local-{name}"],
                    f"upload/direct-{name}",
                    details={"size": body_size, "mode": mode},
                )
            )
            cases.append(
                Case(
                    f"upload/direct-{name}",
                    "MiB/s",
                    results[f"upload/direct-{name}"],
                    details={"size": body_size, "mode": mode},
                )
            )
            rss_base = f"upload/local-{mode}-{small}-rss" if label != small else None
            cases.append(
                Case(
                    f"upload/local-{name}-rss",
                    "MiB RSS",
                    rss[f"upload/local-{name}-rss"],
                    rss_base,
                    better=LOWER,
                    details={"size": body_size, "mode": mode},
                )
            )
    return cases

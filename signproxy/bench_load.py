"""A small HTTP/1.1 load generator for `signproxy bench`, in its own process.

Run as `python -m signproxy.bench_load` with a JSON `LoadSpec` on stdin;
prints a JSON `LoadResult` on stdout.  Running apart from the bench keeps
its CPU off the process under test, and lets the bench report the
generator's own ceiling (its run against the store directly) and its CPU.

Each of `concurrency` keep-alive connections sends the prepared request
bytes, reads the whole response, and sends again, for `rounds` rounds of
`seconds` (or `count` requests per round).  Any non-2xx status, malformed
response or connection error is a failure: counted, and the first kept.

It also samples the CPU time (utime + stime from /proc/<pid>/stat) of the
processes under test at every round boundary, so the bench can report CPU
per request without psutil.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from signproxy.bench import describe_http_error

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class LoadSpec:
    host: str
    port: int
    requests: list[str]  # base64 of whole HTTP/1.1 requests, used in turn
    concurrency: int
    rounds: int
    seconds: float
    count: int | None = None
    cpu_pids: list[int] = field(default_factory=list)
    timeout: float = 30.0
    warmup: float = 0.0  # seconds of unmeasured load before the rounds


@dataclass
class RoundResult:
    done: int
    failed: int
    elapsed: float
    latency_p50_ms: float
    latency_p99_ms: float
    target_cpu_seconds: float
    loadgen_cpu_seconds: float


@dataclass
class LoadResult:
    rounds: list[RoundResult]
    first_error: str | None
    latency_p50_ms: float
    latency_p99_ms: float
    warmup_failed: int = 0


# --- CPU accounting --------------------------------------------------------


def _stat_fields(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    # The command name may hold spaces and parentheses: split after the last ')'.
    return text[text.rindex(")") + 2 :].split()


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants alive right now."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int(_stat_fields(int(entry.name))[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, ()))
    return tree


def cpu_seconds(pids: list[int]) -> float:
    """Total utime + stime of `pids` and their descendants, in seconds."""
    ticks = 0
    for root in pids:
        for pid in process_tree(root):
            try:
                fields = _stat_fields(pid)
            except OSError:
                continue  # gone meanwhile
            ticks += int(fields[11]) + int(fields[12])
    return ticks / CLOCK_TICKS


def own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


# --- HTTP/1.1 ----------------------------------------------------------------


class ResponseError(Exception):
    pass


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """(status, body, keep_alive) of one response."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split(" ", 2)[1])
    except (IndexError, ValueError):
        raise ResponseError(f"malformed status line {lines[0][:80]!r}") from None
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = await _read_chunked(reader)
    else:
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    keep_alive = headers.get("connection", "").lower() != "close"
    return status, body, keep_alive


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts = []
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0], 16)
        if size == 0:
            # Trailers, if any, end with an empty line.
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


# --- the load ----------------------------------------------------------------


class Load:
    def __init__(self, spec: LoadSpec):
        self.spec = spec
        self.requests = [base64.b64decode(raw) for raw in spec.requests]
        self.first_error: str | None = None
        self.all_latencies: list[float] = []
        self.warmup_failed = 0

    def _fail(self, error: str) -> None:
        if self.first_error is None:
            self.first_error = error[:500]

    async def _connection(
        self, index: int, deadline: float, quota: int | None, tally: list[int]
    ) -> None:
        spec = self.spec
        reader = writer = None
        sent = 0
        latencies = self.round_latencies
        while True:
            if quota is not None:
                if sent >= quota:
                    break
            elif time.perf_counter() >= deadline:
                break
            request = self.requests[(index + sent) % len(self.requests)]
            sent += 1
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(spec.host, spec.port)
                assert reader is not None
                start = time.perf_counter()
                writer.write(request)
                status, body, keep_alive = await asyncio.wait_for(
                    read_response(reader), spec.timeout
                )
                latencies.append(time.perf_counter() - start)
            except (OSError, EOFError, TimeoutError, asyncio.IncompleteReadError) as e:
                tally[1] += 1
                self._fail(f"connection error: {type(e).__name__}: {e}")
                writer = await _close(writer)
                continue
            except ResponseError as error:
                tally[1] += 1
                self._fail(str(error))
                writer = await _close(writer)
                continue
            if 200 <= status < 300:
                tally[0] += 1
            else:
                tally[1] += 1
                self._fail(describe_http_error(status, body))
            if not keep_alive:
                writer = await _close(writer)
        await _close(writer)

    async def _warmup(self) -> None:
        """Open the connections and warm the target; failures still count."""
        self.round_latencies = []
        tally = [0, 0]
        deadline = time.perf_counter() + self.spec.warmup
        await asyncio.gather(
            *(
                self._connection(i, deadline, None, tally)
                for i in range(self.spec.concurrency)
            )
        )
        self.warmup_failed = tally[1]

    async def round(self) -> RoundResult:
        spec = self.spec
        self.round_latencies: list[float] = []
        tally = [0, 0]
        quota = None
        if spec.count is not None:
            share, extra = divmod(spec.count, spec.concurrency)
            quota = [share + (1 if i < extra else 0) for i in range(spec.concurrency)]
        target_before = cpu_seconds(spec.cpu_pids)
        own_before = own_cpu_seconds()
        start = time.perf_counter()
        deadline = start + spec.seconds
        await asyncio.gather(
            *(
                self._connection(i, deadline, quota[i] if quota else None, tally)
                for i in range(spec.concurrency)
            )
        )
        elapsed = time.perf_counter() - start
        latencies = sorted(self.round_latencies)
        self.all_latencies.extend(latencies)
        return RoundResult(
            done=tally[0],
            failed=tally[1],
            elapsed=elapsed,
            latency_p50_ms=_percentile_ms(latencies, 0.50),
            latency_p99_ms=_percentile_ms(latencies, 0.99),
            target_cpu_seconds=cpu_seconds(spec.cpu_pids) - target_before,
            loadgen_cpu_seconds=own_cpu_seconds() - own_before,
        )

    async def run(self) -> LoadResult:
        if self.spec.warmup > 0:
            await self._warmup()
        rounds = [await self.round() for _ in range(self.spec.rounds)]
        everything = sorted(self.all_latencies)
        return LoadResult(
            rounds=rounds,
            first_error=self.first_error,
            warmup_failed=self.warmup_failed,
            latency_p50_ms=_percentile_ms(everything, 0.50),
            latency_p99_ms=_percentile_ms(everything, 0.99),
        )


async def _close(writer: asyncio.StreamWriter | None) -> None:
    if writer is not None:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return None


def _percentile_ms(ordered: list[float], fraction: float) -> float:
    """Nearest-rank percentile of sorted seconds, in milliseconds."""
    if not ordered:
        return 0.0
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1] * 1000


def run_spec(spec: LoadSpec) -> LoadResult:
    return asyncio.run(Load(spec).run())


def main() -> int:
    spec = LoadSpec(**json.load(sys.stdin))
    result = run_spec(spec)
    json.dump(asdict(result), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())

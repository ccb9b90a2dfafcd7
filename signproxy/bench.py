"""The benchmark harness: cases, statistics, honesty checks and the report.

Every part of `signproxy bench` (sign, proxy, upload; see the `bench_*`
modules) produces `Case`s: a named measurement in one unit, repeated over
several rounds.  The report turns them into a table, a stable JSON document
and optionally a plot.

JSON schema (stable; scripts may rely on it, fields may be added):

    {"host": {"cpu", "cores", "os", "python", ...},
     "versions": {"signproxy", "mitmproxy", "botocore", "python", "weed"},
     "settings": {...the options the run used...},
     "cases": [{"name", "unit", "better", "median", "p99", "baseline",
                "ratio", "rounds", "details"}, ...]}

`median` is the median over rounds.  `p99` is the tail in the bad
direction: for a throughput (`better == "higher"`) it is the value that 99%
of rounds reached (the 1st percentile); for a latency or a cost (`better ==
"lower"`) it is the 99th percentile.  `ratio` is always `median` divided by
the named `baseline` case's median, whatever the unit: above 1 is better for
a throughput, below 1 is better for a latency or a cost.  Cases without a
baseline have `baseline` and `ratio` null.

A run in which any request or signature failed is never reported: the part
raises `BenchFailed`, and the command exits 1 naming the count and the
first error.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import logging
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

HIGHER = "higher"
LOWER = "lower"


class BenchFailed(RuntimeError):
    """A run that must not be reported: some requests or checks failed."""

    def __init__(self, case: str, failures: int, total: int, first_error: str):
        self.case = case
        self.failures = failures
        self.total = total
        self.first_error = first_error
        super().__init__(
            f"{case}: {failures} of {total} requests failed; first error: {first_error}"
        )


@dataclass
class Failures:
    """Counts failed operations and keeps the first error for the report."""

    count: int = 0
    first: str | None = None

    def record(self, error: str) -> None:
        self.count += 1
        if self.first is None:
            self.first = error[:500]

    def merge(self, count: int, first: str | None) -> None:
        if count and self.first is None:
            self.first = (first or "unknown error")[:500]
        self.count += count

    def check(self, case: str, total: int) -> None:
        """Raise `BenchFailed` if anything failed."""
        if self.count:
            raise BenchFailed(case, self.count, total, self.first or "unknown error")


def describe_http_error(status: int, body: bytes) -> str:
    """`HTTP 403 SignatureDoesNotMatch: <message>` from an S3 error answer.

    Only the code and message are kept: S3 error bodies may echo the
    request's signature or string to sign, which do not belong in a report.
    """
    text = body.decode("utf-8", "replace")
    code = re.search(r"<Code>([^<]{1,100})</Code>", text)
    message = re.search(r"<Message>([^<]{1,300})</Message>", text)
    if code is None:
        return f"HTTP {status}"
    return f"HTTP {status} {code.group(1)}" + (
        f": {message.group(1)}" if message else ""
    )


def percentile(samples: list[float], fraction: float) -> float:
    """Nearest-rank percentile of `samples` (0 < fraction <= 1)."""
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass
class Case:
    """One measurement, repeated over rounds, in one unit."""

    name: str
    unit: str
    samples: list[float]
    baseline: str | None = None
    better: str = HIGHER
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.samples:
            raise ValueError(f"case {self.name!r} has no samples")
        if self.better not in (HIGHER, LOWER):
            raise ValueError(f"case {self.name!r}: better={self.better!r}")

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def p99(self) -> float:
        if self.better == HIGHER:
            return percentile(self.samples, 0.01)
        return percentile(self.samples, 0.99)


@dataclass
class Report:
    """The outcome of one `signproxy bench` invocation."""

    host: dict[str, Any]
    versions: dict[str, str | None]
    settings: dict[str, Any]
    cases: list[Case] = field(default_factory=list)

    def add(self, *cases: Case) -> None:
        self.cases.extend(cases)

    def case(self, name: str) -> Case:
        for case in self.cases:
            if case.name == name:
                return case
        raise KeyError(name)

    def ratio(self, case: Case) -> float | None:
        if case.baseline is None:
            return None
        base = self.case(case.baseline).median
        return case.median / base if base else None

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "versions": self.versions,
            "settings": self.settings,
            "cases": [
                {
                    "name": case.name,
                    "unit": case.unit,
                    "better": case.better,
                    "median": case.median,
                    "p99": case.p99,
                    "baseline": case.baseline,
                    "ratio": self.ratio(case),
                    "rounds": len(case.samples),
                    "details": case.details,
                }
                for case in self.cases
            ],
        }

    def write_json(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")


# --- where and with what the run happened ---------------------------------


def host_info() -> dict[str, Any]:
    """The machine: CPU model, core counts, OS, Python, memory."""
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "os": platform.platform(),
        "python": platform.python_version(),
        "memory_mib": _memory_mib(),
        # Other work on the machine skews every figure: say how busy it was.
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _memory_mib() -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    return None


def versions() -> dict[str, str | None]:
    """Versions of everything that shapes the figures."""
    found: dict[str, str | None] = {"python": platform.python_version()}
    for package in ("signproxy", "mitmproxy", "botocore", "httpx"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = None
    found["weed"] = _weed_version()
    found["wrk"] = _wrk_version()
    return found


def _weed_version() -> str | None:
    from signproxy.seaweed import find_weed

    try:
        output = subprocess.run(
            [find_weed(), "version"], capture_output=True, text=True, timeout=10
        ).stdout
    except (RuntimeError, OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"version \S+ (\S+)", output)
    return match.group(1) if match else None


def _wrk_version() -> str | None:
    wrk = shutil.which("wrk")
    if wrk is None:
        return None
    try:
        output = subprocess.run(
            [wrk, "--version"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"wrk (\S+)", output.stdout + output.stderr)
    return match.group(1) if match else None


# --- timing ----------------------------------------------------------------


@dataclass(frozen=True)
class Budget:
    """How long each round runs: a duration, or a fixed operation count."""

    seconds: float
    count: int | None = None

    def __post_init__(self) -> None:
        if self.seconds <= 0:
            raise ValueError(f"--duration must be > 0, got {self.seconds}")
        if self.count is not None and self.count < 1:
            raise ValueError(f"--count must be >= 1, got {self.count}")


def rate(operation: Callable[[int], object], budget: Budget, batch: int = 32) -> float:
    """Operations per second of `operation(i)`, run for one round's budget."""
    done = 0
    start = time.perf_counter()
    if budget.count is not None:
        for i in range(budget.count):
            operation(i)
        done = budget.count
    else:
        deadline = start + budget.seconds
        while True:
            for i in range(done, done + batch):
                operation(i)
            done += batch
            if time.perf_counter() >= deadline:
                break
    elapsed = time.perf_counter() - start
    return done / elapsed


def size_label(size: int) -> str:
    """1073741824 -> '1GiB', 268435456 -> '256MiB', 1500 -> '1500B'."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale and size % scale == 0:
            return f"{size // scale}{unit}"
    return f"{size}B"


def parse_size(text: str) -> int:
    """'1GiB', '256MiB', '64KiB', '1000' -> bytes; ValueError names the value."""
    match = re.fullmatch(r"\s*(\d+)\s*(GiB|MiB|KiB|G|M|K|B)?\s*", text)
    if not match:
        raise ValueError(f"invalid size {text!r}: use e.g. 1GiB, 256MiB or 4096")
    scale = {"G": 1 << 30, "M": 1 << 20, "K": 1 << 10, "B": 1, None: 1}
    unit = match.group(2)
    size = int(match.group(1)) * scale[unit[0] if unit else None]
    if size < 1:
        raise ValueError(f"invalid size {text!r}: must be at least 1 byte")
    return size


# --- presentation ----------------------------------------------------------


class Progress:
    """Progress bars on stderr for the parts that take more than a moment."""

    def __init__(self, enabled: bool = True):
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
        )
        from rich.progress import Progress as RichProgress

        self.console = Console(stderr=True)
        self._progress = RichProgress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
            disable=not enabled,
        )

    def __enter__(self) -> Progress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    @contextlib.contextmanager
    def task(self, description: str, total: int) -> Iterator[Callable[[], None]]:
        task_id = self._progress.add_task(description, total=total)
        try:
            yield lambda: self._progress.advance(task_id)
        finally:
            self._progress.remove_task(task_id)

    def note(self, message: str) -> None:
        self._progress.console.print(message, highlight=False)


def render_table(report: Report) -> Any:
    """A rich Table of the cases, ratios next to their baselines."""
    from rich.table import Table

    table = Table(title="signproxy bench", title_justify="left")
    for column in ("case", "unit", "median", "p99", "vs baseline", "ratio"):
        justify = "left" if column in ("case", "unit", "vs baseline") else "right"
        table.add_column(column, justify=justify, no_wrap=True)
    for case in report.cases:
        ratio = report.ratio(case)
        table.add_row(
            case.name,
            case.unit,
            _figure(case.median),
            _figure(case.p99),
            case.baseline or "",
            f"{ratio:.2f}x" if ratio is not None else "",
        )
    return table


def _figure(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def write_plot(report: Report, path: Path) -> None:
    """One horizontal bar chart per unit: medians, with the p99 tail marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    units: dict[str, list[Case]] = {}
    for case in report.cases:
        units.setdefault(case.unit, []).append(case)
    figure, axes = plt.subplots(
        len(units),
        1,
        figsize=(9, 1.2 + sum(0.45 * len(c) + 0.8 for c in units.values())),
        squeeze=False,
        height_ratios=[len(c) + 1 for c in units.values()],
        layout="constrained",  # leaves room for the title
    )
    for ax, (unit, cases) in zip(axes[:, 0], units.items(), strict=True):
        names = [case.name for case in cases]
        medians = [case.median for case in cases]
        # Only the bad side has a tail: below a throughput, above a latency.
        below = [max(0.0, case.median - case.p99) for case in cases]
        above = [max(0.0, case.p99 - case.median) for case in cases]
        ax.barh(names, medians, xerr=[below, above], color="#4878a8", capsize=3)
        ax.invert_yaxis()
        ax.set_xlabel(unit)
        for index, case in enumerate(cases):
            ratio = report.ratio(case)
            if ratio is not None:
                ax.annotate(
                    f" {ratio:.2f}x {case.baseline}",
                    (0, index),
                    va="center",
                    color="white",
                    fontsize=7,
                )
    figure.suptitle(f"signproxy bench on {report.host.get('cpu', '?')}", fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)

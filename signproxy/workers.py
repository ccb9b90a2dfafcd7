"""`signproxy run --workers N`: N proxy processes serving one port.

mitmproxy serves one event loop in one process, so one proxy uses one core.
With `--workers N` the parent process forks N workers, each a whole proxy
(its own signer, its own mitmproxy) whose listening socket is bound with
SO_REUSEPORT to the same address, and the kernel spreads new connections
over them.  The parent first binds the address itself (also with
SO_REUSEPORT, never listening), which resolves port 0 to a real port that
every worker then shares, and keeps another program from taking the port.

The parent only supervises:

* SIGTERM and SIGINT are forwarded to every worker; each drains its
  requests in flight (`--drain-seconds`) and exits; the parent exits 0 when
  all exited cleanly;
* a worker that exits on its own (it failed to start, or crashed) is
  logged, the others are stopped, and the parent exits 1.  Workers are NOT
  restarted: the process supervisor (systemd, Kubernetes) restarts the
  whole proxy, which keeps the failure visible;
* a parent killed outright takes its workers with it (PR_SET_PDEATHSIG).

Known shortcomings, in the open:

* metrics, /healthz and /readyz (`--metrics-listen`) are served by worker 0
  only, and count worker 0's requests only (about 1/N of the traffic);
* each worker has its own authorization cache and its own temporary
  credentials (N STS calls where one proxy makes one);
* Linux only: SO_REUSEPORT balancing is what spreads the connections.

Each worker's log lines carry its number: `[worker 1]` before text lines,
`"worker": 1` and `"worker_pid"` in JSON lines.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from types import FrameType

from signproxy.options import ProxyConfig

logger = logging.getLogger(__name__)

Serve = Callable[[ProxyConfig], int]

EXIT_FAILED = 1
PR_SET_PDEATHSIG = 1  # linux/prctl.h
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class WorkerTag(logging.Filter):
    """Marks every record with the worker's number and pid."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self.index
        record.worker_pid = os.getpid()
        return True


class TaggedText(logging.Formatter):
    """`[worker N] ` before each line of another formatter's text."""

    def __init__(self, inner: logging.Formatter, index: int) -> None:
        super().__init__()
        self.inner = inner
        self.prefix = f"[worker {index}] "

    def format(self, record: logging.LogRecord) -> str:
        return self.prefix + self.inner.format(record)


def supervise(config: ProxyConfig, serve: Serve) -> int:
    """Fork `config.workers` workers running `serve`; wait; 0 on a clean stop."""
    if not hasattr(socket, "SO_REUSEPORT"):
        logger.error("--workers needs SO_REUSEPORT, which this system lacks")
        return EXIT_FAILED
    try:
        reservation = reserve(config.listen)
    except OSError as error:
        logger.error(
            "unable to listen on %s:%s: %s", config.listen[0], config.listen[1], error
        )
        return EXIT_FAILED
    with reservation:
        host, port = reservation.getsockname()[:2]
        shared = dataclasses.replace(config, listen=(host, port))
        workers = _fork_workers(shared, serve, reservation)
        logger.info(
            "signproxy: %d workers (pids %s) sharing %s:%d; metrics, /healthz "
            "and /readyz from worker 0 only",
            len(workers),
            ", ".join(str(pid) for pid in workers),
            host,
            port,
        )
        return Supervisor(workers).wait()


def reserve(listen: tuple[str, int]) -> socket.socket:
    """A socket bound (not listening) to `listen` with SO_REUSEPORT."""
    host, port = listen
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _fork_workers(
    config: ProxyConfig, serve: Serve, reservation: socket.socket
) -> dict[int, int]:
    """pid -> worker number, for each worker forked."""
    workers: dict[int, int] = {}
    for index in range(config.workers):
        own = config if index == 0 else dataclasses.replace(config, metrics_listen=None)
        sys.stdout.flush()
        sys.stderr.flush()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the worker
            reservation.close()
            os._exit(_worker(index, own, serve, parent))
        workers[pid] = index
    return workers


def _worker(index: int, config: ProxyConfig, serve: Serve, parent: int) -> int:
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)
    _stop_with_parent(parent)
    _tag_logs(index)
    try:
        code = serve(config)
    except BaseException:
        logger.exception("worker %d failed", index)
        code = EXIT_FAILED
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    return code


def _stop_with_parent(parent: int) -> None:
    """Have the kernel send SIGTERM to this worker when the parent dies.

    A parent killed outright (SIGKILL, OOM) cannot forward signals; without
    this its workers would keep serving the port, unsupervised.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    except (OSError, AttributeError) as error:
        logger.warning("worker will not stop with its parent: %s", error)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _tag_logs(index: int) -> None:
    tag = WorkerTag(index)
    for handler in logging.getLogger().handlers:
        handler.addFilter(tag)
        formatter = handler.formatter
        if formatter is not None and type(formatter).__name__ != "JsonFormatter":
            handler.setFormatter(TaggedText(formatter, index))


class Supervisor:
    """Forwards stop signals to the workers and waits for them all."""

    def __init__(self, workers: dict[int, int]) -> None:
        self.workers = dict(workers)
        self.stopping = False
        self.failed = False

    def wait(self) -> int:
        previous = {s: signal.signal(s, self._on_signal) for s in STOP_SIGNALS}
        try:
            while self.workers:
                pid, status = os.wait()
                index = self.workers.pop(pid, None)
                if index is not None:
                    self._exited(index, pid, status)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        logger.info("signproxy: all workers stopped")
        return EXIT_FAILED if self.failed else 0

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if not self.stopping:
            logger.info(
                "signproxy: %s, stopping %d workers",
                signal.Signals(signum).name,
                len(self.workers),
            )
        self.stopping = True
        self._send(signum)

    def _send(self, signum: int) -> None:
        for pid in list(self.workers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def _exited(self, index: int, pid: int, status: int) -> None:
        code = os.waitstatus_to_exitcode(status)
        clean = code == 0 or (self.stopping and -code in STOP_SIGNALS)
        if clean and self.stopping:
            logger.debug("worker %d (pid %d) stopped", index, pid)
            return
        how = f"exit status {code}" if code >= 0 else f"signal {-code}"
        logger.error(
            "worker %d (pid %d) ended on its own (%s); stopping the others, "
            "signproxy exits 1 (workers are not restarted)",
            index,
            pid,
            how,
        )
        self.failed = True
        if not self.stopping:
            self.stopping = True
            self._send(signal.SIGTERM)

"""`signproxy soak`: steady load on a proxy, RSS and fds sampled; exit 1 unless flat.

Starts its own SeaweedFS (`weed`) and `signproxy run` on loopback; prints a
JSON report.  Short runs (20 s) belong in CI, long ones in the benchmark.
"""

from __future__ import annotations

import argparse
import json
import sys


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "soak",
        help="bounded soak: load a proxy, check its RSS and open fds stay flat",
    )
    parser.add_argument("--duration", type=float, default=20.0, help="seconds")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os
    import secrets
    import signal
    import socket
    import subprocess
    import tempfile
    import time
    from pathlib import Path

    from signproxy.seaweed import Identity, LocalStore, free_port
    from signproxy.soak import soak

    if args.duration <= 0 or args.interval <= 0 or args.concurrency <= 0:
        print("signproxy soak: --duration, --interval and --concurrency must be "
              f"positive (got {args.duration}, {args.interval}, {args.concurrency})",
              file=sys.stderr)  # fmt: skip
        return 2
    identity = Identity("soak", "AKSK" + secrets.token_hex(8).upper(),
                        secrets.token_urlsafe(30))  # fmt: skip
    with (
        tempfile.TemporaryDirectory() as tmp,
        LocalStore([identity], data_dir=Path(tmp)) as store,
    ):
        port = free_port()
        env = dict(os.environ, SCP_ACCESS_KEY=identity.access_key,
                   SCP_SECRET_KEY=identity.secret_key)  # fmt: skip
        proxy = subprocess.Popen(
            [sys.executable, "-m", "signproxy.cli", "run", "--upstream",
             store.endpoint, "--listen", f"127.0.0.1:{port}", "--signer", "local",
             "--log-level", "warning"],
            env=env, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or proxy.poll() is not None:
                        print("signproxy soak: the proxy did not start",
                              file=sys.stderr)  # fmt: skip
                        return 1
                    time.sleep(0.05)
            report = soak(
                f"http://127.0.0.1:{port}",
                proxy.pid,
                args.duration,
                interval=args.interval,
                concurrency=args.concurrency,
            )
        finally:
            proxy.send_signal(signal.SIGTERM)
            proxy.wait(timeout=60)
    print(json.dumps(report.summary(), indent=2))
    return 0 if report.flat else 1

"""`signproxy emulator`: run the SCP STS emulator on loopback.

Prints `listening on http://HOST:PORT` on stdout once it serves (with
`--listen 127.0.0.1:0` the port is chosen free), then serves until
interrupted (SIGINT or SIGTERM).  Accounts come from a TOML file; see
`signproxy.emulator`.  Faults can be changed while it runs with
`POST /_emulator/faults` (JSON: latency, error_rate, drop_rate, error_status,
error_next, drop_next); call counts are at `GET /_emulator/stats`.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


def _listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(
            f"--listen: {value!r} is not HOST:PORT (e.g. 127.0.0.1:8790)"
        )
    return host.strip("[]"), int(port)


def _rate(value: str) -> float:
    try:
        rate = float(value)
    except ValueError:
        rate = -1.0
    if not 0.0 <= rate <= 1.0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a rate within 0..1")
    return rate


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if seconds < 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds >= 0")
    return seconds


def _store_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(
            f"--store: {value!r} is not an http(s)://host[:port] URL"
        )
    return value


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "emulator",
        help="run the SCP STS emulator (for tests, the demo and the benchmark)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--listen",
        type=_listen,
        default=("127.0.0.1", 8790),
        metavar="HOST:PORT",
        help="address to serve on (default 127.0.0.1:8790; port 0 picks one)",
    )
    parser.add_argument(
        "--accounts",
        type=Path,
        required=True,
        metavar="FILE",
        help="accounts TOML file: [accounts.ACCESS_KEY] secret_key, account_id, "
        "roles, saml_providers",
    )
    parser.add_argument(
        "--store",
        type=_store_url,
        metavar="URL",
        help="S3 endpoint whose STS issues the assume operations' credentials",
    )
    parser.add_argument(
        "--store-region",
        default="us-east-1",
        metavar="R",
        help="region to sign the store's STS calls for (default us-east-1)",
    )
    parser.add_argument(
        "--latency",
        type=_seconds,
        default=0.0,
        metavar="SECONDS",
        help="delay added to every API call",
    )
    parser.add_argument(
        "--error-rate",
        type=_rate,
        default=0.0,
        metavar="0..1",
        help="share of API calls answered 503",
    )
    parser.add_argument(
        "--drop-rate",
        type=_rate,
        default=0.0,
        metavar="0..1",
        help="share of API calls whose connection is closed without an answer",
    )
    parser.add_argument(
        "--log-level", default="info", help="debug, info, warning or error"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from signproxy.emulator import EmulatorServer, Faults, load_accounts
    from signproxy.logs import configure_logging

    try:
        configure_logging(args.log_level)
        accounts = load_accounts(args.accounts)
    except ValueError as exc:
        print(f"signproxy emulator: {exc}", file=sys.stderr)
        return 2
    server = EmulatorServer(
        accounts,
        args.store,
        store_region=args.store_region,
        faults=Faults(
            latency=args.latency, error_rate=args.error_rate, drop_rate=args.drop_rate
        ),
    )
    host, port = args.listen
    try:
        asyncio.run(_serve(server, host, port))
    except OSError as exc:
        print(
            f"signproxy emulator: unable to listen on {host}:{port}: {exc}",
            file=sys.stderr,
        )
        return 1
    return 0


async def _serve(server: Any, host: str, port: int) -> None:
    await server.start(host, port)
    print(f"listening on {server.endpoint}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()

"""`signproxy bench sign|proxy|upload|all`: measure against baselines.

Each part prints a table, and with `--json FILE` writes the stable JSON
described in `signproxy.bench`.  A run in which any request failed is
refused: exit status 1 and the failure count and first error on stderr.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

PARTS = ("sign", "proxy", "upload")
DEFAULT_SECONDS = {"sign": 3.0, "proxy": 5.0, "upload": 0.0}


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="measure signing, proxy and upload throughput against baselines",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parts = parser.add_subparsers(dest="part", metavar="PART")
    parts.required = True
    common = _common_options()
    sign = _sign_options()
    proxy = _proxy_options()
    upload = _upload_options()
    target = _target_options()
    helps = {
        "sign": "signatures/s: local (warm, cold), remote (hit, miss), botocore",
        "proxy": "small GET/PUT through signproxy, stock mitmdump and direct",
        "upload": "a large streamed PUT per payload mode, and direct",
        "all": "sign, proxy and upload in one run and one report",
    }
    parents = {
        "sign": [common, sign],
        "proxy": [common, target, proxy],
        "upload": [common, target, upload],
        "all": [common, sign, target, proxy, upload],
    }
    for name, help_text in helps.items():
        sub = parts.add_parser(name, help=help_text, parents=parents[name])
        sub.set_defaults(func=run, parts=PARTS if name == "all" else (name,))


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", type=Path, metavar="FILE", help="write JSON here")
    common.add_argument(
        "--plot", type=Path, metavar="FILE.png", help="write a bar chart here"
    )
    common.add_argument(
        "--duration",
        type=float,
        metavar="SECONDS",
        help="time per case, split over the rounds (default: sign 3, proxy 5)",
    )
    common.add_argument(
        "--count",
        type=int,
        metavar="N",
        help="a fixed number of operations per round instead of a duration",
    )
    common.add_argument(
        "--rounds", type=int, default=5, metavar="N", help="rounds per case (5)"
    )
    common.add_argument(
        "--no-progress", action="store_true", help="no progress bars on stderr"
    )
    return common


def _sign_options() -> argparse.ArgumentParser:
    sign = argparse.ArgumentParser(add_help=False)
    sign.add_argument(
        "--sign-concurrency",
        type=int,
        default=16,
        metavar="N",
        help="concurrent requests for the remote signer cases (16)",
    )
    sign.add_argument(
        "--no-remote",
        action="store_true",
        help="skip the remote signer cases (they start the STS emulator)",
    )
    return sign


def _proxy_options() -> argparse.ArgumentParser:
    proxy = argparse.ArgumentParser(add_help=False)
    proxy.add_argument(
        "--concurrency",
        default="1,16",
        metavar="N[,N...]",
        help="concurrent connections for the small-request cases (1,16)",
    )
    proxy.add_argument(
        "--object-size",
        default="1KiB",
        metavar="SIZE",
        help="size of the small GET/PUT objects (1KiB)",
    )
    return proxy


def _upload_options() -> argparse.ArgumentParser:
    upload = argparse.ArgumentParser(add_help=False)
    upload.add_argument(
        "--size",
        default="1GiB",
        metavar="SIZE",
        help="the large upload's size; a quarter of it is uploaded too (1GiB)",
    )
    upload.add_argument(
        "--modes",
        default="signed,unsigned,client-hash",
        metavar="MODE[,MODE...]",
        help="payload modes: signed (aws-chunked), unsigned, client-hash",
    )
    upload.add_argument(
        "--upload-rounds",
        type=int,
        default=1,
        metavar="N",
        help="uploads per mode, size and target (1)",
    )
    return upload


def _target_options() -> argparse.ArgumentParser:
    """What `bench proxy` and `bench upload` start or point at."""
    target = argparse.ArgumentParser(add_help=False)
    target.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="passed to `signproxy run --workers` (only if it supports it)",
    )
    target.add_argument(
        "--store",
        metavar="URL",
        help="bench against this S3 store instead of a fresh local SeaweedFS; "
        "its keys come from SIGNPROXY_BENCH_STORE_ACCESS_KEY and "
        "SIGNPROXY_BENCH_STORE_SECRET_KEY",
    )
    return target


def _check(args: argparse.Namespace) -> None:
    if args.rounds < 1:
        raise ValueError(f"--rounds must be >= 1, got {args.rounds}")
    if args.duration is not None and args.duration <= 0:
        raise ValueError(f"--duration must be > 0, got {args.duration}")
    if args.count is not None and args.count < 1:
        raise ValueError(f"--count must be >= 1, got {args.count}")
    if hasattr(args, "concurrency"):
        args.concurrency_levels = _concurrency_levels(args.concurrency)
        args.object_bytes = _size("--object-size", args.object_size)
    if hasattr(args, "workers"):
        if args.workers is not None and args.workers < 1:
            raise ValueError(f"--workers must be >= 1, got {args.workers}")
        args.store_identity = _store_identity(args.store)
    if hasattr(args, "size"):
        args.size_bytes = _size("--size", args.size)
        args.upload_modes = _modes(args.modes)
        if args.upload_rounds < 1:
            raise ValueError(f"--upload-rounds must be >= 1, got {args.upload_rounds}")
    if getattr(args, "sign_concurrency", 1) < 1:
        raise ValueError(
            f"--sign-concurrency must be >= 1, got {args.sign_concurrency}"
        )


def _concurrency_levels(text: str) -> list[int]:
    try:
        levels = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        levels = []
    if not levels or min(levels) < 1:
        raise ValueError(
            f"--concurrency: invalid value {text!r}: positive numbers, e.g. 1,16"
        )
    return levels


def _modes(text: str) -> tuple[str, ...]:
    from signproxy.bench_upload import MODES

    modes = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [mode for mode in modes if mode not in MODES]
    if not modes or unknown:
        raise ValueError(
            f"--modes: invalid value {text!r}: choose from {', '.join(MODES)}"
        )
    return modes


def _size(option: str, text: str) -> int:
    from signproxy.bench import parse_size

    try:
        return parse_size(text)
    except ValueError as error:
        raise ValueError(f"{option}: {error}") from None


def _store_identity(store: str | None) -> Any:
    """The --store's keys, from the environment (never from argv)."""
    if store is None:
        return None
    from signproxy.seaweed import Identity

    access = os.environ.get("SIGNPROXY_BENCH_STORE_ACCESS_KEY", "")
    secret = os.environ.get("SIGNPROXY_BENCH_STORE_SECRET_KEY", "")
    if not (access and secret):
        raise ValueError(
            "--store needs SIGNPROXY_BENCH_STORE_ACCESS_KEY and "
            "SIGNPROXY_BENCH_STORE_SECRET_KEY in the environment"
        )
    return Identity("bench", access, secret)


def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    skip = {"func", "command", "store_identity"}
    return {
        key: str(value) if isinstance(value, Path) else value
        for key, value in vars(args).items()
        if key not in skip
    }


def run(args: argparse.Namespace) -> int:
    from signproxy.bench import BenchFailed, Progress, Report, host_info, versions

    try:
        _check(args)
    except ValueError as error:
        print(f"signproxy bench: {error}", file=sys.stderr)
        return 2
    report = Report(host_info(), versions(), settings_of(args))
    try:
        with Progress(enabled=not args.no_progress) as progress:
            for part in args.parts:
                report.add(*_PART_RUNNERS[part](args, progress))
    except BenchFailed as failed:
        print(f"signproxy bench: refusing to report: {failed}", file=sys.stderr)
        return 1
    except RuntimeError as error:
        print(f"signproxy bench: {error}", file=sys.stderr)
        return 1
    _present(report, args)
    return 0


def _present(report: Any, args: argparse.Namespace) -> None:
    from rich.console import Console

    from signproxy.bench import render_table, write_plot

    console = Console()
    if not console.is_terminal:
        console = Console(width=150)  # whole case names in logs and pipes
    console.print(render_table(report))
    if args.json is not None:
        report.write_json(args.json)
        print(f"wrote {args.json}", file=sys.stderr)
    if args.plot is not None:
        write_plot(report, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)


def _budget(args: argparse.Namespace, part: str) -> Any:
    from signproxy.bench import Budget

    seconds = args.duration if args.duration is not None else DEFAULT_SECONDS[part]
    return Budget(seconds / args.rounds, args.count)


def _run_sign(args: argparse.Namespace, progress: Any) -> list[Any]:
    from signproxy import bench_sign

    budget = _budget(args, "sign")
    cases = bench_sign.run_local(budget, args.rounds, progress)
    if not args.no_remote:
        cases += bench_sign.run_remote(
            budget, args.rounds, args.sign_concurrency, progress
        )
    return cases


def _run_proxy(args: argparse.Namespace, progress: Any) -> list[Any]:
    from signproxy import bench_proxy

    return bench_proxy.run_proxy(
        _budget(args, "proxy"),
        args.rounds,
        args.concurrency_levels,
        progress,
        object_size=args.object_bytes,
        workers=args.workers,
        store_endpoint=args.store,
        store_identity=args.store_identity,
    )


def _run_upload(args: argparse.Namespace, progress: Any) -> list[Any]:
    from signproxy import bench_upload

    return bench_upload.run_upload(
        args.size_bytes,
        args.upload_rounds,
        progress,
        modes=args.upload_modes,
        workers=args.workers,
        store_endpoint=args.store,
        store_identity=args.store_identity,
    )


_PART_RUNNERS: dict[str, Callable[[argparse.Namespace, Any], list[Any]]] = {
    "sign": _run_sign,
    "proxy": _run_proxy,
    "upload": _run_upload,
}

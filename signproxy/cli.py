"""The `signproxy` command: one subcommand per face of the project.

Each subcommand lives in `signproxy.commands.<name>` and exposes
`add_parser(subparsers)`, which registers its parser and sets `func`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

COMMANDS: tuple[str, ...] = ("bench", "emulator", "sts", "run", "demo", "soak")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="signproxy",
        description="S3 request signing proxy for SCP Object Storage and S3 stores.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMANDS:
        module = importlib.import_module(f"signproxy.commands.{name}")
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

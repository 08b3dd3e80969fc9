"""`textstream`: the parser of every command and the entry point."""

from __future__ import annotations

import argparse
import sys

from commands import clients, dev, models, train, worker
from worker.errors import TextstreamError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="textstream",
        description="Streaming text classification and clustering on Kafka.",
        epilog=worker.settings_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (worker, train, models, clients, dev):
        group.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except TextstreamError as exc:
        print(f"textstream {args.command}: error: {exc}", file=sys.stderr)
        return 2

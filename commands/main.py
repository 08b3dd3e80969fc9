"""`textstream`: the parser of every command and the entry point."""

from __future__ import annotations

import argparse
import importlib.metadata
import sys

from commands import clients, dev, dlq, models, predict, train, worker
from worker.errors import TextstreamError


def version() -> str:
    """The installed package's version (pyproject.toml, via its metadata)."""
    try:
        return importlib.metadata.version("textstream")
    except importlib.metadata.PackageNotFoundError:  # run from a clone that was never installed
        return "unknown (not installed: pip install -e .)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="textstream",
        description="Streaming text classification and clustering on Kafka.",
        epilog=worker.settings_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"textstream {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (worker, train, models, predict, clients, dlq, dev):
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

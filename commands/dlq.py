"""`textstream dlq replay`: send dead letters back to the input topic, once (worker/replay.py)."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
from typing import Any

import orjson

from commands import clients
from worker import logs
from worker.client import snippet
from worker.errors import ConfigError
from worker.replay import DeadLetter, Plan, Selection


def when(value: str) -> float:
    """Unix seconds from Unix seconds or an ISO 8601 time (UTC unless it says otherwise)."""
    try:
        return float(value)
    except ValueError:
        pass
    try:
        t = dt.datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is neither Unix seconds nor an ISO 8601 time") from None
    return (t if t.tzinfo else t.replace(tzinfo=dt.UTC)).timestamp()


def selection(args: argparse.Namespace) -> Selection:
    if args.from_offset is not None and args.to_offset is not None and args.from_offset > args.to_offset:
        raise ConfigError(f"--from-offset {args.from_offset} is after --to-offset {args.to_offset}")
    return Selection(frozenset(args.reason or ()), args.since, args.until, args.partition, args.from_offset,
                     args.to_offset)


def line(d: DeadLetter, status: str) -> str:
    stamp = dt.datetime.fromtimestamp(d.timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    key = d.key.decode("utf-8", "replace") if d.key else "-"
    return (f"{d.topic}[{d.partition}]@{d.offset}  {stamp}  {d.reason:<18} {status:<17} key={snippet(key, 20)} "
            f"{snippet((d.value or b'').decode('utf-8', 'replace'), 60)!r}")


def as_json(d: DeadLetter, status: str) -> str:
    return orjson.dumps({
        "topic": d.topic, "partition": d.partition, "offset": d.offset, "timestamp": d.timestamp,
        "reason": d.reason, "status": status, "key": d.key.decode("utf-8", "replace") if d.key else None,
        "value": (d.value or b"").decode("utf-8", "replace"),
    }).decode()


def statuses(p: Plan, dry_run: bool) -> list[tuple[DeadLetter, str]]:
    rows = [(d, "would send" if dry_run else "sent") for d in p.send]
    rows += [(d, "already replayed") for d in p.already] + [(d, "original not kept") for d in p.unreplayable]
    return sorted(rows, key=lambda r: (r[0].partition, r[0].offset))


def cmd_dlq(args: argparse.Namespace) -> int:
    settings = clients.kafka_settings(args)
    logs.setup(settings.log_level, settings.log_format)
    from worker import replay, security, topics

    access = security.from_settings(settings)
    source = args.topic or settings.dlq_topic
    to = args.to or settings.input_topic
    ledger = args.ledger or replay.ledger_topic(source)
    found = asyncio.run(replay.plan(settings.bootstrap_servers, source, selection(args), ledger=ledger,
                                    security=access))
    failed: dict[int, str] = {}
    if not args.dry_run:
        outcome = asyncio.run(replay.send(settings.bootstrap_servers, found.send, to=to, ledger=ledger,
                                          security=access, spec=topics.TopicSpec.from_settings(settings)))
        failed = {id(d): why for d, why in zip(found.send, outcome, strict=True) if why is not None}
    for d, status in statuses(found, args.dry_run):
        status = f"failed ({failed[id(d)]})" if id(d) in failed else status
        print(as_json(d, status) if args.json else line(d, status))
    verb = "would replay" if args.dry_run else "replayed"
    print(f"{verb} {len(found.send) - len(failed)} dead letters from {source} to {to}; "
          f"{len(found.already)} already replayed (ledger {ledger}), {len(found.unreplayable)} without their "
          f"original" + (f"; {len(failed)} refused by Kafka (not recorded: a rerun tries them again)" if failed else ""),
          file=sys.stderr)
    return 1 if failed else 0


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "dlq", help="replay dead letters to the input topic (after a fix), once each",
        description="replay reads the dead-letter topic up to its current end, keeps the dead letters that match "
                    "every filter given, and sends each one's original value, key and headers (the reason "
                    "headers removed, a replayed_from header added) to the input topic. Each dead letter "
                    "replayed is recorded on a ledger topic (DLQ topic + '.replayed') and never sent again by "
                    "a later replay. --dry-run lists what would be sent.",
    )
    p.add_argument("action", choices=["replay"])
    p.add_argument("--reason", action="append", metavar="REASON",
                   help="only dead letters with this error header (repeatable), e.g. model_error")
    p.add_argument("--since", type=when, help="dead-lettered at or after: Unix seconds or ISO 8601 (UTC by default)")
    p.add_argument("--until", type=when, help="dead-lettered before this time")
    p.add_argument("--partition", type=int, help="only this partition of the dead-letter topic")
    p.add_argument("--from-offset", type=int, help="first offset (inclusive) in each partition read")
    p.add_argument("--to-offset", type=int, help="last offset (inclusive) in each partition read")
    p.add_argument("--dry-run", action="store_true", help="list what would be sent; send nothing")
    p.add_argument("--json", action="store_true", help="one JSON object per dead letter, with its status")
    p.add_argument("--topic", help="dead-letter topic (default: TEXTSTREAM_DLQ_TOPIC)")
    p.add_argument("--to", help="where to send (default: TEXTSTREAM_INPUT_TOPIC)")
    clients.add_command_config(p)
    p.add_argument("--ledger", help="topic recording what was replayed (default: the dead-letter topic + '.replayed')")
    p.set_defaults(func=cmd_dlq)

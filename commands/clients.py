"""`textstream send` and `textstream tail`: put texts on the input topic, follow the outputs."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from pathlib import Path
from typing import Any

from worker import config, logs


def add_command_config(p: argparse.ArgumentParser) -> None:
    """--command-config FILE / -F FILE: Kafka client properties, as kafka-console-* and kcat take them."""
    p.add_argument("--command-config", "-F", type=Path, metavar="FILE",
                   help="Kafka client properties file (bootstrap.servers, security.protocol, sasl.*, ssl.*); "
                        "overrides TEXTSTREAM_KAFKA_CONFIG_FILE, and TEXTSTREAM_* variables win over its keys")


def kafka_settings(args: argparse.Namespace) -> config.Settings:
    """The settings, with the properties file of --command-config when one was given."""
    path = getattr(args, "command_config", None)
    return config.load_settings(kafka_config_file=path) if path is not None else config.load_settings()


def cmd_send(args: argparse.Namespace) -> int:
    settings = kafka_settings(args)
    logs.setup(settings.log_level, settings.log_format)
    from worker import client, security, topics

    access = security.from_settings(settings)
    topic = args.topic or settings.input_topic
    asyncio.run(topics.ensure_topics(settings.bootstrap_servers, [topic], settings.topic_partitions,
                                     security=access, spec=topics.TopicSpec.from_settings(settings)))
    if args.file in (None, "-"):
        values = client.read_lines(sys.stdin.buffer)
        n = asyncio.run(client.send_values(settings.bootstrap_servers, topic, values, key_field=args.key_field,
                                           security=access))
    else:
        with Path(args.file).open("rb") as fh:
            n = asyncio.run(client.send_values(settings.bootstrap_servers, topic, client.read_lines(fh),
                                               key_field=args.key_field, security=access))
    print(f"sent {n} records to {topic}", file=sys.stderr)
    return 0


def cmd_tail(args: argparse.Namespace) -> int:
    settings = kafka_settings(args)
    logs.setup(settings.log_level, settings.log_format)
    from worker import client, security

    topics = args.topic or [settings.dlq_topic if args.dlq else settings.output_topic]
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(client.tail(settings.bootstrap_servers, topics, as_json=args.json,
                                from_beginning=args.from_beginning, idle_timeout=args.idle_timeout,
                                max_records=args.max, security=security.from_settings(settings),
                                isolation_level=args.isolation_level))
    return 0


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("send", help="send texts to the input topic, one record per line",
                       description="Each non-empty line becomes one record, bytes unchanged: a JSON object "
                                   "with 'text' (and optional 'id' and other fields) or plain text.")
    p.add_argument("file", nargs="?", help="a .jsonl or text file; '-' or nothing reads stdin")
    p.add_argument("--topic", help="default: TEXTSTREAM_INPUT_TOPIC")
    p.add_argument("--key-field", default="id",
                   help="JSON field whose string value becomes the record key (default: id; '' for none)")
    add_command_config(p)
    p.set_defaults(func=cmd_send)

    p = sub.add_parser("tail", help="follow the output (or dead-letter) topic",
                       description="Prints the records of the output topic (or others) as they arrive, from "
                                   "now on unless --from-beginning, as kafka-console-consumer does. A topic that "
                                   "does not exist yet is waited for, then read from its beginning (everything "
                                   "in it arrived after tail started).")
    p.add_argument("--dlq", action="store_true", help="follow TEXTSTREAM_DLQ_TOPIC instead of the output topic")
    p.add_argument("--topic", action="append", help="topic to follow (repeatable); overrides --dlq")
    p.add_argument("--json", action="store_true", help="one JSON object per line, for scripts")
    p.add_argument("--from-beginning", action="store_true",
                   help="print the records already in the topics too (default: only those arriving from now on)")
    p.add_argument("--max", type=int, help="stop after this many records")
    p.add_argument("--idle-timeout", type=float, help="stop after this many seconds without a record")
    p.add_argument("--isolation-level", choices=("read_uncommitted", "read_committed"), default="read_uncommitted",
                   help="read_committed: only records of committed transactions, as downstream consumers of a "
                        "worker with TEXTSTREAM_PROCESSING_GUARANTEE=exactly_once should read (default: "
                        "read_uncommitted, as kafka-console-consumer)")
    add_command_config(p)
    p.set_defaults(func=cmd_tail)

"""The worker-side commands of `textstream`: worker, kafka, send, tail.

`training.cli` adds the training commands and is the console entry point (training may import
worker, never the reverse). Heavy imports (TensorFlow, faust) happen inside the commands so that
`--help` and the client commands start instantly.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from worker import config, kafka_local, logs
from worker.errors import TextstreamError

logger = logging.getLogger(__name__)


def _config_epilog() -> str:
    rows = config.describe()
    width = max(len(name) for name, _, _ in rows)
    lines = [f"  {name:<{width}}  {desc} (default: {default})" for name, default, desc in rows]
    return "environment variables:\n" + "\n".join(lines)


def cmd_worker(args: argparse.Namespace) -> int:
    settings = config.load_settings()
    logs.setup(settings.log_level, settings.log_format)
    from worker import registry, security, topics

    version = registry.serving_version(settings.model_dir)  # fails fast on an empty registry
    access = security.from_settings(settings)  # fails fast on unreadable certificates
    # Also the start-up check of the broker, the credentials and TLS: wrong ones stop here with a
    # message instead of Faust retrying for ever.
    created = asyncio.run(topics.ensure_topics(
        settings.bootstrap_servers, [settings.input_topic, settings.output_topic, settings.dlq_topic],
        settings.topic_partitions, security=access,
    ))
    logger.info(
        "worker app_id=%s broker=%s security=%s input=%s output=%s dlq=%s registry=%s version=%d batch_size=%d "
        "batch_max_wait=%.3fs web=%s:%d created_topics=%s",
        settings.app_id, settings.bootstrap_servers, access.describe(), settings.input_topic, settings.output_topic,
        settings.dlq_topic, settings.model_dir, version, settings.batch_size, settings.batch_max_wait,
        settings.web_host, settings.web_port, ",".join(created) or "none",
    )
    # Faust, not TensorFlow: the web pages answer and the topics exist before the model loads.
    from worker import app
    from worker.reload import Serving

    app.run(settings, Serving(settings.model_dir))
    return 0


def cmd_kafka(args: argparse.Namespace) -> int:
    logs.setup("INFO")
    cfg = kafka_local.config_from_env()
    if args.action == "start":
        kafka_local.assemble(cfg)
        pid = kafka_local.start(cfg, fresh=args.fresh)
        scram = kafka_local.sasl_bootstrap(cfg)
        extra = f" scram_bootstrap={scram} (SASL_PLAINTEXT/SCRAM-SHA-512)" if scram else ""
        print(f"kafka running pid={pid} bootstrap={kafka_local.bootstrap(cfg)}{extra} logs={cfg.logs_dir}")
    elif args.action == "stop":
        print("kafka stopped" if kafka_local.stop(cfg) else "kafka was not running")
    else:
        st = kafka_local.status(cfg)
        print(" ".join(f"{k}={v}" for k, v in st.items()))
        return 0 if st["running"] else 3
    return 0


def cmd_send(args: argparse.Namespace) -> int:
    logs.setup("WARNING")
    settings = config.load_settings()
    from worker import client, security, topics

    access = security.from_settings(settings)
    topic = args.topic or settings.input_topic
    asyncio.run(topics.ensure_topics(settings.bootstrap_servers, [topic], settings.topic_partitions,
                                     security=access))
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
    logs.setup("WARNING")
    settings = config.load_settings()
    from worker import client, security

    topics = args.topic or [settings.dlq_topic if args.dlq else settings.output_topic]
    try:
        asyncio.run(client.tail(settings.bootstrap_servers, topics, as_json=args.json,
                                from_beginning=not args.latest, idle_timeout=args.idle_timeout,
                                max_records=args.max, security=security.from_settings(settings)))
    except KeyboardInterrupt:
        pass
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="textstream",
        description="Streaming text classification and clustering on Kafka.",
        epilog=_config_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("worker", help="run a worker (joins the consumer group TEXTSTREAM_APP_ID)",
                       epilog=_config_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("kafka", help="run the local single-node Kafka broker (needs java 17 and mvn)",
                       description="Assemble Apache Kafka from Maven Central jars into deploy/kafka and run it "
                                   "on 127.0.0.1. Variables: TEXTSTREAM_KAFKA_PORT (9092), "
                                   "TEXTSTREAM_KAFKA_CONTROLLER_PORT (9093), TEXTSTREAM_KAFKA_RUN_DIR, "
                                   "TEXTSTREAM_KAFKA_HOME; TEXTSTREAM_KAFKA_SASL_PORT (unset) adds a "
                                   "SASL_PLAINTEXT/SCRAM-SHA-512 listener whose user is TEXTSTREAM_SASL_USERNAME "
                                   "with TEXTSTREAM_SASL_PASSWORD (created at format time: use --fresh).")
    p.add_argument("action", choices=["start", "stop", "status"])
    p.add_argument("--fresh", action="store_true", help="wipe the broker's data before starting")
    p.set_defaults(func=cmd_kafka)

    p = sub.add_parser("send", help="send texts to the input topic, one record per line",
                       description="Each non-empty line becomes one record, bytes unchanged: a JSON object "
                                   "with 'text' (and optional 'id' and other fields) or plain text.")
    p.add_argument("file", nargs="?", help="a .jsonl or text file; '-' or nothing reads stdin")
    p.add_argument("--topic", help="default: TEXTSTREAM_INPUT_TOPIC")
    p.add_argument("--key-field", default="id",
                   help="JSON field whose string value becomes the record key (default: id; '' for none)")
    p.set_defaults(func=cmd_send)

    p = sub.add_parser("tail", help="follow the output (or dead-letter) topic")
    p.add_argument("--dlq", action="store_true", help="follow TEXTSTREAM_DLQ_TOPIC instead of the output topic")
    p.add_argument("--topic", action="append", help="topic to follow (repeatable); overrides --dlq")
    p.add_argument("--json", action="store_true", help="one JSON object per line, for scripts")
    p.add_argument("--latest", action="store_true", help="only records arriving from now on")
    p.add_argument("--max", type=int, help="stop after this many records")
    p.add_argument("--idle-timeout", type=float, help="stop after this many seconds without a record")
    p.set_defaults(func=cmd_tail)
    return parser


def run(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except TextstreamError as exc:
        print(f"textstream {args.command}: error: {exc}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    return run(build_parser(), argv)

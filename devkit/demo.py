"""The README's first command: everything on one machine, from a fresh clone to labelled records.

Starts a fresh local broker, trains on the bundled data if the registry is empty, runs one worker
process, sends news and SMS texts plus malformed records, prints what came out on the labelled and
dead-letter topics, then stops everything it started.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import random
import signal
import sys
import time
from pathlib import Path

import orjson

from devkit import kafka_local
from devkit.stack import Broker, Namespace, WorkerProcess, read_until
from worker import client, config, registry, topics
from worker.client import Record, snippet
from worker.errors import RegistryError
from worker.topics import label_topic

logger = logging.getLogger(__name__)

DEMO_MAX_TEXT_BYTES = 65_536  # small, so an oversized record can be shown (producer limit is 1 MiB)
# No step of the demo waits for a fixed short time: the reader waits for the worker's topics, and
# the outputs have until this deadline, counted from the worker's start (it ends early when the
# worker dies). A warm 2-core machine needs ~15 s, a cold disk importing TensorFlow far more.
OUTPUT_DEADLINE_S = 900
PROGRESS_EVERY_S = 15
STOP_TIMEOUT_S = 60
TRAIN_FILES = ("bbc_news_train.jsonl.gz", "sms_spam_train.jsonl.gz")
SAMPLE_FILES = (("bbc_news_test.jsonl.gz", 10), ("sms_spam_test.jsonl.gz", 6))


def malformed_records() -> list[tuple[str, bytes]]:
    """(what it is, raw bytes): each must come out on the dead-letter topic unchanged."""
    return [
        ("invalid UTF-8", b"caf\xe9 au lait \xff\xfe"),
        ("broken JSON", b'{"id": "bad-json", "text": "unterminated'),
        ("JSON without text", b'{"id": "no-text", "body": "where is the text?"}'),
        ("text is a number", b'{"id": "numeric", "text": 42}'),
        ("empty text", b'{"id": "blank", "text": "   "}'),
        ("over the size limit", orjson.dumps({"id": "huge", "text": "spam " * 20_000})),
    ]


def sample_texts(data_dir: Path, seed: int = 7) -> list[bytes]:
    rng = random.Random(seed)
    values = []
    for name, count in SAMPLE_FILES:
        with gzip.open(data_dir / name, "rb") as fh:
            rows = [orjson.loads(line) for line in fh]
        for i, row in enumerate(rng.sample(rows, count)):
            values.append(orjson.dumps({"id": f"{name.split('_test')[0]}-{i}", "text": row["text"],
                                        "expected": row["label"]}))
    return values


def ensure_model(model_dir: Path, data_dir: Path) -> int:
    found = registry.versions(model_dir)
    if found:
        serving = registry.serving_version(model_dir)
        logger.info("registry %s has versions %s; serving %d", model_dir, found, serving)
        return serving
    logger.info("registry %s is empty: training on %s (about 2 minutes on 2 cores)", model_dir, ", ".join(TRAIN_FILES))
    from training.train import train

    result = train([data_dir / name for name in TRAIN_FILES], model_dir)
    if result.version is None:  # cannot happen on an empty registry, but say so if it does
        raise RegistryError(f"{result.decision.describe()}; nothing to serve")
    return result.version


def print_tables(labeled: list[Record], dead: list[Record], label_prefix: str, out: object = sys.stdout) -> None:
    def emit(line: str = "") -> None:
        print(line, file=out)  # type: ignore[call-overload]

    emit(f"\n{len(labeled)} labelled records (each also on its label's topic):")
    outputs = [orjson.loads(rec.value or b"{}") for rec in labeled]
    width = max([len("routed to")] + [len(label_topic(label_prefix, o["label"])) for o in outputs])
    emit(f"  {'id':<12} {'expected':<13} {'label':<13} {'conf':>5} {'cluster':>7}  {'routed to':<{width}} text")
    for out_rec in outputs:
        emit(f"  {out_rec['id']:<12} {out_rec.get('expected', ''):<13} {out_rec['label']:<13} "
             f"{out_rec['confidence']:>5.2f} {out_rec['cluster_id']:>7}  "
             f"{label_topic(label_prefix, out_rec['label']):<{width}} {snippet(out_rec['text'], 50)}")
    emit(f"\n{len(dead)} dead-lettered records (original bytes kept, reason in the headers):")
    emit(f"  {'reason':<16} {'bytes':>7}  {'detail':<45} original value")
    for rec in dead:
        raw = rec.value or b""
        emit(f"  {rec.headers.get('error', '?'):<16} {len(raw):>7}  {snippet(rec.headers.get('error_detail', ''), 45):<45} "
             f"{snippet(repr(raw[:60])[2:-1], 50)}")


def run_demo(model_dir: Path | None, data_dir: Path) -> int:
    started = time.perf_counter()
    settings = config.load_settings(**({} if model_dir is None else {"model_dir": model_dir}))
    local = kafka_local.config_from_env()
    run_dir = local.home / "run-demo"
    logger.info("starting a fresh local Kafka broker on %s:%d", local.host, local.port)
    broker = Broker.start(run_dir, home=local.home, port=local.port, controller_port=local.controller_port)
    ns = Namespace("texts")  # the default topic names: texts.raw, texts.labeled, texts.dlq, ...
    worker: WorkerProcess | None = None
    try:
        version = ensure_model(settings.model_dir, data_dir)
        logger.info("starting a worker (log: %s)", run_dir / "worker.log")
        worker = WorkerProcess(ns.env(broker.bootstrap, settings.model_dir, TEXTSTREAM_APP_ID="textstream-demo",
                                      TEXTSTREAM_MAX_TEXT_BYTES=str(DEMO_MAX_TEXT_BYTES)), run_dir / "worker.log")
        good = sample_texts(data_dir)
        bad = malformed_records()
        values = good + [raw for _, raw in bad]
        asyncio.run(topics.ensure_topics(broker.bootstrap, [ns.raw], settings.topic_partitions))
        sent = asyncio.run(client.send_values(broker.bootstrap, ns.raw, values))
        logger.info("sent %d records (%d texts, %d malformed) to %s; reading %s and %s", sent, len(good), len(bad),
                    ns.raw, ns.labeled, ns.dlq)
        try:
            records = asyncio.run(read_until(
                broker.bootstrap, [ns.labeled, ns.dlq], len(values), timeout=OUTPUT_DEADLINE_S, alive=lambda: worker.alive,
                progress=lambda n: logger.info("%d/%d records out; worker %s", n, len(values), worker.state()),
                progress_every=PROGRESS_EVERY_S))
        except Exception as exc:
            print(f"demo FAILED: reading the output topics failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        labeled = [r for r in records if r.topic == ns.labeled]
        dead = [r for r in records if r.topic == ns.dlq]
        print_tables(labeled, dead, ns.label_prefix)
        ok = len(labeled) == len(good) and len(dead) == len(bad)
        print(f"\nmodel version {version}; {len(labeled)}/{len(good)} labelled, {len(dead)}/{len(bad)} dead-lettered; "
              f"demo took {time.perf_counter() - started:.0f}s. Worker log: {worker.log}")
        if not ok:
            why = (f"the worker {worker.state()}" if not worker.alive else
                   f"not every record came out within {OUTPUT_DEADLINE_S} s")
            print(f"demo FAILED: {why}; the worker log is {worker.log}:\n{worker.log_tail(2000)}", file=sys.stderr)
        return 0 if ok else 1
    finally:
        if worker is not None and worker.stop(timeout=STOP_TIMEOUT_S) not in (0, -signal.SIGTERM):
            logger.warning("the worker exited with code %s", worker.proc.returncode)
        broker.stop()
        logger.info("stopped the worker and the broker")

"""The README's first command: everything on one machine, from a fresh clone to labelled records.

Starts a fresh local broker, trains on the bundled data if the registry is empty, runs one worker
process, sends news and SMS texts plus malformed records, prints what came out on the labelled and
dead-letter topics, then stops everything it started.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson

from worker import client, config, kafka_local, registry, topics
from worker.client import Record, snippet
from worker.errors import RegistryError
from worker.topics import label_topic

logger = logging.getLogger(__name__)

DEMO_MAX_TEXT_BYTES = 65_536  # small, so an oversized record can be shown (producer limit is 1 MiB)
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


def start_worker(model_dir: Path, log_path: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, TEXTSTREAM_MODEL_DIR=str(model_dir), TEXTSTREAM_APP_ID="textstream-demo",
               TEXTSTREAM_MAX_TEXT_BYTES=str(DEMO_MAX_TEXT_BYTES))
    logger.info("starting worker (log: %s)", log_path)
    with log_path.open("wb") as log:
        return subprocess.Popen([sys.executable, "-m", "worker", "worker"], env=env, stdout=log, stderr=subprocess.STDOUT)


def stop_worker(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def collect(bootstrap: str, topics: list[str], expected: int, worker: subprocess.Popen[bytes],
                  timeout: float) -> list[Record]:
    """Read the output topics until `expected` records arrived (or the worker died, or time ran out)."""
    records: list[Record] = []
    deadline = time.monotonic() + timeout

    async def read() -> None:
        async for rec in client.follow(bootstrap, topics, from_beginning=True, idle_timeout=None):
            records.append(rec)
            if len(records) >= expected:
                return

    task = asyncio.create_task(read())
    while not task.done() and time.monotonic() < deadline and worker.poll() is None:
        await asyncio.sleep(0.2)
    if not task.done():
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return records


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


def run_demo(model_dir: Path, data_dir: Path) -> int:
    started = time.perf_counter()
    settings = config.load_settings(model_dir=model_dir)
    cfg = kafka_local.config_from_env()
    demo_cfg = kafka_local.BrokerConfig(home=cfg.home, run_dir=cfg.home / "run-demo", host=cfg.host,
                                        port=cfg.port, controller_port=cfg.controller_port)
    kafka_local.assemble(demo_cfg)
    logger.info("starting a fresh local Kafka broker on %s", kafka_local.bootstrap(demo_cfg))
    kafka_local.start(demo_cfg, fresh=True)
    bootstrap = kafka_local.bootstrap(demo_cfg)
    os.environ["TEXTSTREAM_BROKER"] = bootstrap
    worker = None
    try:
        version = ensure_model(model_dir, data_dir)
        worker = start_worker(model_dir, demo_cfg.run_dir / "worker.log")
        good = sample_texts(data_dir)
        bad = malformed_records()
        values = good + [raw for _, raw in bad]
        asyncio.run(topics.ensure_topics(bootstrap, [settings.input_topic], settings.topic_partitions))
        sent = asyncio.run(client.send_values(bootstrap, settings.input_topic, values))
        logger.info("sent %d records (%d texts, %d malformed) to %s", sent, len(good), len(bad), settings.input_topic)
        records = asyncio.run(collect(bootstrap, [settings.output_topic, settings.dlq_topic], len(values), worker, 180))
        labeled = [r for r in records if r.topic == settings.output_topic]
        dead = [r for r in records if r.topic == settings.dlq_topic]
        print_tables(labeled, dead, settings.label_topic_prefix)
        ok = len(labeled) == len(good) and len(dead) == len(bad)
        print(f"\nmodel version {version}; {len(labeled)}/{len(good)} labelled, {len(dead)}/{len(bad)} dead-lettered; "
              f"demo took {time.perf_counter() - started:.0f}s. Worker log: {demo_cfg.run_dir / 'worker.log'}")
        if not ok:
            print("demo FAILED: not every record came out; see the worker log above", file=sys.stderr)
        return 0 if ok else 1
    finally:
        if worker is not None:
            stop_worker(worker)
        kafka_local.stop(demo_cfg)
        logger.info("stopped the worker and the broker")

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
import urllib.error
import urllib.request
from pathlib import Path

import orjson

from devkit import kafka_local
from devkit.kafka_local import free_port
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


def start_worker(model_dir: Path, log_path: Path, web_port: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ, TEXTSTREAM_MODEL_DIR=str(model_dir), TEXTSTREAM_APP_ID="textstream-demo",
               TEXTSTREAM_MAX_TEXT_BYTES=str(DEMO_MAX_TEXT_BYTES), TEXTSTREAM_WEB_PORT=str(web_port),
               TEXTSTREAM_WEB_HOST="127.0.0.1")
    logger.info("starting worker (log: %s)", log_path)
    with log_path.open("wb") as log:
        return subprocess.Popen([sys.executable, "-m", "commands", "worker"], env=env, stdout=log, stderr=subprocess.STDOUT)


def stop_worker(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            logger.warning("the worker did not stop %d s after SIGTERM; killing it", STOP_TIMEOUT_S)
            proc.kill()
            proc.wait()


def worker_state(web_port: int) -> str:
    """What the worker's /readyz says, in words, for the progress lines."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/readyz", timeout=5) as resp:
            body = orjson.loads(resp.read())
    except urllib.error.HTTPError as err:  # 503 while not ready, with the checks in its body
        body = orjson.loads(err.read())
    except OSError:
        return "starting (web port not up yet)"
    if body.get("ready"):
        return f"ready, serving model version {body.get('model_version')}"
    waiting = [name for name, ok in body.get("checks", {}).items() if not ok]
    return "up, waiting for " + ", ".join(waiting)


async def collect(bootstrap: str, topics: list[str], expected: int, worker: subprocess.Popen[bytes],
                  web_port: int, deadline_s: float) -> list[Record]:
    """Read the output topics until `expected` records arrived, the worker died, or `deadline_s`
    passed; every PROGRESS_EVERY_S seconds say how far it got. The reader waits for topics the worker
    has not created yet; an error of its own is raised, not reported as missing records."""
    records: list[Record] = []
    started = time.monotonic()

    async def read() -> None:
        async for rec in client.follow(bootstrap, topics, from_beginning=True):
            records.append(rec)
            if len(records) >= expected:
                return

    task = asyncio.create_task(read())
    next_progress = started + PROGRESS_EVERY_S
    try:
        while not task.done() and worker.poll() is None and time.monotonic() - started < deadline_s:
            await asyncio.sleep(0.2)
            if time.monotonic() >= next_progress:
                next_progress += PROGRESS_EVERY_S
                state = await asyncio.to_thread(worker_state, web_port)
                logger.info("%d/%d records out after %.0f s; worker %s", len(records), expected,
                            time.monotonic() - started, state)
        if task.done():
            task.result()  # the reader's own error, if it had one
        elif worker.poll() is not None:
            logger.error("the worker exited with code %s", worker.returncode)
        elif len(records) < expected:
            logger.error("gave up after %.0f s with %d/%d records", deadline_s, len(records), expected)
    finally:
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


def run_demo(model_dir: Path | None, data_dir: Path) -> int:
    started = time.perf_counter()
    settings = config.load_settings(**({} if model_dir is None else {"model_dir": model_dir}))
    model_dir = settings.model_dir
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
        web_port = free_port()
        worker = start_worker(model_dir, demo_cfg.run_dir / "worker.log", web_port)
        good = sample_texts(data_dir)
        bad = malformed_records()
        values = good + [raw for _, raw in bad]
        asyncio.run(topics.ensure_topics(bootstrap, [settings.input_topic], settings.topic_partitions))
        sent = asyncio.run(client.send_values(bootstrap, settings.input_topic, values))
        logger.info("sent %d records (%d texts, %d malformed) to %s; reading %s and %s", sent, len(good), len(bad),
                    settings.input_topic, settings.output_topic, settings.dlq_topic)
        try:
            records = asyncio.run(collect(bootstrap, [settings.output_topic, settings.dlq_topic], len(values),
                                          worker, web_port, OUTPUT_DEADLINE_S))
        except Exception as exc:
            print(f"demo FAILED: reading the output topics failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        labeled = [r for r in records if r.topic == settings.output_topic]
        dead = [r for r in records if r.topic == settings.dlq_topic]
        print_tables(labeled, dead, settings.label_topic_prefix)
        ok = len(labeled) == len(good) and len(dead) == len(bad)
        print(f"\nmodel version {version}; {len(labeled)}/{len(good)} labelled, {len(dead)}/{len(bad)} dead-lettered; "
              f"demo took {time.perf_counter() - started:.0f}s. Worker log: {demo_cfg.run_dir / 'worker.log'}")
        if not ok:
            print(f"demo FAILED: not every record came out; the worker log is {demo_cfg.run_dir / 'worker.log'}",
                  file=sys.stderr)
        return 0 if ok else 1
    finally:
        if worker is not None:
            stop_worker(worker)
        kafka_local.stop(demo_cfg)
        logger.info("stopped the worker and the broker")

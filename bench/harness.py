"""What the benchmarks share: a local broker on free ports, worker processes in their own topic
namespace, a producer of texts, and percentiles. Benchmarks run the real worker (`python -m commands
worker`) exactly as an operator would; nothing here is a test double.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from aiokafka import AIOKafkaProducer

from devkit import kafka_local

REPO = Path(__file__).resolve().parents[1]


def texts(*names: str, seed: int = 1) -> list[str]:
    """Texts of bundled corpora (data/NAME.jsonl.gz), shuffled together."""
    out = [orjson.loads(line)["text"] for name in names for line in gzip.open(REPO / "data" / f"{name}.jsonl.gz")]
    random.Random(seed).shuffle(out)
    return out


def copy_version(source: Path, registry_dir: Path) -> None:
    """A registry at `registry_dir` holding only the version `source` serves (benchmarks change theirs)."""
    from worker import registry

    version = registry.serving_version(source)
    registry_dir.mkdir(parents=True)
    shutil.copytree(source / str(version), registry_dir / str(version))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    """Percentile q of `values` (seconds) in milliseconds."""
    return float(np.percentile(values, q)) * 1000 if values else float("nan")


def http_json(port: int, path: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
        return dict(json.loads(resp.read()))


def http_text(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
        return str(resp.read().decode())


@dataclass
class Broker:
    """A real single-node Kafka on free ports, in `work`/kafka, stopped by `stop()`."""

    work: Path
    cfg: kafka_local.BrokerConfig = field(init=False)

    def __post_init__(self) -> None:
        self.cfg = kafka_local.BrokerConfig(run_dir=self.work / "kafka", port=free_port(), controller_port=free_port())
        kafka_local.assemble(self.cfg)
        kafka_local.start(self.cfg, fresh=True)

    @property
    def bootstrap(self) -> str:
        return kafka_local.bootstrap(self.cfg)

    @property
    def pid(self) -> int | None:
        return int(self.cfg.pid_file.read_text()) if self.cfg.pid_file.exists() else None

    def stop(self) -> None:
        kafka_local.stop(self.cfg)


@dataclass
class Namespace:
    """One app id and its topics, so runs never see each other's records."""

    bootstrap: str
    registry: Path
    name: str = field(default_factory=lambda: f"bench{uuid.uuid4().hex[:6]}")

    @property
    def input(self) -> str:
        return f"{self.name}.raw"

    @property
    def output(self) -> str:
        return f"{self.name}.labeled"

    def env(self, web_port: int, **extra: str) -> dict[str, str]:
        ns = self.name
        return dict(os.environ, TEXTSTREAM_BROKER=self.bootstrap, TEXTSTREAM_MODEL_DIR=str(self.registry),
                    TEXTSTREAM_APP_ID=ns, TEXTSTREAM_INPUT_TOPIC=self.input, TEXTSTREAM_OUTPUT_TOPIC=self.output,
                    TEXTSTREAM_DLQ_TOPIC=f"{ns}.dlq", TEXTSTREAM_LABEL_TOPIC_PREFIX=f"{ns}.label.",
                    TEXTSTREAM_MODELS_TOPIC=f"{ns}.models", TEXTSTREAM_WEB_PORT=str(web_port),
                    TEXTSTREAM_RELOAD_INTERVAL="3600", TF_CPP_MIN_LOG_LEVEL="2", **extra)


class Worker:
    """`python -m commands worker` in a namespace; its log goes to `log`."""

    def __init__(self, ns: Namespace, log: Path, **env: str) -> None:
        self.port = free_port()
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "commands", "worker"], cwd=REPO,
                                         env=ns.env(self.port, **env), stdout=out, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def status(self) -> dict[str, Any]:
        return http_json(self.port, "/status")

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.time() + timeout
        while True:
            try:
                if self.status()["ready"]:
                    return
            except OSError:
                pass
            if time.time() > deadline or self.proc.poll() is not None:
                raise SystemExit(f"worker did not become ready; log: {self.log}")
            time.sleep(0.3)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()


async def produce(bootstrap: str, topic: str, items: list[tuple[str, str]], sent: dict[str, float],
                  rate: float | None = None, on_sent: Callable[[int], None] | None = None) -> None:
    """Send `{"id", "text"}` records keyed by id: as fast as the producer goes, or at `rate` per second.
    `sent[id]` is when the record was handed to the producer (latency starts there)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks=1, max_batch_size=1 << 20,
                                max_request_size=4 << 20)
    await producer.start()
    try:
        start = time.monotonic()
        for i, (rid, text) in enumerate(items):
            if rate is not None:
                while i >= (time.monotonic() - start) * rate:
                    await asyncio.sleep(0.002)
            sent[rid] = time.time()
            await producer.send(topic, orjson.dumps({"id": rid, "text": text}), key=rid.encode())
            if on_sent:
                on_sent(i)
        await producer.flush()
    finally:
        await producer.stop()


class Collector:
    """Follows a topic from its beginning in the background: `seen[id]` = output record timestamp."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        from worker import client

        self.seen: dict[str, float] = {}
        self.records = 0

        async def follow() -> None:
            async for rec in client.follow(bootstrap, [topic]):
                self.seen[orjson.loads(rec.value or b"{}")["id"]] = rec.timestamp
                self.records += 1

        self.task = asyncio.create_task(follow())

    async def wait_for(self, ids: list[str], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not all(i in self.seen for i in ids):
            if time.monotonic() > deadline or self.task.done():
                return False
            await asyncio.sleep(0.1)
        return True

    async def close(self) -> None:
        self.task.cancel()
        try:
            await self.task
        except (asyncio.CancelledError, Exception):
            pass

"""What the benchmarks share beyond devkit/stack.py (broker, namespaces, worker processes): the bundled
texts, a producer of texts, a collector of outputs, and percentiles. Benchmarks run the real worker
(`python -m commands worker`) exactly as an operator would; nothing here is a test double.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
from aiokafka import AIOKafkaProducer

from devkit.stack import REPO, Namespace, WorkerProcess


def texts(*names: str, seed: int = 1) -> list[str]:
    """Texts of bundled corpora (data/NAME.jsonl.gz), shuffled together."""
    out: list[str] = []
    for name in names:
        with gzip.open(REPO / "data" / f"{name}.jsonl.gz") as fh:
            out.extend(orjson.loads(line)["text"] for line in fh)
    random.Random(seed).shuffle(out)
    return out


def copy_version(source: Path, registry_dir: Path) -> None:
    """A registry at `registry_dir` holding only the version `source` serves (benchmarks change theirs)."""
    from worker import registry

    version = registry.serving_version(source)
    registry_dir.mkdir(parents=True)
    shutil.copytree(source / str(version), registry_dir / str(version))


def pct(values: list[float], q: float) -> float:
    """Percentile q of `values` (seconds) in milliseconds."""
    return float(np.percentile(values, q)) * 1000 if values else float("nan")


def bench_worker(bootstrap: str, ns: Namespace, registry_dir: Path, log: Path, **env: str) -> WorkerProcess:
    """A worker in `ns` serving `registry_dir`; registry polls off (benchmarks announce their versions)."""
    return WorkerProcess(ns.env(bootstrap, registry_dir, TEXTSTREAM_RELOAD_INTERVAL="3600", **env), log)


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
    """Follows a topic from its beginning in the background: `seen[id]` = output record timestamp.
    Reads with read_committed, as consumers of an exactly-once worker must (for records written
    without a transaction it is the same as read_uncommitted)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        from worker import client

        self.seen: dict[str, float] = {}
        self.records = 0

        async def follow() -> None:
            async for rec in client.follow(bootstrap, [topic], isolation_level="read_committed"):
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
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task

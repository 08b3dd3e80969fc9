"""Integration fixtures: one real Kafka broker for the session, worker processes per test.

The broker is started here (fresh data, free ports), so `pytest` alone runs the whole suite; if it
cannot start, the tests error out: a missing broker is a failure, never a skip.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.factories import free_ports
from worker import client, kafka_local

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port, controller = free_ports(2)
    cfg = kafka_local.BrokerConfig(run_dir=tmp_path_factory.mktemp("kafka"), port=port, controller_port=controller)
    kafka_local.assemble(cfg)
    kafka_local.start(cfg, fresh=True)
    try:
        yield kafka_local.bootstrap(cfg)
    finally:
        kafka_local.stop(cfg)


@dataclass
class Stack:
    """One isolated namespace on the shared broker: its own topics, consumer group and registry."""

    bootstrap: str
    model_dir: Path
    log_dir: Path
    ns: str = field(default_factory=lambda: f"it{uuid.uuid4().hex[:8]}")
    max_text_bytes: int = 2000
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def raw(self) -> str:
        return f"{self.ns}.raw"

    @property
    def labeled(self) -> str:
        return f"{self.ns}.labeled"

    @property
    def dlq(self) -> str:
        return f"{self.ns}.dlq"

    def label_topic(self, label: str) -> str:
        return f"{self.ns}.label.{label}"

    def env(self) -> dict[str, str]:
        return dict(
            os.environ,
            TEXTSTREAM_BROKER=self.bootstrap, TEXTSTREAM_MODEL_DIR=str(self.model_dir), TEXTSTREAM_APP_ID=self.ns,
            TEXTSTREAM_INPUT_TOPIC=self.raw, TEXTSTREAM_OUTPUT_TOPIC=self.labeled, TEXTSTREAM_DLQ_TOPIC=self.dlq,
            TEXTSTREAM_LABEL_TOPIC_PREFIX=f"{self.ns}.label.", TEXTSTREAM_MAX_TEXT_BYTES=str(self.max_text_bytes),
            TEXTSTREAM_WEB_PORT=str(free_ports(1)[0]), TEXTSTREAM_WEB_HOST="127.0.0.1",
            TEXTSTREAM_TOPIC_PARTITIONS="4", TF_CPP_MIN_LOG_LEVEL="2",
        )

    def start_worker(self) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"worker-{len(self.workers)}.log").open("wb")
        proc = subprocess.Popen([sys.executable, "-m", "worker", "worker"], cwd=REPO, env=self.env(),
                                stdout=log, stderr=subprocess.STDOUT)
        self.workers.append(proc)
        return proc

    def stop_worker(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        proc.send_signal(sig)
        return proc.wait(timeout=timeout)

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-4000:] for p in sorted(self.log_dir.glob("worker-*.log")))

    def send(self, values: list[bytes]) -> int:
        from worker import topics

        asyncio.run(topics.ensure_topics(self.bootstrap, [self.raw], 4))
        return asyncio.run(client.send_values(self.bootstrap, self.raw, values))

    def read(self, topics: list[str], expected: int, timeout: float = 120, settle: float = 3.0) -> list[client.Record]:
        """Read `topics` from the beginning until `expected` records arrived, then `settle` seconds more
        so that extra (duplicate) records would be seen too."""
        return asyncio.run(_read(self.bootstrap, topics, expected, timeout, settle, self.workers))


async def _read(bootstrap: str, topics: list[str], expected: int, timeout: float, settle: float,
                workers: list[subprocess.Popen[bytes]]) -> list[client.Record]:
    records: list[client.Record] = []
    deadline = time.monotonic() + timeout
    settle_until: float | None = None

    async def consume() -> None:
        async for rec in client.follow(bootstrap, topics, from_beginning=True):
            records.append(rec)

    task = asyncio.create_task(consume())
    try:
        while time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            if task.done():
                task.result()
            if settle_until is None and len(records) >= expected:
                settle_until = time.monotonic() + settle
            if settle_until is not None and time.monotonic() >= settle_until:
                break
            if workers and all(w.poll() is not None for w in workers) and len(records) < expected:
                break  # every worker died: waiting longer cannot help
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return records


@pytest.fixture
def stack(broker: str, tiny_registry: Path, tmp_path: Path) -> Iterator[Stack]:
    s = Stack(broker, tiny_registry, tmp_path)
    yield s
    for proc in s.workers:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

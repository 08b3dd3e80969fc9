"""Integration fixtures: worker processes per test on the session broker (`broker`, in tests/conftest.py,
so that tests/faults shares it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.factories import free_ports
from devkit import kafka_local
from worker import client

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Worker:
    """A `textstream worker` process and its HTTP port."""

    proc: subprocess.Popen[bytes]
    port: int

    def get(self, path: str) -> tuple[int, dict[str, object]]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:  # 503 from /readyz still has a JSON body
            return err.code, json.loads(err.read())

    def status(self) -> dict[str, object]:
        return self.get("/status")[1]

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")


def wait_until(condition: Callable[[], bool], timeout: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except OSError:  # the worker's HTTP port is not up yet
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@dataclass
class Stack:
    """One isolated namespace on the shared broker: its own topics, consumer group and registry."""

    bootstrap: str
    model_dir: Path
    log_dir: Path
    ns: str = field(default_factory=lambda: f"it{uuid.uuid4().hex[:8]}")
    max_text_bytes: int = 2000
    workers: list[Worker] = field(default_factory=list)

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

    def env(self, **overrides: str) -> dict[str, str]:
        return dict(
            os.environ,
            TEXTSTREAM_BROKER=self.bootstrap, TEXTSTREAM_MODEL_DIR=str(self.model_dir), TEXTSTREAM_APP_ID=self.ns,
            TEXTSTREAM_INPUT_TOPIC=self.raw, TEXTSTREAM_OUTPUT_TOPIC=self.labeled, TEXTSTREAM_DLQ_TOPIC=self.dlq,
            TEXTSTREAM_LABEL_TOPIC_PREFIX=f"{self.ns}.label.", TEXTSTREAM_MAX_TEXT_BYTES=str(self.max_text_bytes),
            TEXTSTREAM_MODELS_TOPIC=f"{self.ns}.models", TEXTSTREAM_WEB_HOST="127.0.0.1",
            TEXTSTREAM_TOPIC_PARTITIONS="4", TF_CPP_MIN_LOG_LEVEL="2", **overrides,
        )

    def start_worker(self, **env: str) -> Worker:
        port = free_ports(1)[0]
        log = (self.log_dir / f"worker-{len(self.workers)}.log").open("wb")
        proc = subprocess.Popen([sys.executable, "-m", "commands", "worker"], cwd=REPO,
                                env=self.env(TEXTSTREAM_WEB_PORT=str(port), **env),
                                stdout=log, stderr=subprocess.STDOUT)
        worker = Worker(proc, port)
        self.workers.append(worker)
        return worker

    def stop_worker(self, worker: Worker, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        worker.proc.send_signal(sig)
        return worker.proc.wait(timeout=timeout)

    def wait_ready(self, worker: Worker, timeout: float = 90) -> None:
        wait_until(lambda: worker.get("/readyz")[0] == 200, timeout, f"worker :{worker.port} ready\n{self.logs()}")

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
                workers: list[Worker]) -> list[client.Record]:
    records: list[client.Record] = []
    deadline = time.monotonic() + timeout
    settle_until: float | None = None

    async def consume() -> None:
        # Waits for topics the worker has not created yet (a slow start under load), within `timeout`.
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
            if workers and all(w.proc.poll() is not None for w in workers) and len(records) < expected:
                break  # every worker died: waiting longer cannot help
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return records


@contextlib.contextmanager
def running_broker(cfg: kafka_local.BrokerConfig) -> Iterator[kafka_local.BrokerConfig]:
    """A broker of one test module or test (fresh data), stopped afterwards."""
    kafka_local.assemble(cfg)
    kafka_local.start(cfg, fresh=True)
    try:
        yield cfg
    finally:
        kafka_local.stop(cfg)


@contextlib.contextmanager
def stack_on(bootstrap: str, registry: Path, tmp_path: Path) -> Iterator[Stack]:
    """A Stack whose workers still running at the end are killed."""
    s = Stack(bootstrap, registry, tmp_path)
    yield s
    for w in s.workers:
        if w.proc.poll() is None:
            w.proc.kill()
            w.proc.wait()


@pytest.fixture
def stack(broker: str, tiny_registry: Path, tmp_path: Path) -> Iterator[Stack]:
    with stack_on(broker, tiny_registry, tmp_path) as s:
        yield s

"""Integration fixtures: worker processes per test on the session broker (`broker`, in tests/conftest.py,
so that tests/faults shares it). Brokers and workers come from devkit/stack.py, as for the demo and
the benchmarks."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from devkit import kafka_local
from devkit.stack import LOAD_S, REPO, Namespace, WorkerProcess, read_until, wait_until
from worker import client, topics

__all__ = ["LOAD_S", "REPO", "Stack", "Worker", "running_broker", "stack", "stack_on", "wait_until"]

Worker = WorkerProcess


@dataclass
class Stack:
    """One isolated namespace on a broker: its own topics, consumer group and registry."""

    bootstrap: str
    model_dir: Path
    log_dir: Path
    namespace: Namespace = field(default_factory=lambda: Namespace.fresh("it"))
    max_text_bytes: int | None = 2000  # None: derived from the cluster, as in production
    workers: list[Worker] = field(default_factory=list)

    @property
    def ns(self) -> str:
        return self.namespace.name

    @property
    def raw(self) -> str:
        return self.namespace.raw

    @property
    def labeled(self) -> str:
        return self.namespace.labeled

    @property
    def dlq(self) -> str:
        return self.namespace.dlq

    def label_topic(self, label: str) -> str:
        return self.namespace.label_topic(label)

    def env(self, **overrides: str) -> dict[str, str]:
        limit = {} if self.max_text_bytes is None else {"TEXTSTREAM_MAX_TEXT_BYTES": str(self.max_text_bytes)}
        return self.namespace.env(self.bootstrap, self.model_dir, TEXTSTREAM_TOPIC_PARTITIONS="4",
                                  **{**limit, **overrides})

    def start_worker(self, **env: str) -> Worker:
        worker = Worker(self.env(**env), self.log_dir / f"worker-{len(self.workers)}.log")
        self.workers.append(worker)
        return worker

    def stop_worker(self, worker: Worker, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        return worker.stop(sig, timeout)

    def wait_ready(self, worker: Worker, timeout: float = 300) -> None:
        worker.wait_ready(timeout)

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-4000:] for p in sorted(self.log_dir.glob("worker-*.log")))

    def send(self, values: list[bytes]) -> int:
        asyncio.run(topics.ensure_topics(self.bootstrap, [self.raw], 4))
        return asyncio.run(client.send_values(self.bootstrap, self.raw, values))

    def read(self, topics: list[str], expected: int, timeout: float = 120, settle: float = 3.0) -> list[client.Record]:
        """Read `topics` from the beginning until `expected` records arrived, then `settle` seconds more
        so that extra (duplicate) records would be seen too. Gives up early once every worker died."""
        def alive() -> bool:
            return not self.workers or any(w.alive for w in self.workers)

        return asyncio.run(read_until(self.bootstrap, topics, expected, timeout=timeout, settle=settle, alive=alive))


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
    try:
        yield s
    finally:  # also when the test failed inside the `with`: no worker outlives its test
        for w in s.workers:
            if w.alive:
                w.proc.kill()
                w.proc.wait()


@pytest.fixture
def stack(broker: str, tiny_registry: Path, tmp_path: Path) -> Iterator[Stack]:
    with stack_on(broker, tiny_registry, tmp_path) as s:
        yield s

"""A local stack: a real Kafka broker on free ports and `textstream worker` processes in their own
topic namespace. The demo, the integration and fault tests and the benchmarks all start their
brokers and workers here, with the same environment, so a worker runs exactly as an operator's.

Nothing here waits for a fixed time on a start-up path: every wait is for a condition (a port that
answers, /readyz, records that arrived), bounded by a deadline the caller chooses and cut short
when the process it waits for has died.
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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devkit import kafka_local
from devkit.kafka_local import BrokerConfig, free_port, free_ports
from worker import client

__all__ = ["Broker", "Namespace", "WorkerProcess", "free_port", "free_ports", "http_get", "list_topics", "local_broker",
           "read_until", "wait_until"]

REPO = Path(__file__).resolve().parents[1]
# Deadline for a running worker to switch to another version (hash, load, warm up): a few seconds on
# an idle machine, but tests run two at a time on 2 cores beside Kafka, and must pass 3x slower.
LOAD_S = 180.0


def wait_until(condition: Callable[[], bool], timeout: float = 60, what: str = "condition",
               poll: float = 0.2) -> None:
    """Poll `condition` until it holds; AssertionError naming `what` after `timeout` seconds. An
    OSError counts as not yet (a worker's HTTP port that is not up)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except OSError:
            pass
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def http_get(port: int, path: str, timeout: float = 5) -> tuple[int, Any]:
    """(status, body) of a worker page on 127.0.0.1: JSON decoded, /metrics as text. A 503 from
    /readyz still has its JSON body."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as resp:
            status, raw, kind = resp.status, resp.read(), resp.headers.get_content_type()
    except urllib.error.HTTPError as err:
        status, raw, kind = err.code, err.read(), err.headers.get_content_type()
    return status, json.loads(raw) if kind == "application/json" else raw.decode()


@dataclass
class Broker:
    """A fresh single-node broker in `run_dir` on free ports (or the ports in `options`)."""

    cfg: BrokerConfig

    @classmethod
    def start(cls, run_dir: Path, **options: Any) -> Broker:
        if "port" not in options:
            options["port"], options["controller_port"] = free_ports(2)
        cfg = BrokerConfig(run_dir=run_dir, **options)
        kafka_local.assemble(cfg)
        kafka_local.start(cfg, fresh=True)
        return cls(cfg)

    @property
    def bootstrap(self) -> str:
        return kafka_local.bootstrap(self.cfg)

    @property
    def pid(self) -> int | None:
        return int(self.cfg.pid_file.read_text()) if self.cfg.pid_file.exists() else None

    def stop(self) -> None:
        kafka_local.stop(self.cfg)


@contextlib.contextmanager
def local_broker(run_dir: Path, **options: Any) -> Iterator[Broker]:
    broker = Broker.start(run_dir, **options)
    try:
        yield broker
    finally:
        broker.stop()


def list_topics(bootstrap: str) -> set[str]:
    """The topics on the broker, the broker's own (`__consumer_offsets`, ...) left out."""
    from aiokafka.admin import AIOKafkaAdminClient

    async def run() -> set[str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            return {t for t in await admin.list_topics() if not t.startswith("__")}
        finally:
            await admin.close()

    return asyncio.run(run())


@dataclass(frozen=True)
class Namespace:
    """One consumer group with its own topics, so that runs never see each other's records.
    Namespace("texts") has the default topic names (texts.raw, texts.labeled, ...)."""

    name: str = field(default_factory=lambda: f"ns{uuid.uuid4().hex[:8]}")

    @classmethod
    def fresh(cls, prefix: str) -> Namespace:
        return cls(f"{prefix}{uuid.uuid4().hex[:8]}")

    @property
    def raw(self) -> str:
        return f"{self.name}.raw"

    @property
    def labeled(self) -> str:
        return f"{self.name}.labeled"

    @property
    def dlq(self) -> str:
        return f"{self.name}.dlq"

    @property
    def models(self) -> str:
        return f"{self.name}.models"

    @property
    def label_prefix(self) -> str:
        return f"{self.name}.label."

    def label_topic(self, label: str) -> str:
        return self.label_prefix + label

    def env(self, bootstrap: str, model_dir: Path, **overrides: str) -> dict[str, str]:
        """The environment of a worker (or any command) in this namespace; `overrides` win."""
        return {**os.environ, "TEXTSTREAM_BROKER": bootstrap, "TEXTSTREAM_MODEL_DIR": str(model_dir),
                "TEXTSTREAM_APP_ID": self.name, "TEXTSTREAM_INPUT_TOPIC": self.raw,
                "TEXTSTREAM_OUTPUT_TOPIC": self.labeled, "TEXTSTREAM_DLQ_TOPIC": self.dlq,
                "TEXTSTREAM_LABEL_TOPIC_PREFIX": self.label_prefix, "TEXTSTREAM_MODELS_TOPIC": self.models,
                "TEXTSTREAM_WEB_HOST": "127.0.0.1", "TF_CPP_MIN_LOG_LEVEL": "2", **overrides}


class WorkerProcess:
    """`python -m commands worker` with `env` (on a free web port unless `env` names one); stdout and
    stderr go to `log`."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = int(env.get("TEXTSTREAM_WEB_PORT") or free_port())
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "commands", "worker"], cwd=REPO,
                                         env={**env, "TEXTSTREAM_WEB_PORT": str(self.port)},
                                         stdout=out, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def get(self, path: str) -> tuple[int, Any]:
        return http_get(self.port, path)

    def status(self) -> dict[str, Any]:
        return dict(self.get("/status")[1])

    def state(self) -> str:
        """What /readyz says, in words (for progress lines)."""
        if not self.alive:
            return f"exited with code {self.proc.returncode}"
        try:
            _, body = self.get("/readyz")
        except OSError:
            return "starting (web port not up yet)"
        if body.get("ready"):
            return f"ready, serving model version {body.get('model_version')}"
        return "up, waiting for " + ", ".join(name for name, ok in body.get("checks", {}).items() if not ok)

    def wait_ready(self, timeout: float = 600) -> None:
        """Until /readyz says ready; AssertionError with the log's end if the worker exits or
        `timeout` passes (generous: a cold machine takes minutes to import TensorFlow)."""
        def ready() -> bool:
            if not self.alive:
                raise AssertionError(f"worker exited with code {self.proc.returncode}:\n{self.log_tail()}")
            return bool(self.get("/readyz")[0] == 200)

        try:
            wait_until(ready, timeout, f"worker :{self.port} ready")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.log_tail()}") from None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        """Send `sig`; SIGKILL if the worker has not exited after `timeout` seconds."""
        if self.alive:
            self.proc.send_signal(sig)
            try:
                return self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait()

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


async def read_until(bootstrap: str, topics: Sequence[str], expected: int, *, timeout: float, settle: float = 0.0,
                     alive: Callable[[], bool] = lambda: True, progress: Callable[[int], None] | None = None,
                     progress_every: float = 15.0, **follow: Any) -> list[client.Record]:
    """Read `topics` from their beginning until `expected` records arrived and then `settle` seconds
    more (so that duplicates would show), until `timeout`, or until `alive()` turns false. Topics
    that do not exist yet are waited for. The reader's own error is raised, not hidden as missing
    records; `progress(count)` is called every `progress_every` seconds while it waits."""
    records: list[client.Record] = []

    async def consume() -> None:
        async for rec in client.follow(bootstrap, topics, from_beginning=True, **follow):
            records.append(rec)

    task = asyncio.create_task(consume())
    started = time.monotonic()
    settle_until: float | None = None
    next_progress = started + progress_every
    try:
        while time.monotonic() - started < timeout:
            await asyncio.sleep(0.2)
            if task.done():
                task.result()
                break
            if settle_until is None and len(records) >= expected:
                settle_until = time.monotonic() + settle
            if settle_until is not None and time.monotonic() >= settle_until:
                break
            if len(records) < expected and not alive():
                break  # whatever should have written them is gone: waiting longer cannot help
            if progress is not None and time.monotonic() >= next_progress:
                next_progress += progress_every
                progress(len(records))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return records

"""Count every input of a fault test across texts.labeled and texts.dlq.

An input is identified by where it was read from, (partition, offset) of the input topic: a labelled
output names it in its `source` field, a dead letter in its `source_partition`/`source_offset`
headers. That works for every input, including poison records that carry no parseable id. Valid
inputs also carry an `id`, which the outputs keep; the id tally is reported beside it.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from worker import client, topics

Key = tuple[int, int]  # (partition, offset) of the input topic


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    async def run() -> dict[int, int]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
        await consumer.start()
        try:
            parts = (await client.partitions_of(consumer, [topic], wait=60))[topic]
            ends = await consumer.end_offsets([TopicPartition(topic, p) for p in parts])
            return {tp.partition: off for tp, off in ends.items()}
        finally:
            await consumer.stop()

    return asyncio.run(run())


def input_keys(bootstrap: str, topic: str) -> set[Key]:
    """Every (partition, offset) written to the input topic (the topic is never compacted or trimmed)."""
    return {(p, o) for p, end in end_offsets(bootstrap, topic).items() for o in range(end)}


def read_inputs(bootstrap: str, topic: str, count: int, timeout: float = 120) -> dict[Key, bytes | None]:
    """The input topic as Kafka stored it: (partition, offset) -> value."""
    async def run() -> dict[Key, bytes | None]:
        out: dict[Key, bytes | None] = {}
        async for rec in client.follow(bootstrap, [topic], idle_timeout=timeout, max_records=count):
            out[(rec.partition, rec.offset)] = rec.value
        return out

    return asyncio.run(run())


def source_of(rec: client.Record, dlq_topic: str) -> Key:
    if rec.topic == dlq_topic:
        return int(rec.headers["source_partition"]), int(rec.headers["source_offset"])
    src = orjson.loads(rec.value or b"")["source"]
    return int(src["partition"]), int(src["offset"])


class Collector:
    """Follows the output and dead-letter topics from the beginning, in a thread with its own event loop,
    while the test kills things; `keys` counts the outputs per input."""

    def __init__(self, bootstrap: str, labeled: str, dlq: str, partitions: int = 4,
                 isolation_level: str = "read_uncommitted") -> None:
        self.bootstrap, self.labeled, self.dlq = bootstrap, labeled, dlq
        self.isolation_level = isolation_level
        self.records: list[client.Record] = []
        self.keys: Counter[Key] = Counter()
        self.arrival: list[float] = []  # monotonic time each record was seen
        asyncio.run(topics.ensure_topics(bootstrap, [labeled, dlq], partitions))
        self._error: BaseException | None = None
        self._loop = asyncio.new_event_loop()
        self._task: asyncio.Task[None] | None = None
        self._thread = threading.Thread(target=self._run, name="collector", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        async def follow() -> None:
            async for rec in client.follow(self.bootstrap, [self.labeled, self.dlq], from_beginning=True,
                                           isolation_level=self.isolation_level):
                self.keys[source_of(rec, self.dlq)] += 1
                self.arrival.append(time.monotonic())
                self.records.append(rec)

        self._task = self._loop.create_task(follow())
        try:
            self._loop.run_until_complete(self._task)
        except asyncio.CancelledError:
            pass
        except BaseException as exc:  # reported by the wait methods
            self._error = exc
        finally:
            self._loop.close()

    @property
    def count(self) -> int:
        return len(self.records)

    def _check(self) -> None:
        if self._error is not None:
            raise AssertionError(f"collector failed: {self._error!r}")

    def wait_count(self, n: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.count < n:
            self._check()
            if time.monotonic() > deadline:
                raise AssertionError(f"only {self.count} of {n} outputs after {timeout:.0f} s")
            time.sleep(0.05)

    def wait_covered(self, expected: set[Key], timeout: float, settle: float = 3.0) -> float:
        """Until every expected input has an output (or timeout), then `settle` s more so that late
        duplicates are counted too. Returns the seconds waited before the settle."""
        started = time.monotonic()
        while time.monotonic() - started < timeout and not expected <= self.keys.keys():
            self._check()
            time.sleep(0.2)
        waited = time.monotonic() - started
        time.sleep(settle)
        return waited

    def first_after(self, t: float) -> float | None:
        """Monotonic arrival time of the first record seen after `t` (None if none)."""
        return next((a for a in list(self.arrival) if a > t), None)

    def first_produced_after(self, wall: float) -> float | None:
        """Kafka timestamp (Unix s) of the first output produced after `wall`: after a kill, only the
        new process can have produced it (an arrival time would also count the old one's stragglers)."""
        return min((r.timestamp for r in list(self.records) if r.timestamp > wall), default=None)

    def stop(self) -> None:
        if self._task is not None:
            self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(timeout=15)


@dataclass
class Tally:
    """What a fault test reports: lost and duplicated inputs, by source offset and by id."""

    test: str
    inputs: int
    outputs: int
    labeled: int
    dead_lettered: int
    lost: int
    duplicates: int  # extra copies of inputs that came out more than once
    duplicated_inputs: int
    unexpected: int  # outputs naming an input that was never sent (must be 0)
    ids_lost: int | None = None
    id_duplicates: int | None = None
    extra: dict[str, object] = field(default_factory=dict)

    def line(self) -> str:
        return "FAULT-RESULT " + json.dumps(asdict(self), sort_keys=True)


def tally(test: str, records: list[client.Record], expected: set[Key], dlq_topic: str,
          ids: set[str] | None = None, **extra: object) -> Tally:
    keys: Counter[Key] = Counter(source_of(r, dlq_topic) for r in records)
    dead = sum(1 for r in records if r.topic == dlq_topic)
    result = Tally(
        test=test, inputs=len(expected), outputs=len(records), labeled=len(records) - dead, dead_lettered=dead,
        lost=len(expected - keys.keys()), duplicates=sum(c - 1 for k, c in keys.items() if k in expected),
        duplicated_inputs=sum(1 for k, c in keys.items() if c > 1 and k in expected),
        unexpected=sum(1 for k in keys if k not in expected), extra=dict(extra),
    )
    if ids is not None:
        seen = Counter(orjson.loads(r.value or b"")["id"] for r in records if r.topic != dlq_topic)
        result.ids_lost = len(ids - seen.keys())
        result.id_duplicates = sum(c - 1 for c in seen.values())
    report(result)
    return result


def report(result: Tally) -> None:
    """Print the result (pytest -rA shows it) and append it to $TEXTSTREAM_FAULTS_REPORT if set."""
    print(result.line())
    path = os.environ.get("TEXTSTREAM_FAULTS_REPORT")
    if path:
        with open(path, "a") as fh:
            fh.write(result.line() + "\n")


class Producer:
    """Sends `values` to `topic` at `rate` records/s in a background thread: a stream that keeps
    flowing while the test kills things. `sent` counts the records Kafka acknowledged, `queued` the
    records handed to the client; `set_rate` changes the pace from the next record on."""

    def __init__(self, bootstrap: str, topic: str, values: Sequence[bytes | None], rate: float) -> None:
        self.bootstrap, self.topic, self.values, self.rate = bootstrap, topic, values, rate
        self.sent = 0
        self.queued = 0
        self._new_rate: float | None = None
        self.error: BaseException | None = None
        asyncio.run(topics.ensure_topics(bootstrap, [topic], 4))
        self._thread = threading.Thread(target=self._run, name="producer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            asyncio.run(self._produce())
        except BaseException as exc:
            self.error = exc

    async def _produce(self) -> None:
        # Idempotent: a batch retried after a broker crash must not be written twice, or the input
        # topic itself would hold duplicates (seen once in 3 broker-SIGKILL runs without it).
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=5, enable_idempotence=True,
                                    request_timeout_ms=120_000, max_request_size=16 * 1024 * 1024)
        await producer.start()
        try:
            start, first, rate = time.monotonic(), 0, self.rate
            pending: list[asyncio.Future[object]] = []
            for i, value in enumerate(self.values):
                if self._new_rate is not None:
                    start, first, rate, self._new_rate = time.monotonic(), i, self._new_rate, None
                due = start + (i - first) / rate
                if due > time.monotonic() + 0.001:
                    await asyncio.sleep(due - time.monotonic())
                # aiokafka refuses a record with neither key nor value: a tombstone gets a key.
                key = client.key_of(value, "id") if value is not None else b"tombstone"
                pending.append(await producer.send(self.topic, value, key=key))
                self.queued = i + 1
                if len(pending) >= 500:
                    await asyncio.gather(*pending)
                    self.sent += len(pending)
                    pending.clear()
            await asyncio.gather(*pending)
            self.sent += len(pending)
        finally:
            await producer.stop()

    def set_rate(self, rate: float) -> None:
        if rate <= 0:
            raise ValueError(f"rate {rate}")
        self.rate = self._new_rate = rate

    def last_at_least(self, seconds: float) -> None:
        """Keep the stream flowing for `seconds` more on a machine slower than the one the rate was
        chosen on: if what is left to send would run out sooner, lower the rate. The record count
        never changes, only the pace."""
        left = len(self.values) - self.queued
        if left > 0 and left / self.rate < seconds:
            self.set_rate(max(1.0, left / seconds))

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError(f"producer still running after {timeout:.0f} s ({self.sent} sent)")
        if self.error is not None:
            raise AssertionError(f"producer failed after {self.sent} records: {self.error!r}")

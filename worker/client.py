"""Client commands: send texts to the input topic, follow the output and dead-letter topics."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import IO, Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from worker.security import PLAINTEXT, BrokerUnavailable, ClientSecurity, start_client

logger = logging.getLogger(__name__)


def key_of(line: bytes, key_field: str | None) -> bytes | None:
    """The record key: the JSON object's `key_field` when it is a string, else none."""
    if not key_field or not line.lstrip().startswith(b"{"):
        return None
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    value = obj.get(key_field) if isinstance(obj, dict) else None
    return value.encode() if isinstance(value, str) and value else None


async def send_values(
    bootstrap: str, topic: str, values: Iterable[bytes], *, key_field: str | None = "id",
    max_request_size: int = 16 * 1024 * 1024, security: ClientSecurity = PLAINTEXT,
) -> int:
    """Produce each value as one record (bytes unchanged); wait until Kafka acknowledged all."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                                max_request_size=max_request_size, **security.kwargs())
    await start_client(producer, bootstrap, security)
    count = 0
    try:
        pending = []
        for value in values:
            pending.append(await producer.send(topic, value, key=key_of(value, key_field)))
            count += 1
            if len(pending) >= 10_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return count


def read_lines(stream: IO[bytes]) -> Iterable[bytes]:
    """Records of a file or stdin: one per non-empty line, sent exactly as written."""
    for line in stream:
        line = line.rstrip(b"\r\n")
        if line.strip():
            yield line


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]
    timestamp: float


async def follow(
    bootstrap: str, topics: Sequence[str], *, from_beginning: bool = True, idle_timeout: float | None = None,
    max_records: int | None = None, security: ClientSecurity = PLAINTEXT, topic_wait: float | None = None,
    isolation_level: str = "read_uncommitted",
) -> AsyncIterator[Record]:
    """Yield records of `topics` (no consumer group, nothing committed) until `max_records` or
    `idle_timeout` seconds without a record: from their beginning, or (not `from_beginning`) only
    the records that arrive from now on (`start_positions`).

    Topics that do not exist yet are waited for, as kafka-console-consumer does: a reader started
    before the worker (which creates its topics) attaches when they appear. `topic_wait` bounds
    that wait in seconds (None: for ever); past it BrokerUnavailable names the missing topics.
    `isolation_level="read_committed"` shows only records of committed transactions (and records
    written without one), as an exactly-once worker's consumers should read its outputs."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest", isolation_level=isolation_level,
        **security.kwargs(),
    )
    await start_client(consumer, bootstrap, security)
    try:
        await consumer._client.force_metadata_update()  # aiokafka has no public refresh
        existing = {t for t in topics if consumer.partitions_for_topic(t)}
        found = await partitions_of(consumer, topics, topic_wait)
        partitions = [TopicPartition(topic, p) for topic, parts in found.items() for p in sorted(parts)]
        consumer.assign(partitions)
        start, end = start_positions(found, existing, from_beginning)
        if start:
            await consumer.seek_to_beginning(*start)
        if end:
            await consumer.seek_to_end(*end)
        seen = 0
        last = time.monotonic()
        while max_records is None or seen < max_records:
            batch = await consumer.getmany(timeout_ms=200)
            if not batch:
                if idle_timeout is not None and time.monotonic() - last > idle_timeout:
                    return
                continue
            last = time.monotonic()
            for tp_records in batch.values():
                for r in tp_records:
                    yield Record(r.topic, r.partition, r.offset, r.key, r.value,
                                 {k: v.decode("utf-8", "replace") for k, v in (r.headers or ())},
                                 r.timestamp / 1000)
                    seen += 1
    finally:
        await consumer.stop()


def start_positions(found: dict[str, set[int]], existing: set[str],
                    from_beginning: bool) -> tuple[list[TopicPartition], list[TopicPartition]]:
    """(partitions read from their beginning, partitions read from their end). Without
    `from_beginning`, only records arriving from now on: the end of the topics that existed when the
    reader started, and all of a topic created since (everything in it arrived after the start)."""
    start: list[TopicPartition] = []
    end: list[TopicPartition] = []
    for topic, parts in found.items():
        (start if from_beginning or topic not in existing else end).extend(TopicPartition(topic, p) for p in sorted(parts))
    return start, end


async def partitions_of(consumer: AIOKafkaConsumer, topics: Sequence[str],
                        wait: float | None = None) -> dict[str, set[int]]:
    """The partitions of each topic, once every topic exists: waits (and says so once) for the ones
    that do not, up to `wait` seconds (None: for ever)."""
    deadline = None if wait is None else time.monotonic() + wait
    said = False
    while True:
        await consumer._client.force_metadata_update()  # aiokafka has no public refresh
        found = {t: set(consumer.partitions_for_topic(t) or ()) for t in topics}
        missing = sorted(t for t, parts in found.items() if not parts)
        if not missing:
            return found
        if deadline is not None and time.monotonic() >= deadline:
            raise BrokerUnavailable(f"topic(s) {', '.join(missing)} did not appear on the broker within {wait:g} s")
        if not said:
            logger.warning("waiting for topic(s) %s to be created (a worker creates its topics when it starts)",
                           ", ".join(missing))
            said = True
        await asyncio.sleep(0.5)


def snippet(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def render(record: Record, as_json: bool) -> str:
    """One line per record: the raw JSON, or a readable summary."""
    if as_json:
        body: Any
        try:
            body = orjson.loads(record.value) if record.value is not None else None
        except orjson.JSONDecodeError:
            body = (record.value or b"").decode("utf-8", "replace")
        return orjson.dumps({"topic": record.topic, "partition": record.partition, "offset": record.offset,
                             "key": record.key.decode("utf-8", "replace") if record.key else None,
                             "headers": record.headers, "value": body}).decode()
    if "error" in record.headers:
        raw = (record.value or b"").decode("utf-8", "replace")
        return (f"{record.topic}[{record.partition}]@{record.offset} DEAD-LETTER reason={record.headers['error']} "
                f"detail={snippet(record.headers.get('error_detail', ''), 60)!r} value={snippet(raw, 50)!r}")
    try:
        out = orjson.loads(record.value or b"")
        return (f"{record.topic}[{record.partition}]@{record.offset} {out['label']:<14} conf={out['confidence']:.3f} "
                f"cluster={out['cluster_id']:<3} v{out['model_version']} id={out['id']} {snippet(out['text'], 60)!r}")
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):  # not one of our outputs
        return f"{record.topic}[{record.partition}]@{record.offset} {snippet((record.value or b'').decode('utf-8', 'replace'), 100)!r}"


async def tail(bootstrap: str, topics: Sequence[str], *, as_json: bool, from_beginning: bool,
               idle_timeout: float | None, max_records: int | None, out: IO[str] = sys.stdout,
               security: ClientSecurity = PLAINTEXT, topic_wait: float | None = None,
               isolation_level: str = "read_uncommitted") -> int:
    count = 0
    async for record in follow(bootstrap, topics, from_beginning=from_beginning, idle_timeout=idle_timeout,
                               max_records=max_records, security=security, topic_wait=topic_wait,
                               isolation_level=isolation_level):
        out.write(render(record, as_json) + "\n")
        out.flush()
        count += 1
    return count

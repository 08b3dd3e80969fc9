"""`textstream dlq replay`: send dead letters back to the input topic once, after a fix.

A dead letter (worker/route.py) holds the input's original value, key and headers, followed by the
reason headers (`error`, `error_detail`, `source_topic`, `source_partition`, `source_offset`, and
`original_dropped` when the original could not be kept). Replaying one sends the original value and
key, with the original headers plus `replayed_from: <dead-letter topic>:<partition>:<offset>`, to
the input topic.

Once: every dead letter replayed is recorded on a ledger topic (`<dead-letter topic>.replayed`, key
`<topic>:<partition>:<offset>:<timestamp ms>`), written after Kafka acknowledged the re-sent records; a replay skips the
dead letters the ledger names. A ledger rather than a consumer group's committed offsets, because
replays filter: a group that read past the `invalid_json` dead letters while replaying `model_error`
ones would never offer them again, and two replays with overlapping filters would send some twice.
A replay that stops between the re-sends and the ledger write sends those again next time (at least
once, as everywhere in textstream); run one replay at a time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import RecordMetadata

from worker import topics
from worker.security import PLAINTEXT, ClientSecurity, start_client

REASON_HEADERS = ("error", "error_detail", "source_topic", "source_partition", "source_offset")
DROPPED = "original_dropped"
MARKER = "replayed_from"
Headers = tuple[tuple[str, bytes], ...]


def ledger_topic(dead_letter_topic: str) -> str:
    return f"{dead_letter_topic}.replayed"


@dataclass(frozen=True)
class DeadLetter:
    topic: str
    partition: int
    offset: int
    timestamp: float  # seconds: when it was dead-lettered
    key: bytes | None
    value: bytes | None
    headers: Headers

    def header(self, name: str) -> str | None:
        """The last header `name` (the worker's reason headers come after the original ones)."""
        found = [v for k, v in self.headers if k == name]
        return found[-1].decode("utf-8", "replace") if found else None

    @property
    def reason(self) -> str:
        return self.header("error") or "?"

    @property
    def replayable(self) -> bool:
        """False when the dead letter does not hold one original record: too large to keep it, or a
        `corrupt_batch` (its value is a whole stored batch, which no client could read)."""
        return (self.header(DROPPED) != "true" and self.header("error") is not None
                and self.reason != "corrupt_batch")

    @property
    def ledger_key(self) -> bytes:
        """topic:partition:offset:timestamp (ms): the topic for a ledger shared by several dead-letter
        topics (--ledger), the timestamp for a dead-letter topic deleted and created again (its offsets
        start over at 0, its records' timestamps do not)."""
        return f"{self.topic}:{self.partition}:{self.offset}:{round(self.timestamp * 1000)}".encode()

    def original_headers(self) -> list[tuple[str, bytes]]:
        """The input's own headers: the dead letter's, less the reason headers at their end and the
        marker of an earlier replay."""
        hs = list(self.headers)
        if hs and hs[-1][0] == DROPPED:
            hs.pop()
        if tuple(k for k, _ in hs[-len(REASON_HEADERS):]) == REASON_HEADERS:
            hs = hs[:-len(REASON_HEADERS)]
        return [(k, v) for k, v in hs if k != MARKER]

    def replay_headers(self) -> list[tuple[str, bytes]]:
        return [*self.original_headers(), (MARKER, f"{self.topic}:{self.partition}:{self.offset}".encode())]


@dataclass(frozen=True)
class Selection:
    """Which dead letters to replay: every criterion given must hold (none given: all of them)."""

    reasons: frozenset[str] = frozenset()
    since: float | None = None  # dead-lettered at or after (Unix seconds)
    until: float | None = None  # dead-lettered before
    partition: int | None = None
    from_offset: int | None = None  # inclusive
    to_offset: int | None = None  # inclusive

    def matches(self, d: DeadLetter) -> bool:
        return ((not self.reasons or d.reason in self.reasons)
                and (self.since is None or d.timestamp >= self.since)
                and (self.until is None or d.timestamp < self.until)
                and (self.partition is None or d.partition == self.partition)
                and (self.from_offset is None or d.offset >= self.from_offset)
                and (self.to_offset is None or d.offset <= self.to_offset))


@dataclass
class Plan:
    """The dead letters selected, split by what a replay does with each."""

    send: list[DeadLetter] = field(default_factory=list)
    already: list[DeadLetter] = field(default_factory=list)  # named by the ledger
    unreplayable: list[DeadLetter] = field(default_factory=list)  # the original was not kept

    @classmethod
    def of(cls, letters: Sequence[DeadLetter], selection: Selection, done: set[bytes]) -> Plan:
        plan = cls()
        for d in letters:
            if not selection.matches(d):
                continue
            if d.ledger_key in done:
                plan.already.append(d)
            elif not d.replayable:
                plan.unreplayable.append(d)
            else:
                plan.send.append(d)
        return plan


async def read_topic(bootstrap: str, topic: str, security: ClientSecurity = PLAINTEXT, *,
                     partition: int | None = None, from_offset: int | None = None) -> list[ConsumerRecord[bytes, bytes]]:
    """The records of `topic` (of one `partition`, else all) from their beginning (or `from_offset`)
    up to their end when the read began; [] for a topic that does not exist."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest", **security.kwargs())
    await start_client(consumer, bootstrap, security)
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        await consumer._client.force_metadata_update()  # aiokafka has no public refresh
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())
                 if partition is None or p == partition]
        if not parts:
            return []
        consumer.assign(parts)
        ends = await consumer.end_offsets(parts)
        await consumer.seek_to_beginning(*parts)
        for tp in parts:
            if from_offset is not None and from_offset > await consumer.position(tp):
                consumer.seek(tp, from_offset)
        pending = [tp for tp in parts if await consumer.position(tp) < ends[tp]]
        while pending:
            batch = await consumer.getmany(*pending, timeout_ms=1000)
            for tp, recs in batch.items():
                records.extend(r for r in recs if r.offset < ends[tp])
            pending = [tp for tp in pending if await consumer.position(tp) < ends[tp]]
    finally:
        await consumer.stop()
    return records


def dead_letter(r: ConsumerRecord[bytes, bytes]) -> DeadLetter:
    return DeadLetter(r.topic, r.partition, r.offset, r.timestamp / 1000, r.key, r.value,
                      tuple((k, bytes(v or b"")) for k, v in (r.headers or ())))


async def plan(bootstrap: str, dead_letter_topic: str, selection: Selection, *, ledger: str,
               security: ClientSecurity = PLAINTEXT) -> Plan:
    """What a replay of `selection` would do: read the dead-letter topic (from --from-offset where
    given) and the ledger."""
    letters = [dead_letter(r) for r in await read_topic(bootstrap, dead_letter_topic, security,
                                                        partition=selection.partition,
                                                        from_offset=selection.from_offset)]
    done = {r.key for r in await read_topic(bootstrap, ledger, security) if r.key is not None}
    return Plan.of(letters, selection, done)


async def send(bootstrap: str, letters: Sequence[DeadLetter], *, to: str, ledger: str,
               security: ClientSecurity = PLAINTEXT, spec: topics.TopicSpec = topics.DEFAULT_SPEC,
               partitions: int = 1) -> list[str | None]:
    """Re-send each dead letter's original to `to`, then record on `ledger` each one Kafka
    acknowledged (both with acks=all); returns, per letter, None when sent or why not. One refused
    record (e.g. still too large for `to`) leaves the others recorded, so a rerun skips them."""
    if not letters:
        return []
    await topics.ensure_topics(bootstrap, [ledger], partitions, security=security, spec=spec)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                                max_request_size=16 * 1024 * 1024, **security.kwargs())
    await start_client(producer, bootstrap, security)
    try:
        pending: list[asyncio.Future[RecordMetadata] | BaseException] = []
        for d in letters:
            try:
                pending.append(await producer.send(to, d.value, key=d.key, headers=d.replay_headers()))
            except KafkaError as exc:  # refused before sending (e.g. larger than max_request_size)
                pending.append(exc)
        results = [p if isinstance(p, BaseException) else (await asyncio.gather(p, return_exceptions=True))[0]
                   for p in pending]
        now = time.time()
        marks = [await producer.send(ledger, orjson.dumps({
            "dead_letter": {"topic": d.topic, "partition": d.partition, "offset": d.offset}, "reason": d.reason,
            "sent_to": {"topic": r.topic, "partition": r.partition, "offset": r.offset}, "replayed_at": now,
        }), key=d.ledger_key) for d, r in zip(letters, results, strict=True) if not isinstance(r, BaseException)]
        for f in marks:
            await f
    finally:
        await producer.stop()
    return [f"{type(r).__name__}: {r}" if isinstance(r, BaseException) else None for r in results]

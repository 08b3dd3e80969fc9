"""Size limits at Kafka's real defaults, and records no client library can decode (a bad header key,
a corrupt batch on the broker's disk), on a real broker.

The session broker runs with Kafka's default limits (message.max.bytes 1,048,588; no topic
overrides), and these workers run with the default TEXTSTREAM_MAX_TEXT_BYTES (unset: derived from
the cluster), not the 2,000 bytes of the other integration tests. Every input goes to one
partition, so a record that stopped the worker would hold back every record after it.
"""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.client import AIOKafkaClient
from aiokafka.protocol.produce import ProduceRequest

from devkit.stack import WorkerProcess
from tests.integration.conftest import Stack, wait_until
from tests.unit.worker.test_fetching import BAD_KEY, batch_bytes
from worker import client, limits, topics

pytestmark = pytest.mark.integration

KAFKA_DEFAULT = limits.KAFKA_DEFAULT_MAX_MESSAGE_BYTES
WORDS = b"the central bank raised interest rates as inflation hit company profits and shares fell "


def text(size: int, filler: bytes = WORDS) -> bytes:
    return (filler * (size // len(filler) + 1))[:size]


def start_default_worker(stack: Stack) -> WorkerProcess:
    """A worker without TEXTSTREAM_MAX_TEXT_BYTES: its limits come from the cluster."""
    env = stack.env()
    del env["TEXTSTREAM_MAX_TEXT_BYTES"]
    worker = WorkerProcess(env, stack.log_dir / f"worker-{len(stack.workers)}.log")
    stack.workers.append(worker)
    return worker


Input = tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]  # (name, key, value, headers)


async def produce(bootstrap: str, topic: str, inputs: list[Input]) -> dict[int, str]:
    """Send every input to partition 0, in order; {offset: name}."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=4 * 1024 * 1024)
    await producer.start()
    try:
        offsets = {}
        for name, key, value, headers in inputs:
            meta = await (await producer.send(topic, value, key=key, partition=0, headers=headers))
            offsets[meta.offset] = name
        return offsets
    finally:
        await producer.stop()


def outcomes(stack: Stack, offsets: dict[int, str]) -> tuple[dict[str, list[client.Record]], dict[str, list[client.Record]]]:
    """Every input's labelled outputs and dead letters, by input name, read until each came out."""
    records = stack.read([stack.labeled, stack.dlq], len(offsets), timeout=300)
    labelled: dict[str, list[client.Record]] = {name: [] for name in offsets.values()}
    dead: dict[str, list[client.Record]] = {name: [] for name in offsets.values()}
    for rec in records:
        if rec.topic == stack.labeled:
            source = orjson.loads(rec.value or b"")["source"]
            labelled[offsets[source["offset"]]].append(rec)
        else:
            dead[offsets[int(rec.headers["source_offset"])]].append(rec)
    return labelled, dead


def test_values_keys_and_headers_across_the_limits_at_kafka_defaults(stack: Stack) -> None:
    asyncio.run(topics.ensure_topics(stack.bootstrap, [stack.raw], 4))
    limit = limits.largest_value(KAFKA_DEFAULT, stack.raw)  # what the worker derives for this topic
    big_key = b"K" * 100_000
    inputs: list[Input] = [
        ("small", None, b"a short text about the central bank", []),
        ("labelled_large", None, text(1_040_000), []),
        ("at_limit", None, text(limit), []),
        ("just_over", None, text(limit + 1), []),
        ("repro_1048400", None, text(1_048_400), []),
        ("repro_1048450", None, text(1_048_450), []),
        ("key_and_value", big_key, text(900_000), []),
        # JSON escapes every newline: with the key the output is over the limit, the input is not.
        ("key_and_escaped_value", big_key, text(900_000, b"word\n"), []),
        ("key_over", b"K" * 1000, text(limit - 500), []),
        ("large_headers", None, text(500_000), [("trace", b"t" * 300_000), ("h2", b"x")]),
        ("headers_over", None, text(limit - 2000), [("trace", b"t" * 2500)]),
        ("last", None, b"the striker scored twice and the club won the league", []),
    ]
    for name, key, value, headers in inputs:  # the broker takes each one
        assert limits.batch_bytes(key, value, headers) <= KAFKA_DEFAULT, name
    offsets = asyncio.run(produce(stack.bootstrap, stack.raw, inputs))
    worker = start_default_worker(stack)

    labelled, dead = outcomes(stack, offsets)
    assert worker.alive, worker.log_tail()
    log = worker.log.read_text(errors="replace")
    assert f"input values up to {limit} bytes" in log and f"dead letters up to {KAFKA_DEFAULT} bytes" in log
    for name in offsets.values():  # exactly once, labelled or dead-lettered
        assert len(labelled[name]) + len(dead[name]) == 1, (name, len(labelled[name]), len(dead[name]))
    by_name = {name: (key, value, headers) for name, key, value, headers in inputs}

    def reason(name: str) -> str | None:
        return dead[name][0].headers["error"] if dead[name] else None

    def kept(name: str) -> None:
        """The dead letter carries the original value, key and headers, then the reason headers."""
        (rec,) = dead[name]
        key, value, headers = by_name[name]
        assert (rec.value, rec.key) == (value, key), name
        assert "original_dropped" not in rec.headers
        for h, data in headers:
            assert rec.headers[h] == data.decode(), name

    for name in ("small", "labelled_large", "key_and_value", "large_headers", "last"):
        assert labelled[name], (name, reason(name), dead[name][0].headers.get("error_detail") if dead[name] else "")
    assert labelled["key_and_value"][0].key == big_key
    # Just under the input limit: labelled, or dead-lettered whole when its output is too large.
    assert labelled["at_limit"] or reason("at_limit") == "output_too_large"
    if dead["at_limit"]:
        kept("at_limit")
    assert reason("key_and_escaped_value") == "output_too_large"
    kept("key_and_escaped_value")
    for name in ("just_over", "key_over", "headers_over"):
        assert reason(name) == "too_large", name
        kept(name)
    for name in ("repro_1048400", "repro_1048450"):
        # Its dead letter with the original bytes would exceed the DLQ topic's limit: it goes without.
        (rec,) = dead[name]
        assert (reason(name), rec.value, rec.key, rec.headers["original_dropped"]) == ("too_large", b"", None, "true"), name
        assert "original not kept" in rec.headers["error_detail"]
    assert worker.alive, worker.log_tail()


def test_a_cluster_smaller_than_the_variable_is_refused_at_start(stack: Stack) -> None:
    stack.max_text_bytes = 1_048_576  # the default before the limits were derived
    worker = stack.start_worker()
    assert worker.proc.wait(timeout=300) != 0
    log = worker.log.read_text(errors="replace")
    fits = limits.largest_value(KAFKA_DEFAULT, stack.raw)
    assert f"TEXTSTREAM_MAX_TEXT_BYTES=1048576 is above {fits}" in log, worker.log_tail()
    assert "max.message.bytes=1048588" in log


async def produce_raw(bootstrap: str, topic: str, batch: bytes) -> None:
    """One hand-built record batch to partition 0, as a bare ProduceRequest (no client library
    would write a header key that is not UTF-8)."""
    kafka = AIOKafkaClient(bootstrap_servers=bootstrap)
    await kafka.bootstrap()
    try:
        kafka.add_topic(topic)
        await kafka.force_metadata_update()
        leader = kafka.cluster.leader_for_partition(TopicPartition(topic, 0))
        response = await kafka.send(leader, ProduceRequest(None, -1, 30_000, [(topic, [(0, batch)])]))
        ((_, ((_, error_code, *_),)),) = response.topics
        assert error_code == 0, response
    finally:
        await kafka.close()


def test_a_record_with_a_non_utf8_header_key_does_not_stop_its_partition(stack: Stack, tmp_path: Path) -> None:
    asyncio.run(topics.ensure_topics(stack.bootstrap, [stack.raw], 4))
    before = [("before", None, b"the film won three awards at the festival", [])]
    offsets = asyncio.run(produce(stack.bootstrap, stack.raw, before))  # offset 0
    # One batch: a good record, the bad one, a good one (aiokafka alone loses the first with the second).
    asyncio.run(produce_raw(stack.bootstrap, stack.raw, batch_bytes([
        (b"k1", b"ministers defended the budget in parliament", [("ok", b"1")]),
        (b"k2", b"the software update makes the phone faster", [("\x01\x02h", b"2")]),
        (b"k3", b"the club won the league title after the final", []),
    ])))
    offsets.update({1: "batch_good_1", 2: "bad", 3: "batch_good_2"})
    offsets.update(asyncio.run(produce(stack.bootstrap, stack.raw, [
        ("after", None, b"shares fell as the bank raised rates", [])])))
    assert sorted(offsets) == [0, 1, 2, 3, 4]
    stack.start_worker()

    labelled, dead = outcomes(stack, offsets)
    for name in ("before", "batch_good_1", "batch_good_2", "after"):
        assert len(labelled[name]) == 1 and not dead[name], name
    assert not labelled["bad"]
    (rec,) = dead["bad"]
    assert rec.headers["error"] == "undecodable_record"
    assert (rec.key, rec.value) == (b"k2", b"the software update makes the phone faster")
    assert rec.headers["\ufffd\ufffdh"] == "2"  # the header kept, its key's invalid bytes replaced
    assert repr(BAD_KEY) in rec.headers["error_detail"]
    assert all(w.alive for w in stack.workers), stack.logs()


async def committed_offset(bootstrap: str, group: str, topic: str, partition: int) -> int | None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        meta = (await admin.list_consumer_group_offsets(group)).get(TopicPartition(topic, partition))
        return None if meta is None else int(meta.offset)
    finally:
        await admin.close()


def stored_batch(segment: bytes, base_offset: int) -> bytes:
    """The batch at `base_offset` in a log segment (batches one after another: base offset, length, rest)."""
    pos = 0
    while pos < len(segment):
        base, length = struct.unpack_from(">qi", segment, pos)
        if base == base_offset:
            return segment[pos:pos + 12 + length]
        pos += 12 + length
    raise AssertionError(f"no batch at offset {base_offset}")


def test_a_corrupt_record_batch_on_the_brokers_disk_is_dead_lettered_and_skipped(
        stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> None:
    """A bit flipped in a stored batch (the broker checks CRCs on produce, not on fetch: it serves
    the file as it is). No client can read that batch; the partition goes on past it."""
    asyncio.run(topics.ensure_topics(stack.bootstrap, [stack.raw], 4))
    offsets = asyncio.run(produce(stack.bootstrap, stack.raw, [
        ("before_1", None, b"the film won three awards at the festival", []),
        ("before_2", None, b"ministers defended the budget in parliament", [])]))  # offsets 0, 1
    # One batch of three records (offsets 2..4), then one record after it.
    asyncio.run(produce_raw(stack.bootstrap, stack.raw, batch_bytes([
        (None, b"the software update makes the phone faster", []),
        (None, b"the club won the league title after the final", []),
        (None, b"CORRUPTED shares fell as the bank raised rates", [])])))
    offsets.update({4: "corrupt"})
    offsets.update(asyncio.run(produce(stack.bootstrap, stack.raw, [
        ("after", None, b"the striker scored twice and the club won the league", [])])))
    assert sorted(offsets) == [0, 1, 4, 5]

    # The broker's segment file of partition 0 (the session broker runs in the test session's temp dir).
    (segment,) = tmp_path_factory.getbasetemp().glob(f"kafka[0-9]*/data/{stack.raw}-0/*.log")  # not kafkacurrent, a link
    stored = segment.read_bytes()
    at = stored.index(b"CORRUPTED")
    with segment.open("r+b") as f:  # one bit, as a disk would flip it
        f.seek(at)
        f.write(bytes([stored[at] ^ 0x01]))
    served = stored_batch(segment.read_bytes(), base_offset=2)
    assert stored_batch(stored, base_offset=2) != served
    worker = stack.start_worker()

    labelled, dead = outcomes(stack, offsets)
    for name in ("before_1", "before_2", "after"):
        assert len(labelled[name]) == 1 and not dead[name], name
    assert not labelled["corrupt"]
    (rec,) = dead["corrupt"]
    assert rec.headers["error"] == "corrupt_batch"
    assert (rec.headers["source_first_offset"], rec.headers["source_offset"]) == ("2", "4")
    assert "CRC mismatch" in rec.headers["error_detail"]
    assert rec.value == served and rec.key is None  # the batch's bytes as the broker serves them
    # Committed past the batch (after its dead letter was acknowledged), and counted.
    wait_until(lambda: asyncio.run(committed_offset(stack.bootstrap, stack.ns, stack.raw, 0)) == 6, timeout=60,
               what="the group's committed offset of partition 0 to pass the corrupt batch")
    metrics_text = worker.get("/metrics")[1]
    assert "textstream_skipped_offsets_total 3.0" in metrics_text
    assert 'textstream_messages_total{outcome="dead_lettered",reason="corrupt_batch"} 1.0' in metrics_text
    assert "corrupt record batch: offsets 2..4 skipped" in worker.log.read_text(errors="replace")
    assert worker.alive, worker.log_tail()

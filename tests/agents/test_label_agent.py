"""The batching agent under Faust's test_context(): batches, routes, and acks only after sending."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from worker.app import create_app
from worker.config import load_settings
from worker.reload import Serving

pytestmark = pytest.mark.timeout(120)


class RecordingProducer:
    """Stands in for app.producer: records sends; each ack is a future we control."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None, Any]] = []
        self.fail = False
        self.hold = False  # leave acks pending until the test resolves them (self.acks)
        self.acks: list[asyncio.Future[None]] = []

    async def send(self, topic: str, key: bytes | None, value: bytes | None, partition: Any = None,
                   timestamp: Any = None, headers: Any = None) -> asyncio.Future[None]:
        self.sent.append((topic, key, value, headers))
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.acks.append(fut)
        if self.fail:
            fut.set_exception(RuntimeError("broker said no"))
        elif not self.hold:
            fut.set_result(None)
        return fut


@pytest.fixture
def app_and_producer(tiny_registry: Any, tiny_bundle: Any) -> tuple[Any, RecordingProducer]:
    settings = load_settings(app_id="agent-test", batch_size=4, batch_max_wait=0.05, max_text_bytes=1000)
    app = create_app(settings, Serving(tiny_registry, bundle=tiny_bundle))
    producer = RecordingProducer()
    app.producer = producer
    return app, producer


async def wait_for(condition: Any, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_agent_labels_batches_routes_and_dead_letters(app_and_producer: Any) -> None:
    app, producer = app_and_producer
    agent = app.agents["label-texts"]
    async with agent.test_context() as ctx:
        values = [orjson.dumps({"id": f"t{i}", "text": f"football match report number {i}"}) for i in range(5)]
        values.append(b'{"text": 1}')
        events = [await ctx.put(value=v, key=f"k{i}".encode()) for i, v in enumerate(values)]
        await wait_for(lambda: len(producer.sent) == 11)  # 5 labeled + 5 routed + 1 dead-lettered
        await wait_for(lambda: all(e.message.acked for e in events))  # acked once delivered
    topics = [t for t, *_ in producer.sent]
    assert topics.count("texts.labeled") == 5 and topics.count("texts.dlq") == 1
    labeled = [orjson.loads(v) for t, _, v, _ in producer.sent if t == "texts.labeled"]
    assert sorted(r["id"] for r in labeled) == [f"t{i}" for i in range(5)]
    assert {k for t, k, _, _ in producer.sent if t == "texts.labeled"} == {f"k{i}".encode() for i in range(5)}
    dead = next(s for s in producer.sent if s[0] == "texts.dlq")
    assert dead[2] == b'{"text": 1}' and dead[1] == b"k5"
    assert ("error", b"text_not_string") in dead[3]


def record_crashes(app: Any) -> list[BaseException]:
    """Replace app.crash (which would stop the test's event loop) by a recorder."""
    crashed: list[BaseException] = []

    async def record_crash(exc: BaseException) -> None:
        crashed.append(exc)

    app.crash = record_crash
    return crashed


async def two_batches_in_flight(ctx: Any, producer: RecordingProducer) -> list[Any]:
    """Batch 1 (4 texts) sent and unacknowledged, then batch 2 labelled and sent too; their events."""
    first = [await ctx.put(value=orjson.dumps({"text": f"first batch text {i}"})) for i in range(4)]
    await wait_for(lambda: len(producer.sent) == 8)
    second = [await ctx.put(value=orjson.dumps({"text": f"second batch text {i}"})) for i in range(4)]
    await wait_for(lambda: len(producer.sent) == 16)
    return first + second


async def test_a_failed_send_is_not_acked(app_and_producer: Any) -> None:
    app, producer = app_and_producer
    producer.fail = True
    crashed = record_crashes(app)
    agent = app.agents["label-texts"]
    async with agent.test_context() as ctx:
        event = await ctx.put(value=b"a text that cannot be delivered")
        await wait_for(lambda: crashed)
        # the event keeps its reference: it was never acked, so its offset is never committed
        assert not event.message.acked
    assert "broker said no" in str(crashed[0])


async def test_batches_overlap_but_offsets_advance_in_order(app_and_producer: Any) -> None:
    """The model runs batch 2 while batch 1 awaits its acks; batch 2 is acked only after batch 1."""
    app, producer = app_and_producer
    producer.hold = True
    agent = app.agents["label-texts"]
    async with agent.test_context() as ctx:
        events = await two_batches_in_flight(ctx, producer)
        for fut in producer.acks[8:]:
            fut.set_result(None)  # Kafka acknowledged batch 2 first
        await asyncio.sleep(0.3)
        assert not any(e.message.acked for e in events)
        for fut in producer.acks[:8]:
            fut.set_result(None)
        await wait_for(lambda: all(e.message.acked for e in events))


async def test_a_failed_batch_stops_later_batches_from_being_acked(app_and_producer: Any) -> None:
    app, producer = app_and_producer
    producer.hold = True
    crashed = record_crashes(app)
    agent = app.agents["label-texts"]
    async with agent.test_context() as ctx:
        events = await two_batches_in_flight(ctx, producer)
        for fut in producer.acks[8:]:
            fut.set_result(None)
        producer.acks[0].set_exception(RuntimeError("broker said no"))
        for fut in producer.acks[1:8]:
            fut.set_result(None)
        await wait_for(lambda: crashed)
        await asyncio.sleep(0.3)
        assert not any(e.message.acked for e in events)
    assert "broker said no" in str(crashed[0])


async def test_the_worker_consumer_fetches_in_batches_of_bytes(app_and_producer: Any) -> None:
    """Faust asks the broker for 1 byte per fetch; ours waits for FETCH_MIN_BYTES or TEXTSTREAM_FETCH_MAX_WAIT."""
    from aiokafka import AIOKafkaConsumer

    from worker import app as app_module

    app, _ = app_and_producer
    consumer = app.consumer._new_consumer_thread()._create_worker_consumer(app.transport)
    default = AIOKafkaConsumer()  # the attributes we set are the ones aiokafka reads on start
    assert (default._fetch_min_bytes, default._fetch_max_wait_ms) == (1, 500)
    assert consumer._fetch_min_bytes == app_module.FETCH_MIN_BYTES == 262_144
    assert consumer._fetch_max_wait_ms == 10  # TEXTSTREAM_FETCH_MAX_WAIT's default, 0.01 s
    # TEXTSTREAM_MAX_BUFFERED_BYTES' default (256 MiB): an eighth per fetch, 1 MiB per partition
    assert (default._fetch_max_bytes, default._max_partition_fetch_bytes) == (52_428_800, 1_048_576)
    assert (consumer._fetch_max_bytes, consumer._max_partition_fetch_bytes) == (33_554_432, 1_048_576)
    # Faust's stream buffer counts events: a quarter of the budget in records of the largest input
    assert app.conf.stream_buffer_maxsize == 4096  # 64 MiB / 1,000 bytes, capped at Faust's default
    from worker.security import from_settings

    at_defaults = load_settings(app_id="agent-test-defaults")
    assert app_module.faust_app(at_defaults, from_settings(at_defaults)).conf.stream_buffer_maxsize == 64
    assert consumer._group_id == "agent-test"  # still Faust's worker consumer, with its other settings


async def test_exactly_once_reads_committed_inputs_and_leaves_offsets_to_the_transactions(
        tiny_registry: Any, tiny_bundle: Any) -> None:
    """Faust's own commit would write offsets outside the transactions (and could move one back):
    in exactly-once mode the worker consumer commits nothing itself and reads read_committed."""
    from aiokafka import AIOKafkaConsumer
    from faust.types import TP

    def consumer_of(guarantee: str) -> Any:
        settings = load_settings(app_id=f"agent-test-{guarantee}", processing_guarantee=guarantee)
        return create_app(settings, Serving(tiny_registry, bundle=tiny_bundle)).consumer

    assert AIOKafkaConsumer()._isolation_level == "read_uncommitted"  # the attribute aiokafka reads on start
    at_least_once, exactly_once = consumer_of("at_least_once"), consumer_of("exactly_once")
    for consumer, level in ((at_least_once, "read_uncommitted"), (exactly_once, "read_committed")):
        thread = consumer._new_consumer_thread()
        assert thread._create_worker_consumer(consumer.transport)._isolation_level == level
    asked: list[Any] = []

    async def thread_commit(offsets: Any) -> bool:
        asked.append(offsets)
        return True

    for consumer in (at_least_once, exactly_once):
        consumer._thread = type("Thread", (), {"commit": staticmethod(thread_commit)})()
    assert await exactly_once._commit({TP("texts.raw", 0): 5}) is True and asked == []
    assert await at_least_once._commit({TP("texts.raw", 0): 5}) is True and asked == [{TP("texts.raw", 0): 5}]

"""Inputs written in Kafka transactions (an upstream exactly-once job): an exactly-once worker reads
them read_committed, so an aborted transaction's records are never labelled, and the transaction
markers pass through worker/fetching.py's batch wrapper (which aiokafka reads with next())."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from devkit.stack import read_until
from tests.integration.conftest import Stack
from worker import client, fetching, topics

pytestmark = pytest.mark.integration


async def send_transactions(bootstrap: str, topic: str) -> None:
    """Three transactions of 5 records each: a committed, b aborted, c committed."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"upstream-{topic}")
    await producer.start()
    try:
        for prefix, commit in (("a", True), ("b", False), ("c", True)):
            await producer.begin_transaction()
            for i in range(5):
                await producer.send(topic, orjson.dumps({"id": f"{prefix}{i}", "text": f"football match report {i}"}),
                                    key=f"{prefix}{i}".encode())
            await (producer.commit_transaction() if commit else producer.abort_transaction())
    finally:
        await producer.stop()


def read_ids(bootstrap: str, topic: str, n: int) -> list[str]:
    async def run() -> list[str]:
        return [orjson.loads(r.value or b"")["id"] async for r in client.follow(
            bootstrap, [topic], idle_timeout=5, max_records=n + 5, isolation_level="read_committed")]
    return asyncio.run(run())


def test_an_aborted_upstream_transaction_is_not_labelled(stack: Stack) -> None:
    asyncio.run(topics.ensure_topics(stack.bootstrap, [stack.raw], 4))
    asyncio.run(send_transactions(stack.bootstrap, stack.raw))
    committed = {f"{p}{i}" for p in "ac" for i in range(5)}
    fetching.install()  # as in a worker: the markers must pass through the wrapper
    assert sorted(read_ids(stack.bootstrap, stack.raw, 10)) == sorted(committed)

    worker = stack.start_worker(TEXTSTREAM_PROCESSING_GUARANTEE="exactly_once")
    stack.wait_ready(worker, timeout=180)
    out = asyncio.run(read_until(stack.bootstrap, [stack.labeled], 10, timeout=180, settle=5.0,
                                 alive=lambda: worker.alive, isolation_level="read_committed"))
    assert sorted(orjson.loads(r.value or b"")["id"] for r in out) == sorted(committed), stack.logs()
    assert worker.alive, stack.logs()

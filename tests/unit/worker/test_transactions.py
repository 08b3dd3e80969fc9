"""Exactly-once publishing (worker/transactions.py) with fake transactional producers: one
transaction per input partition holding its outputs and the offset after its last input, producers
initialised (fenced) on every assignment, nothing committed on a failure. The real broker's side
(aborted outputs invisible to read_committed, zombies fenced) is in tests/faults."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka.errors import KafkaTimeoutError, ProducerFenced, TransactionalIdAuthorizationFailed

from tests.unit.worker.fakes import fake_bundle
from worker import pipeline
from worker.config import load_settings
from worker.publish import Labeller
from worker.records import Outgoing, RawRecord, Source
from worker.reload import Serving
from worker.security import KafkaAuthError
from worker.transactions import Fenced, NotOwned, Transactions, transactional_id

pytestmark = pytest.mark.timeout(60)

SETTINGS = load_settings(app_id="grp", input_topic="in", batch_size=4, batch_max_wait=0.05, max_text_bytes=1000,
                         processing_guarantee="exactly_once")


class FakeProducer:
    """Records every call; a transaction's sends and offsets become `committed` only on commit."""

    def __init__(self, partition: int, log: list[str], fail_send: BaseException | None = None) -> None:
        self.partition, self.log, self.fail_send = partition, log, fail_send
        self.open: list[Any] | None = None
        self.committed: list[list[Any]] = []
        self.aborted = 0
        self.stopped = False

    async def start(self) -> None:
        self.log.append(f"start {self.partition}")

    async def stop(self) -> None:
        self.stopped = True
        self.log.append(f"stop {self.partition}")

    async def begin_transaction(self) -> None:
        assert self.open is None, "a transaction is already open"
        self.open = []

    async def commit_transaction(self) -> None:
        assert self.open is not None
        if self.open:
            self.committed.append(self.open)
        self.open = None

    async def abort_transaction(self) -> None:
        self.aborted += 1
        self.open = None

    async def send(self, topic: str, value: bytes | None = None, key: bytes | None = None,
                   partition: int | None = None, timestamp_ms: int | None = None, headers: Any = None) -> Any:
        assert self.open is not None, "a send outside a transaction"
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.fail_send is not None:
            fut.set_exception(self.fail_send)
        else:
            fut.set_result(None)
        self.open.append(("send", topic, value))
        return fut

    async def send_offsets_to_transaction(self, offsets: dict[Any, int], group_id: str) -> None:
        assert self.open is not None
        self.open.append(("offsets", {(tp.topic, tp.partition): o for tp, o in offsets.items()}, group_id))


class Producers:
    def __init__(self, fail_send: dict[int, BaseException] | None = None) -> None:
        self.made: list[FakeProducer] = []
        self.log: list[str] = []
        self.fail_send = fail_send or {}

    def __call__(self, partition: int) -> FakeProducer:
        producer = FakeProducer(partition, self.log, self.fail_send.get(partition))
        self.made.append(producer)
        return producer

    def current(self, partition: int) -> FakeProducer:
        return [p for p in self.made if p.partition == partition][-1]


def raw(partition: int, offset: int) -> RawRecord:
    return RawRecord(orjson.dumps({"text": f"sport text {partition}-{offset}"}), None, Source("in", partition, offset))


def test_transactional_ids_are_per_input_partition_and_stable() -> None:
    assert transactional_id(SETTINGS, 3) == "grp-in-3"
    assert transactional_id(SETTINGS, 3) == transactional_id(load_settings(app_id="grp", input_topic="in"), 3)


async def test_each_partition_commits_its_outputs_with_the_offset_after_its_last_input() -> None:
    producers = Producers()
    txns = Transactions(SETTINGS, producers)
    await txns.assign([0, 1])
    records = [raw(0, 5), raw(1, 7), raw(0, 6), raw(0, 9)]
    result = pipeline.process(fake_bundle(), SETTINGS, records)
    await txns.commit(records, result.outgoing)
    for partition, last in ((0, 9), (1, 7)):
        [txn] = producers.current(partition).committed
        *sends, offsets = txn
        assert offsets == ("offsets", {("in", partition): last + 1}, "grp")
        expected = [o for o in result.outgoing if o.source is not None and o.source.partition == partition]
        assert [(topic, value) for _, topic, value in sends] == [(o.topic, o.value) for o in expected]
    assert sum(len(p.committed[0]) - 1 for p in producers.made) == len(result.outgoing)


async def test_dead_letters_join_the_transaction_of_their_input() -> None:
    producers = Producers()
    txns = Transactions(SETTINGS, producers)
    await txns.assign([2])
    records = [RawRecord(b"\xff not utf-8", None, Source("in", 2, 40)), raw(2, 41)]
    result = pipeline.process(fake_bundle(), SETTINGS, records)
    assert [o.source for o in result.outgoing if o.topic == SETTINGS.dlq_topic] == [Source("in", 2, 40)]
    await txns.commit(records, result.outgoing)
    [txn] = producers.current(2).committed
    assert SETTINGS.dlq_topic in [step[1] for step in txn[:-1]] and txn[-1][1] == {("in", 2): 42}


async def test_every_assignment_initialises_fresh_producers_and_closes_the_old_ones() -> None:
    producers = Producers()
    txns = Transactions(SETTINGS, producers)
    await txns.assign([0, 1])
    first = list(producers.made)
    await txns.assign([1, 2])  # 1 kept: re-initialised all the same (it may have been fenced meanwhile)
    assert all(p.stopped for p in first)
    assert sorted(p.partition for p in producers.made[2:]) == [1, 2] and txns.partitions == {1, 2}
    assert producers.log.index("stop 1") < producers.log.index("start 2")  # closed before the new ones start
    await txns.close()
    assert all(p.stopped for p in producers.made) and txns.partitions == set()


async def test_a_transactional_id_without_acls_is_refused_naming_the_acl() -> None:
    """aiokafka raises TRANSACTIONAL_ID_AUTHORIZATION_FAILED from start (its InitProducerId): the
    worker stops, saying which ACL is missing."""

    class Refused(FakeProducer):
        async def start(self) -> None:
            raise TransactionalIdAuthorizationFailed("grp-in-0")

    txns = Transactions(SETTINGS, lambda p: Refused(p, []))
    with pytest.raises(KafkaAuthError, match="'grp-in-0'.*Write and Describe on the transactional ids 'grp-'"):
        await txns.assign([0])
    assert txns.partitions == set()


async def test_a_refused_send_aborts_that_partitions_transaction_and_raises() -> None:
    producers = Producers(fail_send={1: KafkaTimeoutError()})
    txns = Transactions(SETTINGS, producers)
    await txns.assign([0, 1])
    records = [raw(0, 0), raw(1, 0)]
    with pytest.raises(KafkaTimeoutError):
        await txns.commit(records, pipeline.process(fake_bundle(), SETTINGS, records).outgoing)
    assert producers.current(1).committed == [] and producers.current(1).aborted == 1
    assert len(producers.current(0).committed) == 1  # partition 0's own transaction is whole, and independent


async def test_a_fenced_producer_says_another_worker_owns_the_partition() -> None:
    producers = Producers(fail_send={2: ProducerFenced()})
    txns = Transactions(SETTINGS, producers)
    await txns.assign([2])
    records = [raw(2, 0)]
    with pytest.raises(Fenced, match="in/2 belongs to another worker now"):
        await txns.commit(records, pipeline.process(fake_bundle(), SETTINGS, records).outgoing)
    assert producers.current(2).committed == []


async def test_inputs_of_a_partition_not_owned_are_refused_not_published() -> None:
    producers = Producers()
    txns = Transactions(SETTINGS, producers)
    await txns.assign([0])
    records = [raw(3, 0)]
    with pytest.raises(NotOwned, match="in/3"):
        await txns.commit(records, pipeline.process(fake_bundle(), SETTINGS, records).outgoing)
    assert all(p.committed == [] for p in producers.made)


async def test_an_output_without_its_input_cannot_join_a_transaction() -> None:
    txns = Transactions(SETTINGS, Producers())
    await txns.assign([0])
    with pytest.raises(ValueError, match="names no input"):
        await txns.commit([raw(0, 0)], [Outgoing("out", None, b"x")])


async def test_the_labeller_acks_inputs_only_after_their_transaction_and_sends_nothing_outside_it() -> None:
    producers = Producers()
    txns = Transactions(SETTINGS, producers)
    await txns.assign([0])
    acked: list[int] = []
    committed_when_acked: list[int] = []
    crashed: list[BaseException] = []
    inputs: asyncio.Queue[RawRecord] = asyncio.Queue()

    async def send(out: Outgoing) -> Any:
        raise AssertionError("exactly-once sends nothing outside a transaction")

    async def ack(rec: RawRecord) -> None:
        acked.append(rec.source.offset)
        committed_when_acked.append(len(producers.current(0).committed))

    async def crash(exc: BaseException) -> None:
        crashed.append(exc)

    async def events() -> Any:
        while True:
            yield await inputs.get()

    labeller: Labeller[RawRecord] = Labeller(SETTINGS, Serving(Path("/nonexistent"), bundle=fake_bundle()),
                                             send=send, ack=ack, crash=crash, to_raw=lambda r: r,
                                             transact=txns.commit)
    task = asyncio.create_task(labeller.consume(events()))
    for offset in range(6):
        inputs.put_nowait(raw(0, offset))
    deadline = asyncio.get_running_loop().time() + 10
    while acked != list(range(6)):
        assert asyncio.get_running_loop().time() < deadline and not crashed, (acked, crashed)
        await asyncio.sleep(0.01)
    assert all(n >= 1 for n in committed_when_acked)
    txn_offsets = [txn[-1][1][("in", 0)] for txn in producers.current(0).committed]
    assert txn_offsets == sorted(txn_offsets) and txn_offsets[-1] == 6
    task.cancel()
    await asyncio.wait([task], timeout=10)

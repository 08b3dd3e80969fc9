"""LagProbe against fake Kafka clients: lag figures, the Prometheus gauge, last_ok and broker trouble."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError
from aiokafka.structs import OffsetAndMetadata
from prometheus_client import REGISTRY

from worker import lag as lag_module
from worker import metrics
from worker.lag import LagProbe
from worker.security import ClientSecurity

GROUP = "textstream-test"


class Broker:
    """What the fake clients see: committed offsets of GROUP, end offsets, and what was asked of them."""

    def __init__(self, committed: dict[TopicPartition, OffsetAndMetadata | None],
                 ends: dict[TopicPartition, int]) -> None:
        self.committed = committed
        self.ends = ends
        self.fail: BaseException | None = None  # raised by the admin's start()
        self.admins: list[FakeAdmin] = []
        self.consumers: list[FakeConsumer] = []


class FakeAdmin:
    def __init__(self, broker: Broker, **kwargs: Any) -> None:
        self.broker, self.kwargs = broker, kwargs
        self.started = self.closed = False
        self.groups: list[str] = []
        broker.admins.append(self)

    async def start(self) -> None:
        if self.broker.fail is not None:
            raise self.broker.fail
        self.started = True

    async def list_consumer_group_offsets(self, group_id: str) -> dict[TopicPartition, OffsetAndMetadata | None]:
        assert self.started
        self.groups.append(group_id)
        return dict(self.broker.committed)

    async def close(self) -> None:
        self.closed = True


class FakeConsumer:
    def __init__(self, broker: Broker, **kwargs: Any) -> None:
        self.broker, self.kwargs = broker, kwargs
        self.started = self.stopped = False
        self.asked: list[list[TopicPartition]] = []
        broker.consumers.append(self)

    async def start(self) -> None:
        self.started = True

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        assert self.started
        self.asked.append(list(tps))
        return {tp: self.broker.ends[tp] for tp in tps}

    async def stop(self) -> None:
        self.stopped = True


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch) -> Iterator[Broker]:
    fake = Broker({}, {})
    monkeypatch.setattr(lag_module, "AIOKafkaAdminClient", lambda **kw: FakeAdmin(fake, **kw))
    monkeypatch.setattr(lag_module, "AIOKafkaConsumer", lambda **kw: FakeConsumer(fake, **kw))
    yield fake
    # the gauge is process-wide: drop the series these tests made (their topics all start with "lag.")
    for sample in [s for family in metrics.CONSUMER_LAG.collect() for s in family.samples]:
        if sample.labels["topic"].startswith("lag."):
            metrics.CONSUMER_LAG.remove(sample.labels["topic"], sample.labels["partition"])


def gauge(topic: str, partition: int) -> float | None:
    return REGISTRY.get_sample_value("textstream_consumer_lag", {"topic": topic, "partition": str(partition)})


def tp(topic: str, partition: int) -> TopicPartition:
    return TopicPartition(topic, partition)


async def test_lag_is_end_minus_committed_per_partition_and_set_on_the_gauge(broker: Broker) -> None:
    topic = "lag.basic"
    broker.ends = {tp(topic, 0): 100, tp(topic, 1): 40, tp(topic, 2): 7}
    broker.committed = {tp(topic, 0): OffsetAndMetadata(90, ""), tp(topic, 1): OffsetAndMetadata(40, "")}
    probe = LagProbe("broker:9092", GROUP)
    before = time.time()
    got = await probe.measure([(topic, 2), (topic, 0), (topic, 1)])
    # 100-90; 40-40; nothing committed on partition 2: everything up to its end offset is lag
    assert got == {(topic, 0): 10, (topic, 1): 0, (topic, 2): 7}
    assert probe.lag == got
    assert [gauge(topic, p) for p in (0, 1, 2)] == [10.0, 0.0, 7.0]
    assert probe.last_ok is not None and before <= probe.last_ok <= time.time()
    assert broker.admins[0].groups == [GROUP]
    assert broker.consumers[0].asked == [[tp(topic, 0), tp(topic, 1), tp(topic, 2)]]


async def test_unset_or_negative_commits_count_as_zero_and_lag_is_never_negative(broker: Broker) -> None:
    topic = "lag.edges"
    broker.ends = {tp(topic, 0): 5, tp(topic, 1): 6, tp(topic, 2): 3}
    broker.committed = {
        tp(topic, 0): None,  # no metadata at all
        tp(topic, 1): OffsetAndMetadata(-1, ""),  # Kafka's "no committed offset"
        tp(topic, 2): OffsetAndMetadata(8, ""),  # committed past the end (log truncated)
    }
    got = await LagProbe("broker:9092", GROUP).measure([(topic, 0), (topic, 1), (topic, 2)])
    assert got == {(topic, 0): 5, (topic, 1): 6, (topic, 2): 0}
    assert gauge(topic, 2) == 0.0


async def test_commits_of_partitions_not_assigned_here_are_ignored(broker: Broker) -> None:
    topic = "lag.others"
    broker.ends = {tp(topic, 0): 10, tp(topic, 1): 50}
    broker.committed = {tp(topic, 0): OffsetAndMetadata(4, ""), tp(topic, 1): OffsetAndMetadata(1, "")}
    got = await LagProbe("broker:9092", GROUP).measure([(topic, 0)])  # partition 1 belongs to another worker
    assert got == {(topic, 0): 6}
    assert gauge(topic, 1) is None
    assert broker.consumers[0].asked == [[tp(topic, 0)]]


async def test_partitions_no_longer_assigned_leave_the_gauge(broker: Broker) -> None:
    topic = "lag.rebalance"
    broker.ends = {tp(topic, 0): 3, tp(topic, 1): 4}
    probe = LagProbe("broker:9092", GROUP)
    await probe.measure([(topic, 0), (topic, 1)])
    assert gauge(topic, 0) == 3.0 and gauge(topic, 1) == 4.0
    broker.ends[tp(topic, 0)] = 9
    assert await probe.measure([(topic, 0)]) == {(topic, 0): 9}
    assert gauge(topic, 0) == 9.0 and gauge(topic, 1) is None
    assert await probe.measure([]) == {}
    assert gauge(topic, 0) is None
    assert broker.consumers[-1].asked == []  # nothing assigned: no end offsets asked for


async def test_broker_trouble_keeps_the_last_figures_and_is_logged(broker: Broker,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    topic = "lag.failure"
    broker.ends = {tp(topic, 0): 12}
    broker.committed = {tp(topic, 0): OffsetAndMetadata(2, "")}
    probe = LagProbe("broker:9092", GROUP)
    await probe.measure([(topic, 0)])
    ok_at = probe.last_ok
    broker.fail = KafkaConnectionError("Unable to bootstrap from broker:9092")
    broker.ends[tp(topic, 0)] = 99
    with caplog.at_level(logging.WARNING, logger="worker.lag"):
        got = await probe.measure([(topic, 0), (topic, 1)])
    assert got == {(topic, 0): 10} and probe.lag == got
    assert probe.last_ok == ok_at  # /readyz sees that the broker has not answered since
    assert gauge(topic, 0) == 10.0 and gauge(topic, 1) is None
    assert any("lag probe failed" in r.getMessage() and "Unable to bootstrap" in r.getMessage()
               for r in caplog.records)
    # the failed probe left nothing open
    assert broker.admins[-1].closed and broker.consumers[-1].stopped


async def test_a_first_probe_that_fails_reports_nothing(broker: Broker) -> None:
    broker.fail = OSError("connection refused")
    probe = LagProbe("broker:9092", GROUP)
    assert await probe.measure([("lag.never", 0)]) == {}
    assert probe.last_ok is None
    assert gauge("lag.never", 0) is None


async def test_clients_are_group_less_closed_and_carry_the_security_settings(broker: Broker) -> None:
    topic = "lag.clients"
    broker.ends = {tp(topic, 0): 1}
    access = ClientSecurity(protocol="SASL_PLAINTEXT", mechanism="SCRAM-SHA-512", username="u", password="p")
    await LagProbe("b1:9092,b2:9092", GROUP, access).measure([(topic, 0)])
    (admin,), (consumer,) = broker.admins, broker.consumers
    assert consumer.kwargs["group_id"] is None  # never joins (or rebalances) the worker's group
    assert consumer.kwargs["enable_auto_commit"] is False
    for client in (admin.kwargs, consumer.kwargs):
        assert client["bootstrap_servers"] == "b1:9092,b2:9092"
        assert {k: client[k] for k in access.kwargs()} == access.kwargs()
    assert admin.closed and consumer.stopped

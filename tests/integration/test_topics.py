"""Topic creation on a real broker: what the worker creates (its topics and Faust's, with the
configured replication factor and topic configs), a creation the broker refuses, and the mode where
the worker creates nothing (TEXTSTREAM_CREATE_TOPICS=false) for clusters that do not let it."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from devkit import kafka_local
from devkit.stack import list_topics, local_broker
from tests.integration.conftest import Stack, wait_until
from worker import topics

pytestmark = pytest.mark.integration

LABELS = ["business", "entertainment", "politics", "sport", "tech"]  # the tiny registry's
START_TIMEOUT_S = 180  # a worker that stops at start does so before Faust; generous for a slow machine
DESCRIBE_CONFIG_SOURCE_TOPIC = 1  # DescribeConfigs v1+: the value is set on the topic itself


async def _admin_call(bootstrap: str, call: Any) -> Any:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return await call(admin)
    finally:
        await admin.close()


def describe(bootstrap: str, names: list[str]) -> dict[str, dict[str, Any]]:
    """{topic: {"partitions": n, "replicas": {len(replicas) per partition}, "configs": {name: (value, set on topic)}}}."""
    async def run(admin: AIOKafkaAdminClient) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for t in await admin.describe_topics(names):
            assert t["error_code"] == 0, t
            out[t["topic"]] = {"partitions": len(t["partitions"]),
                               "replicas": {len(p["replicas"]) for p in t["partitions"]}, "configs": {}}
        for response in await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, n) for n in names]):
            for error_code, _, _, name, entries in (r[:5] for r in response.resources):
                assert error_code == 0, name
                for entry in entries:
                    # v0 says is_default (False = set on the topic), v1+ the config source.
                    own = entry[3] is False if response.API_VERSION == 0 else entry[3] == DESCRIBE_CONFIG_SOURCE_TOPIC
                    out[name]["configs"][entry[0]] = (entry[1], own)
        return out

    return dict(asyncio.run(_admin_call(bootstrap, run)))


def leader_topic(stack: Stack) -> str:
    (name,) = topics.faust_internal_topics(stack.ns)
    return name


def all_topics(stack: Stack) -> tuple[list[str], list[str]]:
    """(partitioned, one-partition) topics a worker of this stack serving the tiny model needs."""
    return ([stack.raw, stack.labeled, stack.dlq, *(stack.label_topic(x) for x in LABELS)],
            [f"{stack.ns}.models", leader_topic(stack)])


def precreate(stack: Stack, partitioned: list[str], single: list[str]) -> set[str]:
    """Create topics as an operator would, and return every topic once the broker lists them (a
    topic just created reaches the broker's metadata a moment after CreateTopics answers)."""
    asyncio.run(topics.ensure_topics(stack.bootstrap, partitioned, 4))
    asyncio.run(topics.ensure_topics(stack.bootstrap, single, 1))
    wait_until(lambda: {*partitioned, *single} <= list_topics(stack.bootstrap), 60, "pre-created topics listed")
    return list_topics(stack.bootstrap)


def texts(n: int) -> list[bytes]:
    return [orjson.dumps({"id": f"t-{i}", "text": f"The striker scored twice in the cup final {i}."}) for i in range(n)]


def test_the_worker_creates_its_topics_and_fausts_with_the_configured_configs(stack: Stack) -> None:
    """Every topic the worker uses appears (Faust's leader-election topic is the only one of Faust's),
    with the broker's default replication factor (-1) and TEXTSTREAM_TOPIC_CONFIGS set on each."""
    before = list_topics(stack.bootstrap)
    worker = stack.start_worker(TEXTSTREAM_TOPIC_CONFIGS="min.insync.replicas=1,retention.ms=604800000")
    stack.wait_ready(worker)
    assert stack.send(texts(5)) == 5
    assert len(stack.read([stack.labeled], 5, settle=0.5)) == 5, stack.logs()

    partitioned, single = all_topics(stack)
    assert list_topics(stack.bootstrap) - before == {*partitioned, *single}, stack.logs()
    described = describe(stack.bootstrap, [*partitioned, *single])
    for name, d in described.items():
        assert d["partitions"] == (4 if name in partitioned else 1), name
        assert d["replicas"] == {1}, name  # the test broker's default.replication.factor
        assert d["configs"]["retention.ms"] == ("604800000", True), name
        assert d["configs"]["min.insync.replicas"] == ("1", True), name  # set on the topic, not inherited
    (line,) = [x for x in worker.log.read_text(errors="replace").splitlines() if "created_topics=" in x]
    assert "replication_factor=broker default configs=min.insync.replicas=1,retention.ms=604800000" in line
    assert set(line.rsplit("created_topics=", 1)[1].strip().split(",")) == {*partitioned, *single}


@pytest.mark.parametrize(("variable", "value", "error"), [
    ("TEXTSTREAM_REPLICATION_FACTOR", "3", "INVALID_REPLICATION_FACTOR"),  # one broker cannot hold 3 replicas
    ("TEXTSTREAM_TOPIC_CONFIGS", "retention.ms=next-week", "INVALID_CONFIG"),
])
def test_a_creation_the_broker_refuses_stops_the_worker_at_start_naming_topics_and_error(
        stack: Stack, variable: str, value: str, error: str) -> None:
    """Before: the response's per-topic errors went unread, the topics were logged as created and
    the worker stalled on its producer."""
    before = list_topics(stack.bootstrap)
    worker = stack.start_worker(**{variable: value})
    rc = worker.proc.wait(timeout=START_TIMEOUT_S)
    log = worker.log_tail()
    assert rc == 2, log
    for name in (stack.raw, stack.labeled, stack.dlq):
        assert f"{name}: {error}: " in log, log
    assert variable in log  # the hint names the setting to check
    assert list_topics(stack.bootstrap) == before  # nothing half-created


def test_no_create_mode_with_missing_topics_stops_at_start_naming_every_one(stack: Stack) -> None:
    partitioned, single = all_topics(stack)
    before = precreate(stack, [stack.raw, stack.labeled], [])
    worker = stack.start_worker(TEXTSTREAM_CREATE_TOPICS="false")
    rc = worker.proc.wait(timeout=START_TIMEOUT_S)
    log = worker.log_tail()
    assert rc == 2, log
    missing = sorted(set(partitioned + single) - {stack.raw, stack.labeled})
    assert f"{len(missing)} topic(s) the worker needs do not exist" in log and ", ".join(missing) in log, log
    assert list_topics(stack.bootstrap) == before


def test_no_create_mode_with_every_topic_pre_created_labels_end_to_end_and_creates_nothing(stack: Stack) -> None:
    partitioned, single = all_topics(stack)
    before = precreate(stack, partitioned, single)

    worker = stack.start_worker(TEXTSTREAM_CREATE_TOPICS="false")
    stack.wait_ready(worker)
    values = [*texts(20), b'{"id": "broken", "text": ']
    assert stack.send(values) == len(values)
    got = stack.read([stack.labeled, stack.dlq], len(values), settle=1.0)
    assert sorted(r.topic for r in got) == sorted([stack.labeled] * 20 + [stack.dlq]), stack.logs()
    routed = stack.read([stack.label_topic(x) for x in LABELS], 20, settle=0.5)
    assert len(routed) == 20
    assert worker.alive and list_topics(stack.bootstrap) == before, stack.logs()
    assert "topics=pre-created (not creating) created_topics=none" in worker.log.read_text(errors="replace")


def test_minus_one_asks_the_broker_for_its_default_replication_factor(tmp_path: Path) -> None:
    """aiokafka 0.14 sends CreateTopics version 3, and KIP-464 wrote '-1 = the broker's default'
    into version 4: Kafka 4.1 applies it to version 3 all the same. On a broker whose
    default.replication.factor is 3 (one broker: it cannot hold 3), -1 is refused for wanting 3, so
    it was not read as 1; an explicit TEXTSTREAM_REPLICATION_FACTOR=1 is created."""
    source = kafka_local.local_kafka_home()
    home = tmp_path / "kafka-home"
    home.mkdir()
    (home / "libs").symlink_to(source / "libs")
    for name in ("pom.xml", "log4j2.properties"):
        shutil.copy(source / name, home / name)
    template = (source / "server.properties.template").read_text()
    assert "default.replication.factor=1" in template
    (home / "server.properties.template").write_text(
        template.replace("default.replication.factor=1", "default.replication.factor=3"))
    with local_broker(tmp_path / "run", home=home) as broker:
        with pytest.raises(topics.TopicCreationError) as err:
            asyncio.run(topics.ensure_topics(broker.bootstrap, ["rf.default"], 1))
        assert "rf.default: INVALID_REPLICATION_FACTOR: " in str(err.value)
        assert "target replication factor of 3 cannot be reached" in str(err.value)
        assert asyncio.run(topics.ensure_topics(broker.bootstrap, ["rf.one"], 1, spec=topics.TopicSpec(1))) == ["rf.one"]

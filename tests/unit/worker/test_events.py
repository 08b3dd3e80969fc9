"""announce/notify against a fake producer: one JSON event on the models topic; an absent broker."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import Any

import orjson
import pytest
from aiokafka.errors import KafkaConnectionError

from worker import events
from worker.security import ClientSecurity


class FakeProducer:
    """Records what is sent; `start_error` makes start() fail, `hang` makes it never return."""

    instances: list[FakeProducer] = []
    start_error: BaseException | None = None
    hang = False

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.sent: list[tuple[str, bytes]] = []
        self.started = self.stopped = False
        FakeProducer.instances.append(self)

    async def start(self) -> None:
        if FakeProducer.start_error is not None:
            raise FakeProducer.start_error
        if FakeProducer.hang:
            await asyncio.Event().wait()
        self.started = True

    async def send_and_wait(self, topic: str, value: bytes) -> None:
        assert self.started and not self.stopped
        self.sent.append((topic, value))

    async def stop(self) -> None:
        self.stopped = True


@pytest.fixture(autouse=True)
def _fake_producer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(FakeProducer, "instances", [])
    monkeypatch.setattr(FakeProducer, "start_error", None)
    monkeypatch.setattr(FakeProducer, "hang", False)
    monkeypatch.setattr(events, "AIOKafkaProducer", FakeProducer)


async def test_announce_sends_one_json_event_with_its_time() -> None:
    before = time.time()
    await events.announce("broker:9092", "texts.models", {"event": "published", "version": 3}, timeout_s=2.5)
    (p,) = FakeProducer.instances
    ((topic, value),) = p.sent
    assert topic == "texts.models"
    body = orjson.loads(value)
    assert set(body) == {"event", "version", "at"}
    assert body["event"] == "published" and body["version"] == 3
    assert before <= body["at"] <= time.time()
    assert p.kwargs["bootstrap_servers"] == "broker:9092"
    assert p.kwargs["acks"] == "all"  # an announcement is only done once every replica has it
    assert p.kwargs["request_timeout_ms"] == 2500
    assert p.stopped


async def test_announce_passes_the_security_settings() -> None:
    access = ClientSecurity(protocol="SASL_PLAINTEXT", mechanism="PLAIN", username="u", password="p")
    await events.announce("broker:9092", "texts.models", {"event": "pinned"}, security=access)
    (p,) = FakeProducer.instances
    assert {k: p.kwargs[k] for k in access.kwargs()} == access.kwargs()


async def test_announce_raises_when_the_broker_cannot_be_reached_and_closes_the_producer() -> None:
    FakeProducer.start_error = KafkaConnectionError("Unable to bootstrap from broker:9092")
    with pytest.raises(KafkaConnectionError):
        await events.announce("broker:9092", "texts.models", {"event": "published"})
    (p,) = FakeProducer.instances
    assert p.sent == [] and p.stopped


def test_notify_reports_success() -> None:
    assert events.notify("broker:9092", "texts.models", {"event": "published", "version": 1}) is True
    (p,) = FakeProducer.instances
    assert [orjson.loads(v)["version"] for _, v in p.sent] == [1]


def test_notify_logs_an_unreachable_broker_instead_of_failing(caplog: pytest.LogCaptureFixture) -> None:
    FakeProducer.start_error = KafkaConnectionError("Unable to bootstrap from broker:9092")
    with caplog.at_level(logging.WARNING, logger="worker.events"):
        assert events.notify("broker:9092", "texts.models", {"event": "published"}) is False
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    message = record.getMessage()
    assert "could not announce published on texts.models" in message and "Unable to bootstrap" in message
    assert FakeProducer.instances[0].stopped


def test_notify_gives_up_on_a_broker_that_never_answers(monkeypatch: pytest.MonkeyPatch,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    """notify bounds the whole announcement; the bound is shortened here so the test stays fast."""
    FakeProducer.hang = True
    asked: list[float] = []
    real_wait_for = asyncio.wait_for

    def short_wait_for(aw: Awaitable[Any], timeout: float) -> Awaitable[Any]:
        asked.append(timeout)
        return real_wait_for(aw, 0.2)

    monkeypatch.setattr(asyncio, "wait_for", short_wait_for)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="worker.events"):
        assert events.notify("broker:9092", "texts.models", {"event": "pruned"}) is False
    assert time.monotonic() - started < 5
    assert len(asked) == 1 and 0 < asked[0] < 60  # a bound exists (and is not minutes long)
    assert any("could not announce pruned" in r.getMessage() for r in caplog.records)
    (p,) = FakeProducer.instances
    assert p.stopped and p.sent == []  # cancelled while starting: the producer was still stopped


def _fake_ensure(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    from worker.topics import MissingTopicsError

    calls: list[tuple[Any, ...]] = []

    async def ensure(bootstrap: str, names: list[str], partitions: int, timeout_s: float, **kw: Any) -> list[str]:
        calls.append((bootstrap, names, partitions, kw["spec"]))
        if not kw["spec"].create:
            raise MissingTopicsError("1 topic(s) the worker needs do not exist: texts.models")
        return names
    monkeypatch.setattr(events, "ensure_topics", ensure)
    return calls


async def test_with_a_topic_spec_the_models_topic_is_created_first_as_the_worker_would(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.topics import TopicSpec

    calls = _fake_ensure(monkeypatch)
    spec = TopicSpec(3, {"min.insync.replicas": "2"})
    await events.announce("broker:9092", "texts.models", {"event": "published"}, spec=spec)
    assert calls == [("broker:9092", ["texts.models"], 1, spec)] and len(FakeProducer.instances[0].sent) == 1


def test_a_models_topic_it_may_not_create_is_logged_and_nothing_is_sent(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from worker.topics import TopicSpec

    calls = _fake_ensure(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="worker.events"):
        assert events.notify("broker:9092", "texts.models", {"event": "published"},
                             spec=TopicSpec(create=False)) is False
    assert len(calls) == 1 and FakeProducer.instances == []
    assert "do not exist: texts.models" in caplog.text

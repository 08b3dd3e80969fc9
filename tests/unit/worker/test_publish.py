"""The ack ordering of stage 5, driven with a fake producer and fake acks (no broker, no Faust):
outputs acknowledged before inputs, batches acked in order, nothing acked after a failure."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY

from tests.unit.worker.fakes import fake_bundle
from worker.bundle import Bundle
from worker.config import load_settings
from worker.publish import Labeller
from worker.records import Outgoing, RawRecord, Source
from worker.reload import Serving

pytestmark = pytest.mark.timeout(60)


def source_offset(out: Outgoing) -> int:
    """The input offset an output was made from (labelled records say it; dead letters in a header)."""
    if out.headers:
        return int(dict(out.headers)["source_offset"])
    return int(orjson.loads(out.value or b"")["source"]["offset"])


class Kafka:
    """The producer and the input stream: records what is sent and acked. Each output's
    acknowledgement is a future the test resolves (or at once, unless `hold`)."""

    def __init__(self) -> None:
        self.sent: list[tuple[Outgoing, asyncio.Future[None]]] = []
        self.acked: list[int] = []  # input offsets, in ack order
        self.hold = False
        self.violations: list[str] = []
        self.inputs: asyncio.Queue[RawRecord] = asyncio.Queue()
        self.pulled = 0  # events the labeller took from the stream

    async def send(self, out: Outgoing) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if not self.hold:
            fut.set_result(None)
        self.sent.append((out, fut))
        return fut

    async def ack(self, event: RawRecord) -> None:
        offset = event.source.offset
        if any(not f.done() or f.exception() for o, f in self.sent if source_offset(o) == offset):
            self.violations.append(f"input {offset} acked before all its outputs were acknowledged")
        self.acked.append(offset)

    def acknowledge(self, first: int, last: int, error: Exception | None = None) -> None:
        """Kafka acknowledges outputs[first:last] (or fails the first of them with `error`)."""
        for i, (_, fut) in enumerate(self.sent[first:last]):
            if error is not None and i == 0:
                fut.set_exception(error)
            else:
                fut.set_result(None)

    async def events(self) -> AsyncIterator[RawRecord]:
        while True:
            event = await self.inputs.get()
            self.pulled += 1
            yield event

    def put(self, *offsets: int) -> list[RawRecord]:
        records = [RawRecord(orjson.dumps({"text": f"sport text {o}"}), None, Source("texts.raw", 0, o))
                   for o in offsets]
        for rec in records:
            self.inputs.put_nowait(rec)
        return records


class Run:
    """A Labeller consuming from `kafka`, as the agent runs it."""

    def __init__(self, kafka: Kafka, bundle: Bundle, batch_size: int = 2, **settings_: Any) -> None:
        self.kafka = kafka
        self.crashed: list[BaseException] = []
        settings = load_settings(batch_size=batch_size, batch_max_wait=0.05, max_text_bytes=1000, **settings_)
        self.labeller: Labeller[RawRecord] = Labeller(settings, Serving(Path("/nonexistent"), bundle=bundle),
                                                      send=kafka.send, ack=kafka.ack, crash=self.crash,
                                                      to_raw=lambda rec: rec)
        self.task = asyncio.create_task(self.labeller.consume(kafka.events()))

    async def crash(self, exc: BaseException) -> None:
        self.crashed.append(exc)

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.wait([self.task], timeout=10)


async def wait_for(condition: Callable[[], Any], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_inputs_are_acked_only_after_kafka_acknowledged_their_outputs() -> None:
    kafka = Kafka()
    kafka.hold = True
    run = Run(kafka, fake_bundle())
    kafka.put(0, 1)
    await wait_for(lambda: len(kafka.sent) == 4)  # each: texts.labeled + its label's topic
    kafka.acknowledge(0, 3)
    await asyncio.sleep(0.2)
    assert kafka.acked == []  # one output still unacknowledged: no input of its batch is acked
    kafka.acknowledge(3, 4)
    await wait_for(lambda: kafka.acked == [0, 1])
    assert kafka.violations == [] and run.crashed == []
    await run.stop()


async def test_batches_overlap_but_are_acked_in_order() -> None:
    """The model runs batch 2 while batch 1 awaits its acks; batch 2 is acked only after batch 1."""
    kafka = Kafka()
    kafka.hold = True
    run = Run(kafka, fake_bundle())
    kafka.put(0, 1)
    await wait_for(lambda: len(kafka.sent) == 4)
    kafka.put(2, 3)
    await wait_for(lambda: len(kafka.sent) == 8)  # batch 2 labelled and sent, batch 1 still pending
    kafka.acknowledge(4, 8)  # Kafka acknowledged batch 2 first
    await asyncio.sleep(0.2)
    assert kafka.acked == []
    kafka.acknowledge(0, 4)
    await wait_for(lambda: kafka.acked == [0, 1, 2, 3])
    assert kafka.violations == [] and run.crashed == []
    await run.stop()


async def test_a_failed_output_stops_the_worker_with_nothing_of_it_or_later_batches_acked() -> None:
    kafka = Kafka()
    kafka.hold = True
    run = Run(kafka, fake_bundle())
    kafka.put(0, 1)
    await wait_for(lambda: len(kafka.sent) == 4)
    kafka.put(2, 3)
    await wait_for(lambda: len(kafka.sent) == 8)
    kafka.acknowledge(4, 8)
    kafka.acknowledge(0, 4, error=RuntimeError("broker said no"))
    await wait_for(lambda: run.crashed)
    assert "broker said no" in str(run.crashed[0])
    kafka.put(4, 5)
    await wait_for(run.task.done)  # the next event is not taken in: the stream is read no further
    await asyncio.sleep(0.2)
    assert kafka.acked == [] and kafka.pulled == 5 and len(kafka.sent) == 8


async def test_a_failed_last_batch_stops_the_worker_though_no_batch_follows() -> None:
    kafka = Kafka()
    kafka.hold = True
    run = Run(kafka, fake_bundle())
    kafka.put(0)
    await wait_for(lambda: len(kafka.sent) == 2)
    kafka.acknowledge(0, 2, error=RuntimeError("broker said no"))
    await wait_for(lambda: run.crashed)
    assert "broker said no" in str(run.crashed[0]) and kafka.acked == []
    await run.stop()


async def test_a_failed_model_call_stops_the_worker_with_nothing_sent_or_acked() -> None:
    kafka = Kafka()
    run = Run(kafka, fake_bundle(fails_on="t"))  # every text and the probe: the model's fault
    kafka.put(0, 1)
    await wait_for(lambda: run.crashed)
    assert isinstance(run.crashed[0], ValueError)
    kafka.put(2)
    await wait_for(run.task.done)
    assert kafka.sent == [] and kafka.acked == []


async def test_a_full_backlog_holds_the_stream_back() -> None:
    """Bounded at two batches: while the model is busy, at most two batches wait and the stream is
    not read beyond the one event waiting for room."""
    kafka = Kafka()
    model_free = threading.Event()
    bundle = fake_bundle()
    slow = Bundle(bundle.version, bundle.labels, bundle.centroids,
                  infer=lambda *args: (model_free.wait(10), bundle.infer(*args))[1])
    run = Run(kafka, slow, batch_size=1)
    kafka.put(*range(6))
    await wait_for(lambda: kafka.pulled == 4)  # 1 in the model, 2 in the backlog, 1 waiting for room
    await asyncio.sleep(0.2)
    assert kafka.pulled == 4 and len(run.labeller.backlog) == 2
    model_free.set()
    await wait_for(lambda: kafka.acked == list(range(6)))
    assert kafka.violations == [] and run.crashed == []
    await run.stop()


async def test_bytes_in_flight_hold_the_stream_back_until_their_outputs_are_acknowledged() -> None:
    """TEXTSTREAM_MAX_BUFFERED_BYTES=8 MiB gives the labeller 4 MiB: of 1 MB records, it holds 5 (the
    fifth passes the budget) until Kafka acknowledges outputs, however many the batches could take."""
    kafka = Kafka()
    kafka.hold = True
    run = Run(kafka, fake_bundle(), batch_size=8, max_buffered_bytes=8 * 1_048_576)
    for o in range(12):
        kafka.inputs.put_nowait(RawRecord(b"sport " * 166_667, None, Source("texts.raw", 0, o)))
    await wait_for(lambda: kafka.pulled == 6)  # 5 held, 1 waiting for room
    await wait_for(lambda: len(kafka.sent) == 5)  # all five sent (dead letters: over max_text_bytes)
    await asyncio.sleep(0.2)
    assert kafka.pulled == 6 and run.labeller.backlog.held_bytes == 5 * 1_000_002
    kafka.hold = False  # what follows is acknowledged at once
    kafka.acknowledge(0, 5)
    await wait_for(lambda: len(kafka.acked) == 12)
    assert kafka.acked == list(range(12)) and kafka.violations == [] and run.crashed == []
    assert run.labeller.backlog.held_bytes == 0
    await run.stop()


async def test_metrics_follow_a_batch_from_the_stream_to_its_acks() -> None:
    kafka = Kafka()
    kafka.hold = True
    before = {
        "in_flight": metric("textstream_in_flight"),
        "batches": metric("textstream_batch_size_count"),
        "inference": metric("textstream_inference_seconds_count"),
        "labeled": metric("textstream_messages_total", outcome="labeled", reason=""),
        "dead": metric("textstream_messages_total", outcome="dead_lettered", reason="text_not_string"),
        "sport": metric("textstream_predictions_total", label="sport"),
    }
    run = Run(kafka, fake_bundle())
    kafka.put(0)
    kafka.inputs.put_nowait(RawRecord(b'{"text": 1}', None, Source("texts.raw", 0, 1)))
    await wait_for(lambda: len(kafka.sent) == 3)  # 2 for the labelled text, 1 dead letter
    assert metric("textstream_in_flight") == before["in_flight"] + 2  # taken, outputs not yet acknowledged
    assert metric("textstream_batch_size_count") == before["batches"] + 1
    assert metric("textstream_inference_seconds_count") == before["inference"] + 1
    assert metric("textstream_messages_total", outcome="labeled", reason="") == before["labeled"]  # not yet
    kafka.acknowledge(0, 3)
    await wait_for(lambda: kafka.acked == [0, 1])
    assert metric("textstream_in_flight") == before["in_flight"]
    assert metric("textstream_messages_total", outcome="labeled", reason="") == before["labeled"] + 1
    assert metric("textstream_messages_total", outcome="dead_lettered", reason="text_not_string") == before["dead"] + 1
    assert metric("textstream_predictions_total", label="sport") == before["sport"] + 1
    await run.stop()

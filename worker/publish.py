"""Stage 5: send a batch's outputs, wait for Kafka's acks, then ack its inputs, in order.

At-least-once: an input is acked (so its offset can be committed) only after Kafka acknowledged
every output of its batch, and batches are acked in the order they were taken, so the committed
offset never passes an unacknowledged output (faust#189 and #606 are why acks are ours). The model
runs the next batch while the previous one waits for its acks. A failure stops the worker with
nothing of the failed batch (or any later one) acked: the restart redelivers them rather than skip
them.

Exactly-once (TEXTSTREAM_PROCESSING_GUARANTEE=exactly_once): the shell hands in `transact`
(worker/transactions.py) instead; a batch's outputs are then produced in `settle`, together with its
input offsets in one transaction per input partition, and its inputs are acked to Faust only after
that commit (Faust commits no offset of its own in that mode).

Faust-free: the shell hands in how to read a Faust event (`to_raw`), the producer's `send`, the
stream's `ack` and the app's `crash`, so unit tests drive it with fakes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterable, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar

from worker import metrics, pipeline
from worker.batching import Backlog
from worker.budget import Budget, record_bytes
from worker.config import Settings
from worker.records import BatchResult, Outgoing, RawRecord
from worker.reload import Serving

logger = logging.getLogger(__name__)

E = TypeVar("E")  # an input event as the consumer hands it over
Send = Callable[[Outgoing], Awaitable[Awaitable[Any]]]  # hands a record to the producer; returns its ack
Labelled = tuple[list[RawRecord], BatchResult, list[Awaitable[Any]]]
Transact = Callable[[list[RawRecord], list[Outgoing]], Awaitable[None]]  # outputs + offsets, committed together

SHUTDOWN_ACKS_S = 30.0  # on shutdown, how long the last batch's acks may take to land
SHUTDOWN_LABELLER_S = 35.0  # on shutdown, how long the labeller may take to stop


def event_record(event: Any) -> RawRecord:
    """The record of a consumed event (Faust's events carry their Kafka message)."""
    return RawRecord.of(event.message)


class Labeller(Generic[E]):
    """Takes what waits in its backlog when the model is free (up to a batch), labels it in the
    inference thread, produces the outputs and acks the inputs once Kafka acknowledged them."""

    def __init__(self, settings: Settings, serving: Serving, *, send: Send, ack: Callable[[E], Awaitable[Any]],
                 crash: Callable[[BaseException], Awaitable[Any]],
                 to_raw: Callable[[E], RawRecord] = event_record, transact: Transact | None = None) -> None:
        self.settings, self.serving = settings, serving
        self._send, self._ack, self._crash, self._to_raw = send, ack, crash, to_raw
        self._transact = transact
        # Bounded at two batches waiting, and at the labeller's share of TEXTSTREAM_MAX_BUFFERED_BYTES
        # from the backlog until the outputs are acknowledged: a full backlog stops `consume`, and
        # with it the consumer.
        self.backlog: Backlog[E] = Backlog(settings.batch_size, settings.batch_max_wait, 2 * settings.batch_size,
                                           max_bytes=Budget.of(settings).labeller_bytes,
                                           size=lambda event: record_bytes(self._to_raw(event)))
        # One inference thread: TensorFlow parallelises inside the call, and batches stay ordered.
        self._infer_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self._crashing: asyncio.Future[Any] | None = None

    async def consume(self, events: AsyncIterable[E]) -> None:
        """Hands every event to the backlog as it arrives while `run` labels what waits; returns
        (taking nothing more) once `run` stopped the worker."""
        worker = asyncio.create_task(self.run())
        try:
            async for event in events:
                if self.backlog.full():
                    room = asyncio.create_task(self.backlog.room())
                    await asyncio.wait([room, worker], return_when=asyncio.FIRST_COMPLETED)
                    room.cancel()
                if worker.done():  # the labeller stopped the worker: take nothing more
                    return
                self.backlog.put_nowait(event)
                metrics.IN_FLIGHT.inc()
        finally:
            if not worker.done():
                worker.cancel()
                await asyncio.wait([worker], timeout=SHUTDOWN_LABELLER_S)

    async def run(self) -> None:
        """Runs the model on whatever waits when it is free (up to a batch), overlapping with the acks.

        Inputs are acked only in `settle`, after their outputs; each `settle` starts only after the
        previous one succeeded, so offsets advance in order and never past an unacknowledged output.
        A failure stops the worker with nothing of the failed batch (or any later one) acked: the
        restart redelivers them rather than skip them.
        """
        previous: asyncio.Task[None] | None = None
        try:
            while True:
                events = await self.backlog.take()
                metrics.BATCH_SIZE.observe(len(events))
                try:
                    labelled = await self.label(events)
                    if previous is not None:
                        await previous
                except Exception as exc:
                    logger.exception("a batch failed (this one of %d or the one before); stopping the worker without "
                                     "committing either", len(events))
                    await self._crash(exc)
                    return
                previous = asyncio.create_task(self.settle(events, *labelled))
                previous.add_done_callback(self._crash_on_failure)
        finally:
            if previous is not None and not previous.done():
                await asyncio.wait([previous], timeout=SHUTDOWN_ACKS_S)  # on shutdown: let the last batch's acks land

    async def label(self, events: list[E]) -> Labelled:
        """Run one batch through the model and hand every output to the producer (not yet acked); with
        `transact`, the outputs wait for the batch's transaction in `settle`."""
        records = [self._to_raw(e) for e in events]
        model = self.serving.bundle
        assert model is not None  # the agent waits for the first version
        started = time.perf_counter()
        result = await asyncio.get_running_loop().run_in_executor(
            self._infer_pool, pipeline.process, model, self.settings, records)
        metrics.INFERENCE_SECONDS.observe(time.perf_counter() - started)
        pending = [] if self._transact is not None else [await self._send(o) for o in result.outgoing]
        return records, result, pending

    async def settle(self, events: list[E], records: list[RawRecord], result: BatchResult,
                     pending: list[Awaitable[Any]]) -> None:
        """Wait until Kafka acknowledged every output of a batch (acks=all), or committed them with the
        input offsets (`transact`), then ack its inputs."""
        if self._transact is not None:
            await self._transact(records, result.outgoing)
        await asyncio.gather(*pending)
        self._observe(records, result)
        for event in events:
            await self._ack(event)
        metrics.IN_FLIGHT.dec(len(events))
        self.backlog.release(events)

    def _observe(self, records: list[RawRecord], result: BatchResult) -> None:
        """Metrics and log lines of a batch whose outputs Kafka acknowledged."""
        now = time.time()
        for rec in records:
            if rec.timestamp:
                metrics.END_TO_END_SECONDS.observe(max(now - rec.timestamp, 0.0))
        metrics.observe_batch(result.predictions, result.rejected, self.settings.novelty_threshold, result.reviewed)
        for rej in result.rejected:
            logger.warning(
                "dead-lettered %s/%d/%d reason=%s detail=%s",
                rej.source.topic, rej.source.partition, rej.source.offset, rej.reason, rej.detail[:200],
            )

    def _crash_on_failure(self, task: asyncio.Task[None]) -> None:
        # When no further batch comes to await it, a failed settle must still stop the worker.
        exc = None if task.cancelled() else task.exception()
        if exc is not None:
            logger.error("outputs of a batch were not acknowledged: %s; stopping the worker", exc)
            self._crashing = asyncio.ensure_future(self._crash(exc))  # keep a reference: the loop holds only a weak one

"""The Faust shell: the only module that imports faust.

It consumes raw bytes into a backlog, runs `batch.process` in a thread on whatever waits when the
model is free (up to a batch; `worker.backlog`), produces every output, waits until Kafka
acknowledged all of them, and only then acks the input events so their offsets can be committed
(at-least-once; faust#189 and #606 are why acks are ours).
Around that: hot reload (registry polls and `texts.models` events), Prometheus metrics, consumer
lag, and the /healthz, /readyz and /status pages.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer
from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
from faust.transport.drivers import aiokafka as faust_kafka
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from worker import batch, bundle, logs, metrics, topics
from worker.backlog import Backlog
from worker.batch import RawRecord
from worker.codec import Source
from worker.config import Settings
from worker.errors import TextstreamError
from worker.lag import LagProbe
from worker.security import ClientSecurity, from_settings
from worker.serving import Serving

logger = logging.getLogger(__name__)

LAG_INTERVAL_S = 5.0
LOADING_SWITCH_INTERVAL_S = 0.0005  # see short_gil_slices
LOADING_NICE = 19  # see lower_priority
STALE_AFTER_S = 30.0  # a loop tick or a broker answer older than this means unhealthy / not ready
# The broker answers a fetch when this much is ready or TEXTSTREAM_FETCH_MAX_WAIT has passed. Faust
# asks for 1 byte, so under a steady stream every fetch returns one or two records and the consumer
# thread does a round trip (and wakes the event loop) per record. Measured on 2 cores: p99 at half
# load ~183 ms with Faust's fetches, ~156 ms with these (4 runs each); the price is ~4 % of peak
# throughput (5 bursts each) and ~4 % of a core for an idle worker's 100 fetches a second.
FETCH_MIN_BYTES = 262_144


def to_raw(event: Any) -> RawRecord:
    message = event.message
    headers = tuple((k, bytes(v or b"")) for k, v in (message.headers or ()))
    return RawRecord(
        value=message.value,
        key=message.key,
        source=Source(message.topic, message.partition, message.offset),
        timestamp=message.timestamp,
        headers=headers,
    )


def broker_credentials(access: ClientSecurity) -> faust.types.auth.CredentialsT | None:
    """The same security as every other client, as Faust's credentials (its aiokafka driver maps
    them back onto security_protocol, sasl_mechanism, sasl_plain_* and ssl_context)."""
    if access.sasl:
        return faust.SASLCredentials(username=access.username, password=access.password,
                                     mechanism=access.mechanism, ssl_context=access.ssl_context)
    if access.tls:
        return faust.SSLCredentials(access.ssl_context)
    return None


@contextlib.contextmanager
def short_gil_slices(seconds: float) -> Iterator[None]:
    """While a model version loads (about a second of Python in the loading thread), let the
    serving threads take the GIL back within `seconds` instead of Python's 5 ms: each of their many
    GIL waits per batch is shorter, which trims the latency bump of a hot reload (bench/reload.py)."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(seconds)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


def lower_priority(nice: int) -> None:
    """Give the calling thread a lower CPU priority (Linux schedules threads one by one): a model
    version loading beside the serving threads then yields the cores to them. bench/reload.py, 2
    alternating runs each: swap p99 176 and 166 ms at nice 19, 230 and 216 ms without."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except OSError as exc:  # not permitted, or not Linux: load at normal priority
        logger.warning("could not lower the model loading thread's priority: %s", exc)


def transport(app: faust.App, settings: Settings) -> Any:
    """Faust's aiokafka transport with our fetch sizes (Faust has no setting for them)."""
    wait_ms = round(settings.fetch_max_wait * 1000)

    class ConsumerThread(faust_kafka.AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport_: Any) -> Any:
            consumer = super()._create_worker_consumer(transport_)
            # Faust passes no fetch_min_bytes and a fixed fetch_max_wait_ms; aiokafka reads both
            # from these attributes when the consumer starts (tests/agents check that they exist).
            consumer._fetch_min_bytes, consumer._fetch_max_wait_ms = FETCH_MIN_BYTES, wait_ms
            return consumer

    class WorkerConsumer(faust_kafka.Consumer):
        def _new_consumer_thread(self) -> ConsumerThread:
            return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    class Transport(faust_kafka.Transport):
        Consumer = WorkerConsumer

    return Transport(app.conf.broker_consumer, app)


@functools.cache
def faust_metrics() -> FaustMetrics:
    """Faust's transport metrics (`faust_*`), registered once per process however many apps."""
    return FaustMetrics.create(REGISTRY, "faust")


def create_app(settings: Settings, serving: Serving) -> faust.App:
    # Faust wants a data directory even without tables; its parent must exist.
    datadir = Path(tempfile.gettempdir()) / "textstream" / settings.app_id
    datadir.parent.mkdir(parents=True, exist_ok=True)
    access = from_settings(settings)
    app = faust.App(
        settings.app_id,
        broker=settings.faust_broker,
        broker_credentials=broker_credentials(access),
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=settings.topic_partitions,
        # A new consumer group starts from the oldest record: texts sent before the first worker
        # started are labelled too.
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        # Client-side cap only (the broker's message.max.bytes decides): room for a dead-lettered
        # input of the largest accepted size plus its headers.
        producer_max_request_size=max(settings.max_text_bytes, settings.max_output_bytes) + 65_536,
        # A batch's outputs are handed over at once: let them travel in few, large record batches
        # (Faust's default caps a batch at 16 KB, a handful of outputs). This halves the broker's
        # CPU per record (bench/throughput.py); 512 KB stays under the broker's 1 MB batch limit.
        producer_max_batch_size=524_288,
        # No linger: aiokafka 0.14.0 can leave a lingering batch without a wake-up, so the outputs
        # of a lone record waited for the next record's (tests/integration: a text sent alone).
        # Batches stay large without it: a batch's outputs are all appended before the sender
        # task runs (3 bursts each: the same throughput as with 5 ms).
        producer_linger=0.0,
        web_port=settings.web_port,
        web_bind=settings.web_host,
        web_in_thread=False,
        datadir=str(datadir),
        broker_rebalance_timeout=20,
        # A worker that died (kill -9, lost host) keeps its partitions until its session times out:
        # 10 s instead of Faust's 60 s. Heartbeats come from Faust's consumer thread, not from the
        # batch loop, so a long model call does not count against it.
        broker_session_timeout=10,
        broker_heartbeat_interval=3,
    )
    app.transport = transport(app, settings)  # before the first topic asks for one
    app.monitor = PrometheusMonitor(metrics=faust_metrics())
    source = app.topic(settings.input_topic, key_serializer="raw", value_serializer="raw")
    # One inference thread: TensorFlow parallelises inside the call, and batches stay ordered.
    # Loading gets its own thread so a new version loads while the current one keeps serving.
    infer_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
    load_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-load",
                                   initializer=lower_priority, initargs=(LOADING_NICE,))
    model_ready = asyncio.Event()
    if serving.bundle is not None:  # handed a loaded version (tests): serve it at once
        model_ready.set()
    reload_lock = asyncio.Lock()
    lag = LagProbe(settings.bootstrap_servers, settings.app_id, access)
    state: dict[str, Any] = {"tick": time.time(), "assigned": None, "started": time.time()}

    def load_next() -> bundle.Bundle | None:
        bundle.prepare_runtime(settings)  # TensorFlow comes with the first version, after the web pages are up
        return serving.poll()

    async def reload(reason: str) -> None:
        """Load what the registry asks for beside the current version; swap between batches."""
        loop = asyncio.get_running_loop()
        async with reload_lock:
            try:
                with short_gil_slices(LOADING_SWITCH_INTERVAL_S):
                    new = await loop.run_in_executor(load_pool, load_next)
                if new is None:
                    return
                await topics.ensure_topics(settings.bootstrap_servers, batch.output_topics(settings, new.labels),
                                           settings.topic_partitions, security=access)
            except TextstreamError as exc:
                serving.fail(exc)
                if serving.bundle is None:  # nothing to fall back to at start: fail fast and loud
                    await app.crash(exc)
                return
            logger.info("model version %d ready (%s); swapping", new.version, reason)
            old = serving.swap(new)  # the agent reads serving.bundle once per batch
            model_ready.set()
            if old is None:
                return
            del old, new
            started = time.perf_counter()
            freed = await loop.run_in_executor(load_pool, gc.collect)  # frees the old graph (~20 MB a reload)
            logger.info("released the previous version: %d objects in %.3fs", freed, time.perf_counter() - started)

    async def label(events: list[Any]) -> tuple[list[RawRecord], batch.BatchResult, list[Any]]:
        """Run one batch through the model and hand every output to the producer (not yet acked)."""
        records = [to_raw(e) for e in events]
        model = serving.bundle
        assert model is not None  # the agent waits for model_ready
        started = time.perf_counter()
        result = await asyncio.get_running_loop().run_in_executor(infer_pool, batch.process, model, settings, records)
        metrics.INFERENCE_SECONDS.observe(time.perf_counter() - started)
        producer = app.producer
        pending = [
            await producer.send(o.topic, o.key, o.value, partition=None, timestamp=None, headers=o.headers)
            for o in result.outgoing
        ]
        return records, result, pending

    async def settle(stream: Any, events: list[Any], records: list[RawRecord], result: batch.BatchResult,
                     pending: list[Any]) -> None:
        """Wait until Kafka acknowledged every output of a batch (acks=all), then ack its inputs."""
        await asyncio.gather(*pending)
        now = time.time()
        for rec in records:
            if rec.timestamp:
                metrics.END_TO_END_SECONDS.observe(max(now - rec.timestamp, 0.0))
        metrics.observe_batch(result.predictions, result.rejected, settings.novelty_threshold)
        for rej in result.rejected:
            logger.warning(
                "dead-lettered %s/%d/%d reason=%s detail=%s",
                rej.source.topic, rej.source.partition, rej.source.offset, rej.reason, rej.detail[:200],
            )
        for event in events:
            await stream.ack(event)
        metrics.IN_FLIGHT.dec(len(events))

    async def labeller(stream: Any, backlog: Backlog[Any]) -> None:
        """Runs the model on whatever waits when it is free (up to a batch), overlapping with the acks.

        Inputs are acked only in `settle`, after their outputs; each `settle` starts only after the
        previous one succeeded, so offsets advance in order and never past an unacknowledged output.
        A failure stops the worker with nothing of the failed batch (or any later one) acked: the
        restart redelivers them rather than skip them.
        """
        previous: asyncio.Task[None] | None = None
        try:
            while True:
                events = await backlog.take()
                metrics.BATCH_SIZE.observe(len(events))
                try:
                    labelled = await label(events)
                    if previous is not None:
                        await previous
                except Exception as exc:
                    logger.exception("a batch failed (this one of %d or the one before); stopping the worker without "
                                     "committing either", len(events))
                    await app.crash(exc)
                    return
                previous = asyncio.create_task(settle(stream, events, *labelled))
                previous.add_done_callback(crash_on_failure)
        finally:
            if previous is not None and not previous.done():
                await asyncio.wait([previous], timeout=30)  # on shutdown: let the last batch's acks land

    @app.agent(source, name="label-texts")
    async def label_texts(stream: Any) -> None:
        """Hands every record to the labeller's backlog as it arrives (acks are the labeller's)."""
        await model_ready.wait()
        inputs = stream.noack()  # acks are the labeller's, after the outputs
        # Bounded at two batches: a full backlog stops this loop, and with it the consumer.
        backlog: Backlog[Any] = Backlog(settings.batch_size, settings.batch_max_wait, 2 * settings.batch_size)
        worker = asyncio.create_task(labeller(inputs, backlog))
        try:
            async for event in inputs.events():
                if backlog.full():
                    room = asyncio.create_task(backlog.room())
                    await asyncio.wait([room, worker], return_when=asyncio.FIRST_COMPLETED)
                    room.cancel()
                if worker.done():  # the labeller stopped the worker: take nothing more
                    return
                backlog.put_nowait(event)
                metrics.IN_FLIGHT.inc()
        finally:
            if not worker.done():
                worker.cancel()
                await asyncio.wait([worker], timeout=35)

    def crash_on_failure(task: asyncio.Task[None]) -> None:
        # When no further batch comes to await it, a failed settle must still stop the worker.
        if not task.cancelled() and task.exception() is not None:
            logger.error("outputs of a batch were not acknowledged: %s; stopping the worker", task.exception())
            asyncio.ensure_future(app.crash(task.exception()))  # type: ignore[arg-type]

    @app.task
    async def load_first_model() -> None:
        await reload("start")

    @app.timer(settings.reload_interval)
    async def poll_registry() -> None:
        await reload("registry poll")

    @app.task
    async def follow_model_events() -> None:
        """Every worker reads every `texts.models` event (no consumer group): all switch at once.
        Polling the registry stays the fallback, so a broken connection here only delays reloads."""
        while True:
            consumer = AIOKafkaConsumer(settings.models_topic, bootstrap_servers=settings.bootstrap_servers,
                                        group_id=None, auto_offset_reset="latest", enable_auto_commit=False,
                                        **access.kwargs())
            try:
                await topics.ensure_topics(settings.bootstrap_servers, [settings.models_topic], 1, security=access)
                await consumer.start()
                async for event in consumer:
                    logger.info("model event %s", (event.value or b"")[:200].decode("utf-8", "replace"))
                    await reload("models topic event")
            except Exception as exc:
                logger.warning("models topic listener: %s; retrying in 5 s", exc)
                await asyncio.sleep(5)
            finally:
                await consumer.stop()

    @app.timer(1.0)
    async def tick() -> None:
        state["tick"] = time.time()

    @app.timer(LAG_INTERVAL_S)
    async def measure_lag() -> None:
        if state["assigned"] is not None:
            await lag.measure((tp.topic, tp.partition) for tp in app.consumer.assignment()
                              if tp.topic == settings.input_topic)

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]  # faust's signal types want a sender kwarg
    async def on_assigned(app_: Any, assigned: Any, **kwargs: Any) -> None:
        state["assigned"] = sorted(f"{tp.topic}/{tp.partition}" for tp in assigned
                                   if tp.topic == settings.input_topic)
        logger.info("assigned partitions %s", ",".join(state["assigned"]) or "none")

    def readiness() -> dict[str, Any]:
        now = time.time()
        checks = {
            "model_loaded": serving.bundle is not None,
            "partitions_assigned": state["assigned"] is not None,
            "broker_reachable": lag.last_ok is not None and now - lag.last_ok < STALE_AFTER_S,
        }
        return {"ready": all(checks.values()), "checks": checks, "model_version": serving.version,
                "assigned": state["assigned"] or []}

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        age = time.time() - state["tick"]
        ok = age < STALE_AFTER_S
        return web.json({"alive": ok, "event_loop_tick_age_s": round(age, 3)}, status=200 if ok else 503)

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        body = readiness()
        return web.json(body, status=200 if body["ready"] else 503)

    @app.page("/metrics")
    async def prometheus(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    @app.page("/status")
    async def status(web: Any, request: Any) -> Any:
        return web.json({**serving.status(), **readiness(), "app_id": settings.app_id,
                         "started_at": state["started"], "lag": {f"{t}/{p}": v for (t, p), v in lag.lag.items()}})

    return app


def run(settings: Settings, serving: Serving) -> None:
    """Run the worker until SIGTERM/SIGINT (Faust's worker installs the handlers and shuts down
    cleanly: the agent finishes or abandons its batch, acked offsets are committed)."""
    app = create_app(settings, serving)
    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True, redirect_stdouts=False,
                          logging_config=logs.dict_config(settings.log_level, settings.log_format))
    worker.execute_from_commandline()

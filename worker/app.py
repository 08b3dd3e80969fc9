"""The Faust shell, the only module that imports faust: Faust's settings and the wiring of the
stages. The agent feeds `worker.publish` (batches, model, outputs, then acks), `worker.reload` swaps
model versions, `worker.health` writes the /healthz, /readyz and /status bodies; with
TEXTSTREAM_PROCESSING_GUARANTEE=exactly_once, `worker.transactions` commits outputs and offsets."""

from __future__ import annotations

import functools
import logging
import os
import tempfile
import threading
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import faust
from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
from faust.transport.drivers import aiokafka as faust_kafka
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from worker import bundle, fetching, logs
from worker.budget import Budget
from worker.config import Settings
from worker.health import Health
from worker.lag import LagProbe
from worker.limits import Limits
from worker.publish import Labeller
from worker.records import Outgoing
from worker.reload import Reloader, Serving, create_output_topics, follow_model_events
from worker.security import ClientSecurity, from_settings
from worker.transactions import Transactions

logger = logging.getLogger(__name__)

LAG_INTERVAL_S = 5.0
# The broker answers a fetch when this much is ready or TEXTSTREAM_FETCH_MAX_WAIT has passed. Faust
# asks for 1 byte, so under a steady stream every fetch returns one or two records and the consumer
# thread does a round trip (and wakes the event loop) per record. Measured on 2 cores: p99 at half
# load ~183 ms with Faust's fetches, ~156 ms with these (4 runs each); the price is ~4 % of peak
# throughput (5 bursts each) and ~4 % of a core for an idle worker's 100 fetches a second.
FETCH_MIN_BYTES = 262_144


def broker_credentials(access: ClientSecurity) -> faust.types.auth.CredentialsT | None:
    """The same security as every other client, as Faust's credentials (its aiokafka driver maps
    them back onto security_protocol, sasl_mechanism, sasl_plain_* or sasl_oauth_token_provider, and
    ssl_context)."""
    if access.oauth:
        return faust.OAuthCredentials(oauth_cb=access.token_provider, ssl_context=access.ssl_context)
    if access.sasl:
        return faust.SASLCredentials(username=access.username, password=access.password,
                                     mechanism=access.mechanism, ssl_context=access.ssl_context)
    if access.tls:
        return faust.SSLCredentials(access.ssl_context)
    return None


def transport(app: faust.App, settings: Settings) -> Any:
    """Faust's aiokafka transport with our fetch sizes (Faust has no setting for them)."""
    wait_ms = round(settings.fetch_max_wait * 1000)
    budget = Budget.of(settings)

    class ConsumerThread(faust_kafka.AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport_: Any) -> Any:
            consumer = super()._create_worker_consumer(transport_)
            # Faust passes no fetch_min_bytes and a fixed fetch_max_wait_ms; aiokafka reads both
            # from these attributes when the consumer starts (tests/agents check that they exist).
            consumer._fetch_min_bytes, consumer._fetch_max_wait_ms = FETCH_MIN_BYTES, wait_ms
            # Fetch sizes from TEXTSTREAM_MAX_BUFFERED_BYTES (worker/budget.py), read on start too.
            consumer._fetch_max_bytes = budget.fetch_max_bytes
            consumer._max_partition_fetch_bytes = budget.partition_fetch_bytes
            if settings.exactly_once:  # inputs of an upstream transaction that aborted are not labelled
                consumer._isolation_level = "read_committed"
            return consumer

    class WorkerConsumer(faust_kafka.Consumer):
        def _new_consumer_thread(self) -> ConsumerThread:
            return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

        async def _commit(self, offsets: Any) -> bool:
            if settings.exactly_once:
                # The offsets were committed in the batches' transactions (worker/transactions.py). A
                # commit of Faust's own, sent later, could move a partition back behind a newer one.
                return True
            return bool(await super()._commit(offsets))

    class Transport(faust_kafka.Transport):
        Consumer = WorkerConsumer

    return Transport(app.conf.broker_consumer, app)


@functools.cache
def faust_metrics() -> FaustMetrics:
    """Faust's transport metrics (`faust_*`), registered once per process however many apps."""
    return FaustMetrics.create(REGISTRY, "faust")


def create_app(settings: Settings, serving: Serving) -> faust.App:
    access = from_settings(settings)
    app = faust_app(settings, access)
    source = app.topic(settings.input_topic, key_serializer="raw", value_serializer="raw")
    health = Health(serving, LagProbe(settings.bootstrap_servers, settings.app_id, access), settings)

    def crash(exc: BaseException) -> Awaitable[None]:
        return app.crash(exc)  # looked up at call time: tests replace app.crash
    reloader = Reloader(serving, prepare=lambda: bundle.prepare_runtime(settings), crash=crash,
                        create_topics=functools.partial(create_output_topics, settings, access))
    transactions = Transactions.of(settings, access) if settings.exactly_once else None

    async def send(out: Outgoing) -> Any:
        return await app.producer.send(out.topic, out.key, out.value, partition=None, timestamp=None,
                                       headers=out.headers)

    @app.agent(source, name="label-texts")
    async def label_texts(stream: Any) -> None:
        """Hands every record to the labeller as it arrives (acks are the labeller's, after the outputs)."""
        await reloader.ready.wait()
        inputs = stream.noack()  # acks are the labeller's
        labeller = Labeller[Any](settings, serving, send=send, ack=inputs.ack, crash=crash,
                                 transact=transactions.commit if transactions is not None else None)
        try:
            await labeller.consume(inputs.events())
        finally:
            if transactions is not None:
                await transactions.close()

    if transactions is not None:
        @app.on_rebalance_complete.connect  # type: ignore[arg-type]  # as on_assigned below
        async def fence_previous_owners(app_: Any, **kwargs: Any) -> None:
            """Faust awaits this before it seeks to the committed offsets (faust/tables/recovery.py)."""
            await transactions.assign(tp.partition for tp in app.consumer.assignment()
                                      if tp.topic == settings.input_topic)

    @app.task
    async def load_first_model() -> None:
        await reloader.reload("start")

    @app.timer(settings.reload_interval)
    async def poll_registry() -> None:
        await reloader.reload("registry poll")

    @app.task
    async def follow_models_topic() -> None:
        await follow_model_events(settings, access, reloader.reload)

    @app.timer(1.0)
    async def tick() -> None:
        health.beat()

    @app.timer(LAG_INTERVAL_S)
    async def measure_lag() -> None:
        if health.assigned is not None:
            await health.lag.measure(health.inputs(app.consumer.assignment()))

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]  # faust's signal types want a sender kwarg
    async def on_assigned(app_: Any, assigned: Any, **kwargs: Any) -> None:
        health.assign(assigned)

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        body = health.liveness()
        return web.json(body, status=200 if body["alive"] else 503)

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        body = health.readiness()
        return web.json(body, status=200 if body["ready"] else 503)

    @app.page("/metrics")
    async def prometheus(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    @app.page("/status")
    async def status(web: Any, request: Any) -> Any:
        return web.json(health.status())

    return app


def faust_app(settings: Settings, access: ClientSecurity) -> faust.App:
    """The app with our consumer, producer and web settings; no agents, tasks or pages yet."""
    fetching.install()  # a record aiokafka cannot decode reaches the labeller instead of stopping its partition
    # Faust wants a data directory even without tables; its parent must exist.
    datadir = Path(tempfile.gettempdir()) / "textstream" / settings.app_id
    datadir.parent.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=settings.faust_broker,
        broker_credentials=broker_credentials(access),
        key_serializer="raw", value_serializer="raw", topic_partitions=settings.topic_partitions,
        # Faust creates no topic: the worker creates its one internal topic (the leader-election
        # topic, worker.topics.faust_internal_topics) at start with TEXTSTREAM_REPLICATION_FACTOR and
        # TEXTSTREAM_TOPIC_CONFIGS, or requires it with TEXTSTREAM_CREATE_TOPICS=false. Faust's own
        # topic_replication_factor cannot ask for the broker's default (-1) and it sets no configs.
        topic_allow_declare=False,
        # A new consumer group starts from the oldest record: texts sent before the first worker
        # started are labelled too.
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        # Every record we write fits the topic it goes to (worker/limits.py): the producer must
        # let the largest through, and a batch of several records must fit every topic too.
        producer_max_request_size=Limits.of(settings).producer_max_request_size,
        # A batch's outputs are handed over at once: let them travel in few, large record batches
        # (Faust's default caps a batch at 16 KB, a handful of outputs). This halves the broker's
        # CPU per record (bench/throughput.py); 512 KB, or the smallest topic limit when lower.
        producer_max_batch_size=Limits.of(settings).producer_batch_bytes,
        # No linger: aiokafka 0.14.0 can leave a lingering batch without a wake-up, so the outputs
        # of a lone record waited for the next record's (tests/integration: a text sent alone).
        # Batches stay large without it: a batch's outputs are all appended before the sender
        # task runs (3 bursts each: the same throughput as with 5 ms).
        producer_linger=0.0,
        web_port=settings.web_port, web_bind=settings.web_host, web_in_thread=False,
        # Events between the consumer and the agent: Faust counts them; worker/budget.py derives the
        # count from TEXTSTREAM_MAX_BUFFERED_BYTES (Faust's default, 4,096, is 4 GiB of 1 MiB records).
        stream_buffer_maxsize=Budget.of(settings).stream_buffer,
        datadir=str(datadir),
        broker_rebalance_timeout=20,
        # A worker that died (kill -9, lost host) keeps its partitions until its session times out:
        # 10 s instead of Faust's 60 s. Heartbeats come from Faust's consumer thread, not from the
        # batch loop, so a long model call does not count against it.
        broker_session_timeout=10, broker_heartbeat_interval=3,
    )
    app.transport = transport(app, settings)  # before the first topic asks for one
    app.monitor = PrometheusMonitor(metrics=faust_metrics())
    return app


class _Worker(faust.Worker):
    """Faust's worker, with a deadline on a stop (TEXTSTREAM_STOP_TIMEOUT, worker/config.py): the
    first SIGTERM or SIGINT starts a timer that ends the process if the clean stop hangs."""

    stop_timeout: float = 25.0

    def _schedule_shutdown(self, signal: Any) -> None:
        if not self._signal_stop_time:
            deadline = threading.Timer(self.stop_timeout, _abandon_stop, (self.stop_timeout,))
            deadline.daemon = True
            deadline.start()
        super()._schedule_shutdown(signal)


def _abandon_stop(seconds: float) -> None:
    logger.error("the worker did not stop cleanly within %.0f s (TEXTSTREAM_STOP_TIMEOUT; is the broker "
                 "reachable?): exiting without committing, as after a crash; the records since the last commit "
                 "will be read again", seconds)
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(1)


def run(settings: Settings, serving: Serving) -> None:
    """Run the worker until SIGTERM/SIGINT (Faust's worker installs the handlers and shuts down
    cleanly: the agent finishes or abandons its batch, acked offsets are committed; within
    TEXTSTREAM_STOP_TIMEOUT, or the process exits 1 uncommitted)."""
    app = create_app(settings, serving)
    worker = _Worker(app, loglevel=settings.log_level, quiet=True, redirect_stdouts=False,
                     logging_config=logs.dict_config(settings.log_level, settings.log_format))
    worker.stop_timeout = settings.stop_timeout
    worker.execute_from_commandline()

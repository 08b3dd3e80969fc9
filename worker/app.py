"""The Faust shell: the only module that imports faust.

It consumes raw bytes, takes micro-batches (size AND deadline), runs `batch.process` in a thread,
produces every output, waits until Kafka acknowledged all of them, and only then acks the input
events so their offsets can be committed (at-least-once; faust#189 and #606 are why acks are ours).
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust

from worker import batch
from worker.batch import RawRecord
from worker.bundle import Bundle
from worker.codec import Source
from worker.config import Settings

logger = logging.getLogger(__name__)


@dataclass
class Serving:
    """The model version in use; hot reload replaces `bundle` between batches."""

    bundle: Bundle


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


def create_app(settings: Settings, serving: Serving) -> faust.App:
    # Faust wants a data directory even without tables; its parent must exist.
    datadir = Path(tempfile.gettempdir()) / "textstream" / settings.app_id
    datadir.parent.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=settings.faust_broker,
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
        web_port=settings.web_port,
        web_bind=settings.web_host,
        web_in_thread=False,
        datadir=str(datadir),
        broker_rebalance_timeout=20,
    )
    source = app.topic(settings.input_topic, key_serializer="raw", value_serializer="raw")
    # One inference thread: TensorFlow parallelises inside the call, and batches stay ordered.
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")

    async def handle(events: list[Any]) -> None:
        records = [to_raw(e) for e in events]
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(executor, batch.process, serving.bundle, settings, records)
        producer = app.producer
        pending = [
            await producer.send(o.topic, o.key, o.value, partition=None, timestamp=None, headers=o.headers)
            for o in result.outgoing
        ]
        await asyncio.gather(*pending)  # every output acknowledged by Kafka (acks=all)
        for rej in result.rejected:
            logger.warning(
                "dead-lettered %s/%d/%d reason=%s detail=%s",
                rej.source.topic, rej.source.partition, rej.source.offset, rej.reason, rej.detail[:200],
            )
        logger.debug("batch size=%d labeled=%d rejected=%d model_version=%d",
                     len(records), result.labeled, len(result.rejected), result.model_version)

    @app.agent(source, name="label-texts")
    async def label_texts(stream: Any) -> None:  # a faust.Stream; StreamT lacks noack_take
        async for events in stream.noack_take(settings.batch_size, within=settings.batch_max_wait):
            try:
                await handle(list(events))
            except Exception as exc:
                # Nothing of this batch is acked, so its offsets are never committed: stop the
                # worker and let the restart redeliver the batch rather than skip it.
                logger.exception("batch of %d failed; stopping the worker without committing it", len(events))
                await app.crash(exc)
                return
            for event in events:
                await stream.ack(event)

    return app


def run(settings: Settings, bundle: Bundle) -> None:
    """Run the worker until SIGTERM/SIGINT (Faust's worker installs the handlers and shuts down
    cleanly: the agent finishes or abandons its batch, acked offsets are committed)."""
    app = create_app(settings, Serving(bundle))
    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()

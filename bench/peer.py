"""The loop a user would write instead of adopting Faust: plain aiokafka around the worker's own core.

One consumer in the group TEXTSTREAM_APP_ID reads TEXTSTREAM_INPUT_TOPIC; each `getmany` (up to
TEXTSTREAM_BATCH_SIZE records) goes through `worker.pipeline.process` (decode, predict, route: the
same version, the same outputs, topics and dead letters as the worker) in a thread; every output is
sent and awaited, then the offsets are committed: at-least-once, like the worker. While a batch is
in the model the next fetch is already under way (aiokafka prefetches). No metrics, no hot reload,
no byte budget, no web page: what the worker does besides.

bench/throughput.py runs it as a process with the worker's environment; it prints "ready" once
it owns partitions.

    .venv/bin/python bench/peer.py
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from worker import bundle, config, pipeline, topics
from worker.records import RawRecord
from worker.security import PLAINTEXT


async def run(settings: config.Settings) -> None:
    bundle.prepare_runtime(settings)
    model = bundle.load_serving(settings.model_dir)
    await topics.prepare_worker_topics(settings, PLAINTEXT, model.labels)  # the worker's, with its topic configs
    consumer = AIOKafkaConsumer(settings.input_topic, bootstrap_servers=settings.bootstrap_servers,
                                group_id=settings.app_id, enable_auto_commit=False, auto_offset_reset="earliest")
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all", linger_ms=5,
                                max_request_size=4 << 20)
    await consumer.start()
    await producer.start()
    loop = asyncio.get_running_loop()
    announced = False
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=int(settings.batch_max_wait * 1000) or 1,
                                             max_records=settings.batch_size)
            if not announced and consumer.assignment():
                print("ready", flush=True)
                announced = True
            records = [RawRecord.of(m) for msgs in batches.values() for m in msgs]
            if not records:
                continue
            result = await loop.run_in_executor(None, pipeline.process, model, settings, records)
            sent = [await producer.send(o.topic, o.value, key=o.key, headers=list(o.headers or ()))
                    for o in result.outgoing]
            await asyncio.gather(*sent)
            await consumer.commit()
    finally:
        await consumer.stop()
        await producer.stop()


def main() -> int:
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    asyncio.run(run(config.load_settings()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Registry events on `texts.models`: the training job and `textstream models` announce a change so
that every worker reloads within a second instead of at its next registry poll."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from worker.security import PLAINTEXT, ClientSecurity
from worker.topics import TopicSpec, ensure_topics

logger = logging.getLogger(__name__)


async def announce(bootstrap: str, topic: str, event: dict[str, Any], timeout_s: float = 10.0, *,
                   security: ClientSecurity = PLAINTEXT, spec: TopicSpec | None = None) -> None:
    """Send one event; with `spec`, first create the topic (one partition) as the worker would, so that
    a cluster without auto-creation gets it with the configured replication and configs."""
    if spec is not None:
        await ensure_topics(bootstrap, [topic], 1, timeout_s, security=security, spec=spec)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", request_timeout_ms=int(timeout_s * 1000),
                                **security.kwargs())
    try:
        await producer.start()
        await producer.send_and_wait(topic, orjson.dumps({**event, "at": time.time()}))
    finally:
        await producer.stop()


def notify(bootstrap: str, topic: str, event: dict[str, Any], *, security: ClientSecurity = PLAINTEXT,
           spec: TopicSpec | None = None) -> bool:
    """Announce `event`; a broker that does not answer (or a topic that cannot be created) is logged,
    not fatal: workers poll anyway."""
    try:
        asyncio.run(asyncio.wait_for(announce(bootstrap, topic, event, security=security, spec=spec), 15))
    except Exception as exc:
        logger.warning("could not announce %s on %s (workers will notice at their next registry poll): %s",
                       event.get("event"), topic, exc)
        return False
    logger.info("announced %s on %s", event, topic)
    return True

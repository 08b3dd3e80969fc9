"""One micro-batch, from raw records to the records to publish. Pure and synchronous.

The Faust agent turns events into `RawRecord`s, runs `process` in a thread, sends every `Outgoing`
and only then acknowledges the input offsets.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from worker import codec, pipeline
from worker.bundle import Bundle
from worker.codec import Rejected, Source, TextMessage
from worker.config import Settings
from worker.topics import label_topic

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class RawRecord:
    """A Kafka record as consumed, before any decoding."""

    value: bytes | None
    key: bytes | None
    source: Source
    timestamp: float | None = None
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A record to produce."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers | None = None


@dataclass(frozen=True, slots=True)
class BatchResult:
    outgoing: list[Outgoing]
    labeled: int
    rejected: list[Rejected]
    model_version: int


def process(bundle: Bundle, settings: Settings, records: Sequence[RawRecord]) -> BatchResult:
    """Decode, label and route every record; each input yields output on texts.labeled or texts.dlq."""
    received_at = time.time()
    messages: list[TextMessage] = []
    rejected: list[Rejected] = []
    for rec in records:
        decoded = codec.decode(
            rec.value, rec.source, max_bytes=settings.max_text_bytes, key=rec.key,
            received_at=received_at, timestamp=rec.timestamp, headers=rec.headers,
        )
        (messages if isinstance(decoded, TextMessage) else rejected).append(decoded)  # type: ignore[arg-type]

    predictions = pipeline.predict(bundle, messages)
    processed_at = time.time()
    outgoing: list[Outgoing] = []
    for msg, pred in zip(messages, predictions, strict=True):
        value = codec.encode_result(msg, pred, bundle.version, processed_at)
        outgoing.append(Outgoing(settings.output_topic, msg.key, value))
        outgoing.append(Outgoing(label_topic(settings.label_topic_prefix, pred.label), msg.key, value))
    for rej in rejected:
        outgoing.append(Outgoing(settings.dlq_topic, rej.key, rej.value, codec.dlq_headers(rej)))
    return BatchResult(outgoing, len(messages), rejected, bundle.version)


def output_topics(settings: Settings, labels: Sequence[str]) -> list[str]:
    """Every topic the worker writes for a model with these labels."""
    return [settings.output_topic, settings.dlq_topic, *(label_topic(settings.label_topic_prefix, x) for x in labels)]

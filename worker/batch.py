"""One micro-batch, from raw records to the records to publish. Pure and synchronous.

The Faust agent turns events into `RawRecord`s, runs `process` in a thread, sends every `Outgoing`
and only then acknowledges the input offsets.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from worker import codec, pipeline
from worker.bundle import Bundle
from worker.codec import Prediction, Rejected, Source, TextMessage
from worker.config import Settings
from worker.topics import label_topic

Headers = list[tuple[str, bytes]]
PROBE = "a plain text that any model version labels"


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
    predictions: list[Prediction]  # of the records published as labeled
    rejected: list[Rejected]
    model_version: int

    @property
    def labeled(self) -> int:
        return len(self.predictions)


def process(bundle: Bundle, settings: Settings, records: Sequence[RawRecord]) -> BatchResult:
    """Decode, label and route every record; each input yields output on texts.labeled or texts.dlq."""
    received_at = time.time()
    valid: list[tuple[RawRecord, TextMessage]] = []
    rejected: list[Rejected] = []
    for rec in records:
        decoded = codec.decode(
            rec.value, rec.source, max_bytes=settings.max_text_bytes, key=rec.key,
            received_at=received_at, timestamp=rec.timestamp, headers=rec.headers,
        )
        if isinstance(decoded, TextMessage):
            valid.append((rec, decoded))
        else:
            rejected.append(decoded)

    predictions = predict_each(bundle, [msg for _, msg in valid])
    processed_at = time.time()
    outgoing: list[Outgoing] = []
    published: list[Prediction] = []
    for (rec, msg), pred in zip(valid, predictions, strict=True):
        if isinstance(pred, Exception):
            rejected.append(Rejected("model_error", f"the model failed on this input: {type(pred).__name__}: {pred}",
                                     rec.value, rec.source, rec.key, rec.headers))
            continue
        try:
            value = codec.encode_result(msg, pred, bundle.version, processed_at)
        except orjson.JSONEncodeError as exc:
            # orjson reads 1024 levels of nesting but writes only 254: a passthrough field nested
            # deeper would make this batch raise, stop the worker uncommitted and do it again after
            # every restart (a crash loop on one record). Dead-letter it like any bad input.
            rejected.append(Rejected("invalid_json", f"the output record cannot be written back: {exc}",
                                     rec.value, rec.source, rec.key, rec.headers))
            continue
        if len(value) > settings.max_output_bytes:
            # JSON escaping can make the output several times larger than the input.
            rejected.append(Rejected("output_too_large", f"output record {len(value)} bytes > limit "
                                     f"{settings.max_output_bytes}", rec.value, rec.source, rec.key, rec.headers))
            continue
        published.append(pred)
        outgoing.append(Outgoing(settings.output_topic, msg.key, value))
        outgoing.append(Outgoing(label_topic(settings.label_topic_prefix, pred.label), msg.key, value))
    for rej in rejected:
        outgoing.append(Outgoing(settings.dlq_topic, rej.key, rej.value, codec.dlq_headers(rej)))
    return BatchResult(outgoing, published, rejected, bundle.version)


def predict_each(bundle: Bundle, messages: list[TextMessage]) -> list[Prediction | Exception]:
    """One model call for the batch; if it fails, one call per message, so that an input the model
    cannot take is dead-lettered instead of failing its batch again after every restart. When a
    probe text fails too, the fault is the model's or the machine's, not an input's: raise."""
    try:
        return list(pipeline.predict(bundle, messages))
    except Exception as exc:
        try:
            bundle.infer([PROBE])
        except Exception:
            raise exc from None
        results: list[Prediction | Exception] = []
        for msg in messages:
            try:
                results.extend(pipeline.predict(bundle, [msg]))
            except Exception as alone:
                results.append(alone)
        return results


def output_topics(settings: Settings, labels: Sequence[str]) -> list[str]:
    """Every topic the worker writes for a model with these labels."""
    return [settings.output_topic, settings.dlq_topic, *(label_topic(settings.label_topic_prefix, x) for x in labels)]

"""Stage 4: predictions and rejections in, the records to produce out.

Each labelled input becomes its enriched record on texts.labeled plus the same record on the topic
of its label, or, when its confidence is under its label's threshold (TEXTSTREAM_MIN_CONFIDENCE,
TEXTSTREAM_MIN_CONFIDENCE_BY_LABEL), on the review topic instead; every input that cannot be
labelled or written back goes to the dead-letter topic with its original bytes and headers, plus
the reason and its provenance.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from worker.config import Settings
from worker.limits import Limits, reason_headers
from worker.records import BatchResult, Outgoing, Prediction, RawRecord, Rejected, TextMessage
from worker.topics import label_topic


def route(settings: Settings, model_version: int,
          labelled: Iterable[tuple[RawRecord, TextMessage, Prediction | Exception]],
          rejected: Sequence[Rejected], processed_at: float) -> BatchResult:
    """Every input yields output on texts.labeled (and its label's topic) or on texts.dlq; the
    rejections of this stage (model errors, outputs that cannot be written) follow `rejected`."""
    dead = list(rejected)
    outgoing: list[Outgoing] = []
    published: list[Prediction] = []
    reviewed: list[str] = []
    by_label = settings.thresholds if settings.review_on else None
    for rec, msg, pred in labelled:
        if isinstance(pred, Exception):
            dead.append(Rejected.of(rec, "model_error",
                                    f"the model failed on this input: {type(pred).__name__}: {pred}"))
            continue
        mark = None if by_label is None else review_mark(pred, by_label.get(pred.label, settings.min_confidence))
        value = encode_checked(settings, rec, msg, pred, model_version, processed_at, mark)
        if isinstance(value, Rejected):
            dead.append(value)
            continue
        published.append(pred)
        outgoing.append(Outgoing(settings.output_topic, msg.key, value, source=msg.source))
        if mark is not None and mark["route"] == "review":
            reviewed.append(pred.label)
            outgoing.append(Outgoing(settings.review_topic, msg.key, value, source=msg.source))
        else:
            outgoing.append(Outgoing(label_topic(settings.label_topic_prefix, pred.label), msg.key, value,
                                     source=msg.source))
    limits = Limits.of(settings)
    outgoing.extend(dead_letter(settings.dlq_topic, limits, rej) for rej in dead)
    return BatchResult(outgoing, published, dead, model_version, reviewed)


def review_floor(settings: Settings, labels: Sequence[str]) -> list[float] | None:
    """Per label, the confidence under which `route` sends its records to review; None when the
    review route is off. The model call takes it so as to skip the LSTM only where the route is sure."""
    if not settings.review_on:
        return None
    by_label = settings.thresholds
    return [by_label.get(label, settings.min_confidence) for label in labels]


def review_mark(pred: Prediction, threshold: float) -> dict[str, Any]:
    """The fields that say where a record went when the review route is on: `route` is "review" for a
    confidence strictly under `threshold` (its label's), else "label"; `min_confidence` is `threshold`."""
    return {"route": "review" if pred.confidence < threshold else "label", "min_confidence": threshold}


def dead_letter(topic: str, limits: Limits, rej: Rejected) -> Outgoing:
    """The dead letter of `rej`: its original bytes, key and headers, then the reason headers. When
    that would be larger than the dead-letter topic takes (only a too_large input can be, when the
    DLQ topic's max.message.bytes is not above the input topic's), the value, key and original
    headers are left out (an empty value) and `original_dropped` says so: the source headers name the
    input."""
    headers = dlq_headers(rej)
    if limits.dead_letter_fits(rej.key, rej.value, headers):
        # aiokafka sends no record without both key and value: a keyless tombstone's dead letter is empty.
        return Outgoing(topic, rej.key, b"" if rej.value is None and rej.key is None else rej.value, headers,
                        rej.source)
    sizes = (f"value {len(rej.value or b'')} bytes, key {len(rej.key or b'')} bytes, {len(rej.headers)} headers")
    detail = f"{rej.detail}; original not kept ({sizes}): its dead letter exceeds {limits.dead_letter_bytes} bytes"
    src = rej.source
    return Outgoing(topic, None, b"", [*reason_headers(rej.reason, detail, src.topic, src.partition, src.offset),
                                        ("original_dropped", b"true")], src)


def encode_checked(settings: Settings, rec: RawRecord, msg: TextMessage, pred: Prediction, model_version: int,
                   processed_at: float, mark: dict[str, Any] | None = None) -> bytes | Rejected:
    """The output record, or the input rejected when its output cannot be written or is too large."""
    try:
        value = encode_result(msg, pred, model_version, processed_at, mark)
    except orjson.JSONEncodeError as exc:
        # orjson reads 1024 levels of nesting but writes only 254: a passthrough field nested
        # deeper would make this batch raise, stop the worker uncommitted and do it again after
        # every restart (a crash loop on one record). Dead-letter it like any bad input.
        return Rejected.of(rec, "invalid_json", f"the output record cannot be written back: {exc}")
    limits = Limits.of(settings)
    size = limits.output_fits(msg.key, value)
    if size is not None:
        # JSON escaping can make the output several times larger than the input.
        return Rejected.of(rec, "output_too_large",
                           f"output record {size} bytes (key + value, as Kafka counts it) > limit {limits.output_bytes}")
    return value


def encode_result(
    msg: TextMessage, pred: Prediction, model_version: int, processed_at: float, mark: dict[str, Any] | None = None
) -> bytes:
    """The output record on texts.labeled and texts.label.<label> (or the review topic); `mark`
    (`review_mark`, only when the review route is on) adds `route` and `min_confidence`."""
    record: dict[str, Any] = dict(msg.fields)
    record.update(
        id=msg.id,
        label=pred.label,
        confidence=pred.confidence,
        scores=pred.scores,
        cluster_id=pred.cluster_id,
        cluster_similarity=pred.cluster_similarity,
        cluster_terms=list(pred.cluster_terms),
        model_version=model_version,
        text=msg.text,
        source={"topic": msg.source.topic, "partition": msg.source.partition, "offset": msg.source.offset},
        received_at=msg.received_at,
        processed_at=processed_at,
        **(mark or {}),
    )
    if pred.explanation is not None:
        record["explanation"] = pred.explanation
    return orjson.dumps(record)


def dlq_headers(rej: Rejected) -> list[tuple[str, bytes]]:
    """Reason and provenance headers of a dead-lettered record (original headers kept first)."""
    src = rej.source
    return [*rej.headers, *reason_headers(rej.reason, rej.detail, src.topic, src.partition, src.offset)]


def output_topics(settings: Settings, labels: Sequence[str]) -> list[str]:
    """Every topic the worker writes for a model with these labels (the review topic when the route is on)."""
    return [settings.output_topic, settings.dlq_topic, *([settings.review_topic] if settings.review_on else []),
            *(label_topic(settings.label_topic_prefix, x) for x in labels)]

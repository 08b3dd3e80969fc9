"""Stage 4: predictions and rejections in, the records to produce out.

Each labelled input becomes its enriched record on texts.labeled plus the same record on the topic
of its label; every input that cannot be labelled or written back goes to the dead-letter topic
with its original bytes and headers, plus the reason and its provenance.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from worker.config import Settings
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
    for rec, msg, pred in labelled:
        if isinstance(pred, Exception):
            dead.append(Rejected.of(rec, "model_error",
                                    f"the model failed on this input: {type(pred).__name__}: {pred}"))
            continue
        value = encode_checked(settings, rec, msg, pred, model_version, processed_at)
        if isinstance(value, Rejected):
            dead.append(value)
            continue
        published.append(pred)
        outgoing.append(Outgoing(settings.output_topic, msg.key, value))
        outgoing.append(Outgoing(label_topic(settings.label_topic_prefix, pred.label), msg.key, value))
    outgoing.extend(Outgoing(settings.dlq_topic, rej.key, rej.value, dlq_headers(rej)) for rej in dead)
    return BatchResult(outgoing, published, dead, model_version)


def encode_checked(settings: Settings, rec: RawRecord, msg: TextMessage, pred: Prediction, model_version: int,
                   processed_at: float) -> bytes | Rejected:
    """The output record, or the input rejected when its output cannot be written or is too large."""
    try:
        value = encode_result(msg, pred, model_version, processed_at)
    except orjson.JSONEncodeError as exc:
        # orjson reads 1024 levels of nesting but writes only 254: a passthrough field nested
        # deeper would make this batch raise, stop the worker uncommitted and do it again after
        # every restart (a crash loop on one record). Dead-letter it like any bad input.
        return Rejected.of(rec, "invalid_json", f"the output record cannot be written back: {exc}")
    if len(value) > settings.max_output_bytes:
        # JSON escaping can make the output several times larger than the input.
        return Rejected.of(rec, "output_too_large",
                           f"output record {len(value)} bytes > limit {settings.max_output_bytes}")
    return value


def encode_result(
    msg: TextMessage, pred: Prediction, model_version: int, processed_at: float
) -> bytes:
    """The output record on texts.labeled and texts.label.<label>."""
    record: dict[str, Any] = dict(msg.fields)
    record.update(
        id=msg.id,
        label=pred.label,
        confidence=pred.confidence,
        scores=pred.scores,
        cluster_id=pred.cluster_id,
        cluster_similarity=pred.cluster_similarity,
        model_version=model_version,
        text=msg.text,
        source={"topic": msg.source.topic, "partition": msg.source.partition, "offset": msg.source.offset},
        received_at=msg.received_at,
        processed_at=processed_at,
    )
    return orjson.dumps(record)


def dlq_headers(rej: Rejected) -> list[tuple[str, bytes]]:
    """Reason and provenance headers of a dead-lettered record (original headers kept first)."""
    return [
        *rej.headers,
        ("error", rej.reason.encode()),
        ("error_detail", rej.detail.encode("utf-8", "replace")[:1000]),
        ("source_topic", rej.source.topic.encode()),
        ("source_partition", str(rej.source.partition).encode()),
        ("source_offset", str(rej.source.offset).encode()),
    ]


def output_topics(settings: Settings, labels: Sequence[str]) -> list[str]:
    """Every topic the worker writes for a model with these labels."""
    return [settings.output_topic, settings.dlq_topic, *(label_topic(settings.label_topic_prefix, x) for x in labels)]

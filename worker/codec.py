"""Input and output contracts: raw Kafka bytes in, decoded messages or rejections out.

Decoding is ours (the Faust topic uses the raw serializer) so the bad-input policy is explicit
and tested: nothing that cannot be labelled is ever dropped or guessed at; it is rejected with a
machine-readable reason and later dead-lettered with its original bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

Reason = Literal[
    "tombstone",
    "too_large",
    "invalid_utf8",
    "invalid_json",
    "missing_text",
    "text_not_string",
    "invalid_id",
    "empty_text",
    "output_too_large",
    "model_error",
]
REASONS: tuple[Reason, ...] = Reason.__args__  # type: ignore[attr-defined]

# Fields the worker writes itself; an input field of the same name is replaced.
_OWN_FIELDS = frozenset(
    ["id", "text", "label", "confidence", "scores", "cluster_id", "cluster_similarity",
     "model_version", "source", "received_at", "processed_at"]
)


@dataclass(frozen=True, slots=True)
class Source:
    """Where a record came from: enough to find it again in Kafka."""

    topic: str
    partition: int
    offset: int

    def default_id(self) -> str:
        # Stable across redeliveries, so a duplicate after a crash carries the same id.
        return f"{self.topic}-{self.partition}-{self.offset}"


@dataclass(frozen=True, slots=True)
class TextMessage:
    """A valid input: the text to label plus everything needed to publish the result."""

    id: str
    text: str
    source: Source
    key: bytes | None = None
    received_at: float = 0.0
    timestamp: float | None = None  # the Kafka record timestamp, seconds
    fields: dict[str, Any] = field(default_factory=dict)  # passthrough fields of a JSON input


@dataclass(frozen=True, slots=True)
class Rejected:
    """An input that cannot be labelled; it goes to the dead-letter topic unchanged."""

    reason: Reason
    detail: str
    value: bytes | None
    source: Source
    key: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class Prediction:
    """What the models say about one text."""

    label: str
    confidence: float
    scores: dict[str, float]
    cluster_id: int
    cluster_similarity: float


def decode(
    value: bytes | None,
    source: Source,
    *,
    max_bytes: int,
    key: bytes | None = None,
    received_at: float = 0.0,
    timestamp: float | None = None,
    headers: tuple[tuple[str, bytes], ...] = (),
) -> TextMessage | Rejected:
    """Decode one raw record value per the input contract."""

    def reject(reason: Reason, detail: str) -> Rejected:
        return Rejected(reason, detail, value, source, key, headers)

    if value is None:
        return reject("tombstone", "record value is null")
    if len(value) > max_bytes:
        return reject("too_large", f"{len(value)} bytes > limit {max_bytes}")
    try:
        decoded = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        return reject("invalid_utf8", str(exc))

    fields: dict[str, Any] = {}
    msg_id = source.default_id()
    if decoded.lstrip().startswith("{"):
        # Looks like JSON, so it must be JSON: broken JSON is never labelled as prose.
        try:
            obj: dict[str, Any] = orjson.loads(value)  # a value starting with '{' parses to an object
        except orjson.JSONDecodeError as exc:
            return reject("invalid_json", str(exc))
        if "text" not in obj:
            return reject("missing_text", "JSON object has no 'text' field")
        text = obj.pop("text")
        if not isinstance(text, str):
            return reject("text_not_string", f"'text' is a {type(text).__name__}")
        if "id" in obj:
            given = obj.pop("id")
            if not isinstance(given, str) or not given:
                return reject("invalid_id", f"'id' must be a non-empty string, got {type(given).__name__}")
            msg_id = given
        fields = {k: v for k, v in obj.items() if k not in _OWN_FIELDS}
    else:
        text = decoded
    if not text.strip():
        return reject("empty_text", "text is empty or whitespace only")
    return TextMessage(msg_id, text, source, key, received_at, timestamp, fields)


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

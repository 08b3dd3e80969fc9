"""The contracts between the stages: what a record is on its way from Kafka back to Kafka.

decode: RawRecord -> TextMessage | Rejected; predict: TextMessage -> Prediction; route: predictions
and rejections -> Outgoing (gathered with them in a BatchResult); publish: Outgoing -> Kafka.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Reason = Literal[
    "tombstone",
    "too_large",
    "invalid_utf8",
    "invalid_json",
    "missing_text",
    "text_not_string",
    "missing_field",
    "field_not_string",
    "invalid_id",
    "empty_text",
    "output_too_large",
    "model_error",
    "undecodable_record",
    "corrupt_batch",
]
REASONS: tuple[Reason, ...] = Reason.__args__  # type: ignore[attr-defined]

Headers = list[tuple[str, bytes]]

# The header worker/fetching.py gives the one record that stands for a record batch no client can
# read (its value: the batch's bytes). A lone surrogate: no record from Kafka can carry this key
# (aiokafka decodes keys as UTF-8; worker/fetching.py escapes invalid bytes to U+DC80..U+DCFF).
CORRUPT_BATCH_HEADER = "\udfffcorrupt_batch"


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
class RawRecord:
    """A Kafka record as consumed, before any decoding."""

    value: bytes | None
    key: bytes | None
    source: Source
    timestamp: float | None = None
    headers: tuple[tuple[str, bytes], ...] = ()

    @classmethod
    def of(cls, message: Any) -> RawRecord:
        """A consumed message (Faust's, or aiokafka's ConsumerRecord: the same attributes)."""
        headers = tuple((k, bytes(v or b"")) for k, v in (message.headers or ()))
        return cls(
            value=message.value,
            key=message.key,
            source=Source(message.topic, message.partition, message.offset),
            timestamp=message.timestamp,
            headers=headers,
        )


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

    @classmethod
    def of(cls, rec: RawRecord, reason: Reason, detail: str) -> Rejected:
        """`rec` rejected, with its original bytes, key and headers."""
        return cls(reason, detail, rec.value, rec.source, rec.key, rec.headers)


@dataclass(frozen=True, slots=True)
class Prediction:
    """What the models say about one text."""

    label: str
    confidence: float
    scores: dict[str, float]
    cluster_id: int
    cluster_similarity: float
    explanation: dict[str, Any] | None = None  # with TEXTSTREAM_EXPLAIN (worker/explain.py)
    lstm_ran: bool = True  # False: the n-gram branch decided; confidence and scores are a bound (worker/lstm_skip.py)
    cluster_terms: tuple[str, ...] = ()  # the cluster's name: its top terms (empty for versions without names)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A record to produce, and the input it answers (exactly-once commits it with that input's offset)."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers | None = None
    source: Source | None = None


@dataclass(frozen=True, slots=True)
class BatchResult:
    """One batch's records to produce, with what they say for the metrics and logs."""

    outgoing: list[Outgoing]
    predictions: list[Prediction]  # of the records published as labeled
    rejected: list[Rejected]
    model_version: int
    reviewed: list[str] = field(default_factory=list)  # labels of the records sent to the review topic

    @property
    def labeled(self) -> int:
        return len(self.predictions)

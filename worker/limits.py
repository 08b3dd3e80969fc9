"""Record size limits: what the worker may write, in the bytes Kafka counts.

The broker refuses a record batch larger than the topic's `max.message.bytes` (default: the
broker's `message.max.bytes`, 1,048,588 in Kafka). A record the worker wants to write alone in its
batch takes `batch_bytes(key, value, headers)` of that. Three limits follow from the cluster
(`derive`, at start) and everything the worker writes is checked against them before it is sent:

- dead letters: at most the DLQ topic's limit (`dead_letter_bytes`);
- inputs: an input is labelled only if its dead letter, with the largest reason headers the worker
  could add, fits (`input_fits`), so a record that fails later (`output_too_large`, `model_error`)
  can always be dead-lettered with its original bytes; `text_bytes` is that limit for a value
  with no key and no headers, or TEXTSTREAM_MAX_TEXT_BYTES when lower;
- outputs: at most the smallest limit of the output and label topics (`output_bytes`).

An input over the input limit is dead-lettered as `too_large`. Its dead letter carries shorter
reason headers, so it still fits for inputs just over the limit; one that still does not fit (the
DLQ topic's limit is not above the input topic's by the reason headers) is dead-lettered without
its value, key and original headers (`original_dropped`), naming where it is in the input topic.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from worker.config import ENV_PREFIX, Settings
from worker.errors import ConfigError
from worker.records import REASONS

KAFKA_DEFAULT_MAX_MESSAGE_BYTES = 1_048_588  # Kafka's message.max.bytes (and so max.message.bytes) default
BATCH_HEADER_BYTES = 61  # a v2 record batch's header (base offset .. record count)
DETAIL_MAX_BYTES = 1000  # the error_detail header is cut to this
# aiokafka checks each record against max_request_size with an upper bound: the batch header,
# 21 bytes of record overhead (`MAX_RECORD_OVERHEAD`) and the key, value and headers.
AIOKAFKA_RECORD_OVERHEAD = 21
PRODUCER_BATCH_BYTES = 524_288  # the producer's record batches (several records): at most this
# A dead letter must at least hold its reason headers; the DLQ limit may not be lower than this.
MIN_DEAD_LETTER_BYTES = 4096

Header = tuple[str, bytes | None]


def varint_bytes(value: int) -> int:
    """Bytes of a zigzag varint (Kafka's record fields)."""
    zigzag = (value << 1) ^ (value >> 63)
    size = 1
    while zigzag > 0x7F:
        zigzag >>= 7
        size += 1
    return size


def record_fields_bytes(key: bytes | None, value: bytes | None, headers: Iterable[Header]) -> int:
    """Bytes of a record's key, value and headers with their length fields."""
    size = 1 if key is None else varint_bytes(len(key)) + len(key)
    size += 1 if value is None else varint_bytes(len(value)) + len(value)
    headers = list(headers)
    size += varint_bytes(len(headers))
    for name, data in headers:
        raw = name.encode("utf-8", "surrogateescape")
        size += varint_bytes(len(raw)) + len(raw)
        size += 1 if data is None else varint_bytes(len(data)) + len(data)
    return size


def batch_bytes(key: bytes | None, value: bytes | None, headers: Iterable[Header] = ()) -> int:
    """Size of a batch holding only this record, as the broker compares it with max.message.bytes."""
    body = 3 + record_fields_bytes(key, value, headers)  # attributes, timestamp delta 0, offset delta 0
    return BATCH_HEADER_BYTES + varint_bytes(body) + body


def reason_headers(reason: str, detail: str, topic: str, partition: int, offset: int) -> list[tuple[str, bytes]]:
    """The headers the worker adds to a dead letter (after the original ones)."""
    return [
        ("error", reason.encode()),
        ("error_detail", detail.encode("utf-8", "replace")[:DETAIL_MAX_BYTES]),
        ("source_topic", topic.encode()),
        ("source_partition", str(partition).encode()),
        ("source_offset", str(offset).encode()),
    ]


@functools.cache
def widest_reason_headers(topic: str) -> tuple[tuple[str, bytes], ...]:
    """The largest reason headers a dead letter of an input from `topic` can get."""
    widest = max(REASONS, key=len)
    return tuple(reason_headers(widest, "x" * DETAIL_MAX_BYTES, topic, 2**31 - 1, 2**63 - 1))


def input_dead_letter_bytes(key: bytes | None, value: bytes | None, headers: Sequence[Header], topic: str) -> int:
    """The largest dead letter an input can become: its key, value and headers and the widest
    reason headers."""
    return batch_bytes(key, value, [*headers, *widest_reason_headers(topic)])


def largest_value(limit: int, topic: str) -> int:
    """The largest value (no key, no headers) whose dead letter, with the widest reason headers,
    fits `limit` (0 if none does)."""
    rest = record_fields_bytes(None, b"", widest_reason_headers(topic)) - 1  # all but the value field
    size = max(limit - BATCH_HEADER_BYTES - 3 - rest, 0)  # an upper bound; varints take a few bytes more

    def dead_letter(n: int) -> int:
        body = 3 + rest + varint_bytes(n) + n
        return BATCH_HEADER_BYTES + varint_bytes(body) + body

    while size > 0 and dead_letter(size) > limit:
        size -= 1
    return size


@dataclass(frozen=True)
class ClusterLimits:
    """max.message.bytes of the topics the worker writes, as the cluster reports them (None: could
    not be read, e.g. no DescribeConfigs right)."""

    dead_letter_topic: int | None
    output_topics: int | None  # the smallest of the output topic and the existing label topics
    broker_default: int | None  # message.max.bytes: the limit of label topics created later
    unreadable: tuple[str, ...] = ()  # what could not be read, and why

    @property
    def dead_letter(self) -> int:
        return self.dead_letter_topic or KAFKA_DEFAULT_MAX_MESSAGE_BYTES

    @property
    def output(self) -> int:
        known = [x for x in (self.output_topics, self.broker_default) if x is not None]
        return min(known) if known else KAFKA_DEFAULT_MAX_MESSAGE_BYTES


@dataclass(frozen=True)
class Limits:
    """The limits in force: each in batch bytes except `text_bytes` (value bytes)."""

    dead_letter_bytes: int
    output_bytes: int
    text_bytes: int
    input_topic: str

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        """The limits of these settings; a limit left unset is Kafka's default (the worker sets
        them all from the cluster at start: `derive`)."""
        return _limits(settings.max_dead_letter_bytes, settings.max_output_bytes, settings.max_text_bytes,
                       settings.input_topic)

    def too_large(self, key: bytes | None, value: bytes, headers: Sequence[Header]) -> str | None:
        """Why this input is too large to be labelled, or None."""
        if len(value) > self.text_bytes:
            return f"{len(value)} bytes > limit {self.text_bytes}"
        worst = input_dead_letter_bytes(key, value, headers, self.input_topic)
        if worst > self.dead_letter_bytes:
            keyed = 0 if key is None else len(key)
            return (f"value {len(value)} + key {keyed} + {len(headers)} headers: its dead letter could take "
                    f"{worst} bytes > limit {self.dead_letter_bytes} of the dead-letter topic")
        return None

    def output_fits(self, key: bytes | None, value: bytes, headers: Sequence[Header] = ()) -> int | None:
        """None when the output record fits every output topic, else its size."""
        size = batch_bytes(key, value, headers)
        return None if size <= self.output_bytes else size

    def dead_letter_fits(self, key: bytes | None, value: bytes | None, headers: Sequence[Header]) -> bool:
        return batch_bytes(key, value, headers) <= self.dead_letter_bytes

    @property
    def producer_max_request_size(self) -> int:
        """aiokafka refuses a record whose upper-bound size is over this: room for the largest one
        we write, counted the way aiokafka counts."""
        return max(self.dead_letter_bytes, self.output_bytes) + AIOKAFKA_RECORD_OVERHEAD

    @property
    def producer_batch_bytes(self) -> int:
        """A batch of several records must fit every topic too."""
        return min(PRODUCER_BATCH_BYTES, self.dead_letter_bytes, self.output_bytes)

    def describe(self) -> str:
        return (f"input values up to {self.text_bytes} bytes (TEXTSTREAM_MAX_TEXT_BYTES), output records up to "
                f"{self.output_bytes} bytes (TEXTSTREAM_MAX_OUTPUT_BYTES), dead letters up to "
                f"{self.dead_letter_bytes} bytes (TEXTSTREAM_MAX_DEAD_LETTER_BYTES), producer max_request_size "
                f"{self.producer_max_request_size}, batches up to {self.producer_batch_bytes} bytes")


@functools.cache
def _limits(dead_letter: int | None, output: int | None, text: int | None, topic: str) -> Limits:
    dead = dead_letter or KAFKA_DEFAULT_MAX_MESSAGE_BYTES
    return Limits(dead, output or KAFKA_DEFAULT_MAX_MESSAGE_BYTES,
                  text or largest_value(dead, topic), topic)


def derive(settings: Settings, cluster: ClusterLimits) -> Settings:
    """The settings with every size limit set from the cluster. A limit the user set above what the
    cluster allows is refused (ConfigError naming the variable and the cluster's limit): lowering it
    silently would dead-letter records the operator expects labelled."""
    problems: list[str] = []
    dead = cluster.dead_letter
    if dead < MIN_DEAD_LETTER_BYTES:
        problems.append(f"the dead-letter topic {settings.dlq_topic} has max.message.bytes={dead}; the worker needs "
                        f"at least {MIN_DEAD_LETTER_BYTES} to write a dead letter's reason headers")
    if settings.max_dead_letter_bytes is not None:
        if settings.max_dead_letter_bytes > dead:
            problems.append(f"{ENV_PREFIX}MAX_DEAD_LETTER_BYTES={settings.max_dead_letter_bytes} is above "
                            f"max.message.bytes={dead} of the dead-letter topic {settings.dlq_topic}")
        dead = min(dead, settings.max_dead_letter_bytes)
    output = cluster.output
    if settings.max_output_bytes is not None:
        if settings.max_output_bytes > output:
            problems.append(f"{ENV_PREFIX}MAX_OUTPUT_BYTES={settings.max_output_bytes} is above max.message.bytes="
                            f"{output}, the smallest of the output and label topics (and the broker's "
                            "message.max.bytes for label topics created later)")
        output = min(output, settings.max_output_bytes)
    fits = largest_value(dead, settings.input_topic)
    text = fits
    if settings.max_text_bytes is not None:
        if settings.max_text_bytes > fits:
            problems.append(f"{ENV_PREFIX}MAX_TEXT_BYTES={settings.max_text_bytes} is above {fits}, the largest value "
                            f"whose dead letter (with its reason headers) fits max.message.bytes={dead} of the "
                            f"dead-letter topic {settings.dlq_topic}")
        text = min(fits, settings.max_text_bytes)
    if problems:
        raise ConfigError("size limits do not fit the cluster:\n  " + "\n  ".join(problems))
    return settings.model_copy(update={"max_dead_letter_bytes": dead, "max_output_bytes": output,
                                       "max_text_bytes": text})

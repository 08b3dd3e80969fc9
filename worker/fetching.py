"""Records aiokafka cannot decode reach the worker instead of stopping their partition.

aiokafka 0.14.0 decodes every header key as UTF-8 while it parses a fetched record batch
(`record/default_records.py`, `_read_msg`: `h_key = ....decode("utf-8")`, the same in its C
extension). Kafka's protocol does not enforce that (the key is length + bytes), so a producer can
write a key that is not UTF-8. The UnicodeDecodeError then escapes `PartitionRecords._unpack_records`
inside `getmany`: the records of that fetch before the bad one are dropped with it, the partition's
position is left at the bad record, and every later fetch raises again, so the partition stops.

`install()` replaces the MemoryRecords class aiokafka's fetcher uses with one that keeps each
batch's bytes. A batch whose iteration raises UnicodeDecodeError is parsed again here, from the
record after the last one aiokafka returned, with header keys decoded with `surrogateescape`: the
invalid bytes survive as lone surrogates, and `worker/decode.py` dead-letters the record as
`undecodable_record` with its value and key. Batches aiokafka reads are passed through untouched.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from aiokafka import codec
from aiokafka.consumer import fetcher
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.record.util import decode_varint

logger = logging.getLogger(__name__)

# Record batch v2 header: base offset, length, leader epoch, magic, crc, attributes, last offset
# delta, first timestamp, max timestamp, producer id, producer epoch, base sequence, record count.
_HEADER = struct.Struct(">qiibIhiqqqhii")
_DECOMPRESS = {1: codec.gzip_decode, 2: codec.snappy_decode, 3: codec.lz4_decode, 4: codec.zstd_decode}


@dataclass(frozen=True, slots=True)
class ParsedRecord:
    """A record as aiokafka's fetcher reads it (the attributes `_consumer_record` uses)."""

    offset: int
    timestamp: int
    timestamp_type: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    checksum: None = None


def parse_batch(raw: bytes) -> Iterator[ParsedRecord]:
    """The records of one v2 record batch, header keys decoded with `surrogateescape`."""
    (base_offset, _, _, magic, _, attributes, _, first_ts, max_ts, _, _, _, count) = _HEADER.unpack_from(raw)
    if magic != 2:
        raise ValueError(f"record batch magic {magic}: only v2 batches have headers")
    data = bytes(raw[_HEADER.size:])
    if attributes & 0x07:
        data = _DECOMPRESS[attributes & 0x07](data)
    log_append_time = bool(attributes & 0x08)
    buf = bytearray(data)
    pos = 0
    for _ in range(count):
        _, pos = decode_varint(buf, pos)  # length
        pos += 1  # attributes
        ts_delta, pos = decode_varint(buf, pos)
        offset_delta, pos = decode_varint(buf, pos)
        key, pos = _nullable(buf, pos)
        value, pos = _nullable(buf, pos)
        n_headers, pos = decode_varint(buf, pos)
        headers: list[tuple[str, bytes | None]] = []
        for _ in range(n_headers):
            name, pos = _nullable(buf, pos)
            data_, pos = _nullable(buf, pos)
            headers.append(((name or b"").decode("utf-8", "surrogateescape"), data_))
        yield ParsedRecord(base_offset + offset_delta, max_ts if log_append_time else first_ts + ts_delta,
                           int(log_append_time), key, value, headers)


def _nullable(buf: bytearray, pos: int) -> tuple[bytes | None, int]:
    size, pos = decode_varint(buf, pos)
    if size < 0:
        return None, pos
    return bytes(buf[pos:pos + size]), pos + size


class _TolerantBatch:
    """aiokafka's batch, except that iterating it survives a record it cannot decode."""

    def __init__(self, batch: Any, raw: bytes) -> None:
        self._batch, self._raw = batch, raw

    def __getattr__(self, name: str) -> Any:
        return getattr(self._batch, name)

    def __iter__(self) -> Iterator[Any]:
        last: int | None = None
        try:
            for record in self._batch:
                last = record.offset
                yield record
        except UnicodeDecodeError as exc:
            logger.warning("aiokafka cannot decode a record after offset %s of a batch at offset %d (%s); "
                           "reading the batch with its header keys escaped", last, self._batch.base_offset, exc)
            for parsed in parse_batch(self._raw):
                if last is None or parsed.offset > last:
                    yield parsed


class TolerantMemoryRecords:
    """MemoryRecords that keeps the bytes of each batch it hands out."""

    def __init__(self, data: bytes) -> None:
        self._records = MemoryRecords(data)
        self._data = data
        self._pos = 0

    def size_in_bytes(self) -> int:
        return int(self._records.size_in_bytes())

    def has_next(self) -> bool:
        return bool(self._records.has_next())

    def next_batch(self) -> Any:
        batch = self._records.next_batch()
        if batch is None:
            return None
        start = self._pos
        (length,) = struct.unpack_from(">i", self._data, start + 8)
        self._pos = start + 12 + length
        if getattr(batch, "magic", 2) != 2:
            return batch
        return _TolerantBatch(batch, self._data[start:self._pos])


def install() -> None:
    """Make every aiokafka consumer of this process use TolerantMemoryRecords (idempotent)."""
    fetcher.MemoryRecords = TolerantMemoryRecords

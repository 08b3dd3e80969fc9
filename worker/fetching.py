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

A batch that is corrupt in another way (its CRC does not match: a bit flipped on a broker's disk;
records that cannot be parsed) made aiokafka raise CorruptRecordException (or its parser's error)
the same way, stopping the partition. Such a batch is handed over as one record instead: at the
batch's last offset, its value the batch's bytes, its header `CORRUPT_BATCH_HEADER` saying which
offsets it covers and why (`worker/decode.py` dead-letters it as `corrupt_batch`). aiokafka then
moves the position past the batch, and the worker commits past it only once that dead letter is
acknowledged, like any input. The offsets a batch covers come from its header, which the CRC no
longer vouches for: when the fetch holds the next batch, its base offset is the end (Kafka's offsets
only grow); otherwise the header's last offset delta is used if it agrees with the record count
(count = delta + 1, as in every batch of a topic that is not compacted). A v2 batch whose magic
byte (not covered by the CRC) reads 0 or 1 is recognised by its v2 CRC and skipped the same way. A batch whose bounds cannot be read at all (a length field that frames nothing, a header
that is not consistent) still raises: skipping an unknown range could skip records without a trace.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import codec
from aiokafka.consumer import fetcher
from aiokafka.errors import CorruptRecordException
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.record.util import calc_crc32c, decode_varint

from worker.records import CORRUPT_BATCH_HEADER

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


def corrupt_record(first: int, last: int, raw: bytes, why: str) -> ParsedRecord:
    """The record that stands for offsets `first`..`last` of a batch no client can read."""
    about = orjson.dumps({"first_offset": first, "last_offset": last, "why": why})
    return ParsedRecord(last, 0, 0, None, raw, [(CORRUPT_BATCH_HEADER, about)])


def batch_bounds(raw: bytes, next_base: int | None) -> tuple[int, int] | None:
    """(first, last) offset of a v2 batch whose CRC does not match, or None when they cannot be
    trusted. `next_base`: the base offset of the batch after it in the same fetch, if any."""
    if len(raw) < _HEADER.size:
        return None
    (base, _, _, _, _, _, delta, _, _, _, _, _, count) = _HEADER.unpack_from(raw)
    if next_base is not None:
        if next_base <= base:
            return None
        if next_base != base + delta + 1:
            logger.warning("a corrupt batch at offset %d says its last offset is %d; the next batch starts at %d: "
                           "using %d", base, base + delta, next_base, next_base - 1)
        return base, next_base - 1
    if count != delta + 1:
        # The header alone is believed only as a batch of an uncompacted topic has it (one record per
        # offset): one flipped bit in the count or the delta breaks that. Otherwise (damaged, or a
        # compacted batch) where the batch ends is unknown until the fetch holds the next batch.
        return None
    return base, base + delta


def _v2_crc_matches(raw: bytes) -> bool:
    return len(raw) >= _HEADER.size and calc_crc32c(raw[21:]) == int.from_bytes(raw[17:21], "big")


class _TolerantBatch:
    """aiokafka's batch, except that iterating it survives a record it cannot decode, and a batch
    whose records cannot be parsed yields one corrupt-batch record for the offsets not yet read."""

    def __init__(self, batch: Any, raw: bytes) -> None:
        self._batch, self._raw = batch, raw

    def __getattr__(self, name: str) -> Any:
        return getattr(self._batch, name)

    def validate_crc(self) -> bool:
        return True  # TolerantMemoryRecords checked it before wrapping the batch

    def __next__(self) -> Any:
        # A read_committed consumer reads a control batch's one record with next() (aiokafka's
        # `_contains_abort_marker`): without this, the first transaction marker stopped the fetch.
        return next(self._batch)

    def __iter__(self) -> Iterator[Any]:
        last: int | None = None
        try:
            for record in self._batch:
                last = record.offset
                yield record
            return
        except UnicodeDecodeError as exc:
            logger.warning("aiokafka cannot decode a record after offset %s of a batch at offset %d (%s); "
                           "reading the batch with its header keys escaped", last, self._batch.base_offset, exc)
            try:
                for parsed in parse_batch(self._raw):
                    if last is None or parsed.offset > last:
                        last = parsed.offset
                        yield parsed
                return
            except Exception as again:  # any parse error: the rest is corrupt
                error: Exception = again
        except Exception as exc:  # aiokafka's parser: CorruptRecordException, struct/codec errors
            error = exc
        first = self._batch.base_offset if last is None else last + 1
        end = self._batch.next_offset - 1  # the CRC matched: the header can be trusted
        why = f"records from offset {first} cannot be parsed: {type(error).__name__}: {error}"
        if first > end:
            logger.warning("a batch at offset %d: every record was read, then %s", self._batch.base_offset, why)
            return
        logger.warning("corrupt record batch: offsets %d..%d skipped with a dead letter (%s)", first, end, why)
        yield corrupt_record(first, end, self._raw, why)


class _CorruptBatch:
    """A v2 batch whose CRC does not match, as aiokafka's fetcher reads batches: one corrupt-batch
    record at its last offset; no flag of its (damaged) attributes is believed."""

    magic = 2
    is_control_batch = False
    is_transactional = False
    producer_id = None

    def __init__(self, first: int, last: int, raw: bytes, why: str) -> None:
        self.base_offset, self.next_offset = first, last + 1
        self._record = corrupt_record(first, last, raw, why)
        logger.warning("corrupt record batch: offsets %d..%d skipped with a dead letter (%s)", first, last, why)

    def validate_crc(self) -> bool:
        return True  # checked already: this batch stands for what could not be read

    def __iter__(self) -> Iterator[Any]:
        yield self._record


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
        start = self._pos
        batch = self._records.next_batch()  # raises for a slice too short to be a batch: no bounds to skip
        if batch is None:
            return None
        (length,) = struct.unpack_from(">i", self._data, start + 8)
        self._pos = start + 12 + length
        raw = self._data[start:self._pos]
        if getattr(batch, "magic", 2) != 2:
            if batch.magic in (0, 1) and _v2_crc_matches(raw):
                # A v2 batch whose magic byte (outside the CRC) was damaged: aiokafka would parse it as
                # a legacy message and fail. Its header is good (the CRC says so): skip it whole.
                (base, _, _, _, _, _, delta, *_) = _HEADER.unpack_from(raw)
                return _CorruptBatch(base, base + delta, raw, f"magic byte {batch.magic} in a batch whose v2 CRC matches")
            return batch
        if not batch.validate_crc():
            stored = batch.crc
            why = f"CRC mismatch: stored {stored:#010x}, computed {calc_crc32c(raw[21:]):#010x}"
            next_base = None
            if len(self._data) - self._pos >= 8:
                (next_base,) = struct.unpack_from(">q", self._data, self._pos)
            bounds = batch_bounds(raw, next_base)
            if bounds is None:
                raise CorruptRecordException(f"a record batch at offset {batch.base_offset} is corrupt ({why}) and its "
                                             "offset range cannot be trusted: not skipped")
            return _CorruptBatch(*bounds, raw, why)
        return _TolerantBatch(batch, raw)


def install() -> None:
    """Make every aiokafka consumer of this process use TolerantMemoryRecords (idempotent)."""
    fetcher.MemoryRecords = TolerantMemoryRecords

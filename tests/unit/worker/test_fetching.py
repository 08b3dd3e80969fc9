"""worker/fetching.py: a record batch aiokafka cannot decode (a header key that is not UTF-8) is
read anyway, and the records before it are not lost; a corrupt batch (bad CRC, records that cannot
be parsed) becomes one dead letter for its offsets, and the partition moves on."""

from __future__ import annotations

from dataclasses import replace

import pytest
from aiokafka.consumer.fetcher import PartitionRecords
from aiokafka.errors import CorruptRecordException
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.record.util import calc_crc32c
from aiokafka.structs import ConsumerRecord, TopicPartition
from prometheus_client import REGISTRY

from worker import fetching, metrics
from worker.config import Settings
from worker.decode import decode_records
from worker.limits import Limits
from worker.records import CORRUPT_BATCH_HEADER, RawRecord
from worker.route import dead_letter

TP = TopicPartition("t", 0)
BAD_KEY = b"\xff\xfeh"  # not UTF-8


def batch_bytes(records: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]], base_offset: int = 0,
                compression: int = 0) -> bytes:
    """A v2 batch; every header key "\\x01\\x02h" is then replaced by BAD_KEY (same length) and the CRC fixed."""
    builder = DefaultRecordBatchBuilder(2, compression, 0, -1, -1, -1, 1 << 20)
    for i, (key, value, headers) in enumerate(records):
        builder.append(i, timestamp=1_700_000_000_000 + i, key=key, value=value, headers=headers)
    raw = bytearray(builder.build())
    raw[0:8] = base_offset.to_bytes(8, "big", signed=True)
    if compression == 0:
        raw = bytearray(bytes(raw).replace(b"\x01\x02h", BAD_KEY))
    raw[17:21] = calc_crc32c(bytes(raw[21:])).to_bytes(4, "big")
    return bytes(raw)


def consumer_records(data: bytes) -> list:  # type: ignore[type-arg]
    return list(PartitionRecords(TP, fetching.TolerantMemoryRecords(data), [], 0, None, None, True, 0))


def test_aiokafka_alone_stops_at_a_non_utf8_header_key() -> None:
    """The failure this module exists for (if aiokafka fixes it, this test says so)."""
    data = batch_bytes([(None, b"one", []), (None, b"two", [("\x01\x02h", b"v")])])
    records = PartitionRecords(TP, MemoryRecords(data), [], 0, None, None, True, 0)
    with pytest.raises(UnicodeDecodeError):
        list(records)


def test_the_bad_record_comes_through_escaped_and_none_is_lost_or_repeated() -> None:
    good = batch_bytes([(None, b"a", [])], base_offset=0)
    mixed = batch_bytes([(b"k1", b"b", [("ok", b"1")]), (b"k2", b"c", [("\x01\x02h", b"2"), ("x", None)]),
                         (None, b"d", [])], base_offset=1)
    out = consumer_records(good + mixed)
    assert [(r.offset, r.key, r.value) for r in out] == [(0, None, b"a"), (1, b"k1", b"b"), (2, b"k2", b"c"),
                                                         (3, None, b"d")]
    assert out[1].headers == (("ok", b"1"),)
    name, data = out[2].headers[0]
    assert name.encode("utf-8", "surrogateescape") == BAD_KEY and data == b"2"
    assert out[2].headers[1] == ("x", None)
    assert out[2].timestamp == 1_700_000_000_001


def test_parse_batch_reads_what_aiokafka_reads() -> None:
    """The fallback parser agrees with aiokafka on a batch both can read, compressed or not."""
    recs = [(b"k", b"v" * 300, [("h", b"1")]), (None, None, []), (b"", b"x", [("a", b""), ("b", b"2")])]
    for compression in (0, 1):  # none, gzip
        data = batch_bytes(recs, base_offset=7, compression=compression)
        theirs = [(r.offset, r.timestamp, r.key, r.value, list(r.headers))
                  for r in MemoryRecords(data).next_batch()]  # type: ignore[union-attr]
        ours = [(r.offset, r.timestamp, r.key, r.value, r.headers) for r in fetching.parse_batch(data)]
        assert ours == theirs


def test_install_is_what_the_fetcher_uses() -> None:
    from aiokafka.consumer import fetcher

    before = fetcher.MemoryRecords
    try:
        fetching.install()
        fetching.install()
        assert fetcher.MemoryRecords is fetching.TolerantMemoryRecords
    finally:
        fetcher.MemoryRecords = before  # type: ignore[misc]


# A record batch that is corrupt in another way: a bad CRC (a bit flipped on disk), or records that cannot be parsed.

def plain_batch(values: list[bytes], base_offset: int) -> bytes:
    return batch_bytes([(None, v, []) for v in values], base_offset=base_offset)


def flip(raw: bytes, at: int) -> bytes:
    """`raw` with one bit flipped at byte `at` (from the end when negative), CRC left as it was."""
    out = bytearray(raw)
    out[at] ^= 0x10
    return bytes(out)


def with_crc(raw: bytes) -> bytes:
    """`raw` with its CRC made to match again (a batch a producer could have written)."""
    out = bytearray(raw)
    out[17:21] = calc_crc32c(bytes(out[21:])).to_bytes(4, "big")
    return bytes(out)


def corrupt_range(record) -> tuple[int, int, str]:  # type: ignore[no-untyped-def]
    import orjson

    (name, about), = record.headers
    assert name == CORRUPT_BATCH_HEADER
    info = orjson.loads(about)
    return info["first_offset"], info["last_offset"], info["why"]


def test_aiokafka_alone_stops_at_a_bad_crc() -> None:
    data = plain_batch([b"a"], 0) + flip(plain_batch([b"b", b"c"], 1), -2)
    records = PartitionRecords(TP, MemoryRecords(data), [], 0, None, None, True, 0)
    with pytest.raises(CorruptRecordException):
        list(records)


def test_a_batch_with_a_bad_crc_becomes_one_record_at_its_last_offset_and_the_partition_moves_on() -> None:
    bad = flip(plain_batch([b"b", b"c", b"d"], 1), -2)  # a bit of the last record's value
    data = plain_batch([b"a"], 0) + bad + plain_batch([b"e"], 4)
    records = PartitionRecords(TP, fetching.TolerantMemoryRecords(data), [], 0, None, None, True, 0)
    out = list(records)
    assert [(r.offset, r.value) for r in out] == [(0, b"a"), (3, bad), (4, b"e")]
    first, last, why = corrupt_range(out[1])
    assert (first, last) == (1, 3) and "CRC mismatch" in why
    assert (out[1].key, out[1].timestamp) == (None, 0)
    assert records.next_fetch_offset == 5


def test_a_bad_crc_in_the_last_batch_of_a_fetch_uses_its_header() -> None:
    bad = flip(plain_batch([b"b", b"c"], 7), -1)
    records = PartitionRecords(TP, fetching.TolerantMemoryRecords(bad), [], 7, None, None, True, 0)
    (out,) = list(records)
    assert out.offset == 8 and corrupt_range(out)[:2] == (7, 8)
    assert records.next_fetch_offset == 9


def test_a_damaged_header_is_bounded_by_the_next_batch_or_not_skipped() -> None:
    # Last offset delta (bytes 23..26) damaged: 2 records, delta 0x10000001 (a skip of 268 million offsets).
    bad = flip(plain_batch([b"b", b"c"], 1), 23)
    assert fetching.batch_bounds(bad, None) is None
    with pytest.raises(CorruptRecordException, match="offset range cannot be trusted"):
        list(PartitionRecords(TP, fetching.TolerantMemoryRecords(bad), [], 1, None, None, True, 0))
    out = list(PartitionRecords(TP, fetching.TolerantMemoryRecords(bad + plain_batch([b"d"], 3)), [], 1, None, None,
                                True, 0))
    assert [r.offset for r in out] == [2, 3] and corrupt_range(out[0])[:2] == (1, 2)
    assert fetching.batch_bounds(bad, 1) is None  # a next batch that does not come after it: framing is lost


def test_a_damaged_control_flag_does_not_hide_the_batch() -> None:
    """aiokafka skips control batches without a word: a flipped attribute bit must not make a corrupt
    batch one."""
    bad = bytearray(plain_batch([b"b"], 0))
    bad[22] |= 0x20  # attributes (bytes 21..22): the control bit; the CRC now mismatches
    out = list(PartitionRecords(TP, fetching.TolerantMemoryRecords(bytes(bad)), [], 0, None, None, True, 0))
    assert [r.offset for r in out] == [0] and corrupt_range(out[0])[:2] == (0, 0)


def test_records_that_cannot_be_parsed_under_a_good_crc_are_dead_lettered_after_the_ones_that_can() -> None:
    raw = bytearray(plain_batch([b"first", b"second", b"third"], 5))
    second = bytes(raw).index(b"second")
    raw[second - 1] = 0x7E  # the second record's value length (zigzag varint) becomes 63: past the batch's end
    bad = with_crc(bytes(raw))
    records = PartitionRecords(TP, fetching.TolerantMemoryRecords(bad + plain_batch([b"x"], 8)), [], 5, None, None,
                               True, 0)
    out = list(records)
    assert (out[0].offset, out[0].value) == (5, b"first")
    assert [r.offset for r in out[1:]] == [7, 8] and out[1].value == bad
    first, last, why = corrupt_range(out[1])
    assert (first, last) == (6, 7) and "cannot be parsed" in why
    assert records.next_fetch_offset == 9


def test_a_corrupt_batch_is_dead_lettered_with_its_bytes_its_range_and_counted() -> None:
    bad = flip(plain_batch([b"b", b"c", b"d"], 1), -2)
    (rec,) = list(PartitionRecords(TP, fetching.TolerantMemoryRecords(bad), [], 1, None, None, True, 0))
    raw = RawRecord.of(ConsumerRecord("texts.raw", 0, rec.offset, rec.timestamp, 0, rec.key, rec.value, None, 0,
                                      len(bad), tuple(rec.headers)))
    valid, (rej,) = decode_records([raw], Limits.of(Settings()), received_at=0.0)
    assert not valid
    assert (rej.reason, rej.value, rej.key, rej.source.offset) == ("corrupt_batch", bad, None, 3)
    assert rej.headers == (("source_first_offset", b"1"),) and "offsets 1..3" in rej.detail
    letter = dead_letter("texts.dlq", Limits.of(Settings()), rej)
    assert letter.value == bad and dict(letter.headers or [])["error"] == b"corrupt_batch"
    small = dead_letter("texts.dlq", Limits(4096, 4096, 100, "texts.raw"), replace(rej, value=b"x" * 5000))
    assert small.value == b"" and dict(small.headers or [])["original_dropped"] == b"true"
    assert "offsets 1..3" in dict(small.headers or [])["error_detail"].decode()
    before = REGISTRY.get_sample_value("textstream_skipped_offsets_total") or 0.0
    metrics.observe_batch([], [rej], 0.5)
    assert REGISTRY.get_sample_value("textstream_skipped_offsets_total") == before + 3


def test_a_damaged_magic_byte_is_not_read_as_a_legacy_message() -> None:
    """The magic byte is outside the CRC: 2 -> 0 or 1 made aiokafka parse a v2 batch as a legacy
    message and fail (SystemError, CorruptRecordException)."""
    for magic in (0, 1):
        bad = bytearray(plain_batch([b"b", b"c"], 1))
        bad[16] = magic
        data = plain_batch([b"a"], 0) + bytes(bad) + plain_batch([b"d"], 3)
        out = list(PartitionRecords(TP, fetching.TolerantMemoryRecords(data), [], 0, None, None, True, 0))
        assert [(r.offset, r.value) for r in out] == [(0, b"a"), (2, bytes(bad)), (3, b"d")], magic
        assert corrupt_range(out[1])[:2] == (1, 2) and f"magic byte {magic}" in corrupt_range(out[1])[2]


def test_legacy_batches_are_passed_through() -> None:
    from aiokafka.record.legacy_records import LegacyRecordBatchBuilder

    builder = LegacyRecordBatchBuilder(1, 0, 1 << 20)
    builder.append(0, timestamp=1_700_000_000_000, key=None, value=b"old")
    out = list(PartitionRecords(TP, fetching.TolerantMemoryRecords(bytes(builder.build())), [], 0, None, None, True, 0))
    assert [(r.offset, r.value) for r in out] == [(0, b"old")]

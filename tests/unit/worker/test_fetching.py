"""worker/fetching.py: a record batch aiokafka cannot decode (a header key that is not UTF-8) is
read anyway, and the records before it are not lost."""

from __future__ import annotations

import pytest
from aiokafka.consumer.fetcher import PartitionRecords
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.record.util import calc_crc32c
from aiokafka.structs import TopicPartition

from worker import fetching

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

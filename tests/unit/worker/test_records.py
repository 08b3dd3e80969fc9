"""The contracts between the stages: a consumed message as a RawRecord, a rejection of one."""

from __future__ import annotations

from types import SimpleNamespace

from worker.records import RawRecord, Rejected, Source


def test_a_consumed_message_becomes_a_raw_record_with_its_headers_as_bytes() -> None:
    message = SimpleNamespace(value=b"v", key=b"k", topic="texts.raw", partition=2, offset=7, timestamp=1.5,
                              headers=[("a", b"1"), ("empty", None)])
    assert RawRecord.of(message) == RawRecord(b"v", b"k", Source("texts.raw", 2, 7), 1.5, (("a", b"1"), ("empty", b"")))
    bare = SimpleNamespace(value=None, key=None, topic="t", partition=0, offset=0, timestamp=None, headers=None)
    assert RawRecord.of(bare).headers == ()


def test_a_rejection_keeps_the_original_bytes_key_and_headers() -> None:
    rec = RawRecord(b"\xff", b"k", Source("texts.raw", 1, 3), 2.0, (("h", b"v"),))
    assert Rejected.of(rec, "invalid_utf8", "bad byte") == Rejected("invalid_utf8", "bad byte", b"\xff", rec.source, b"k",
                                                                  (("h", b"v"),))
    assert Source("texts.raw", 1, 3).default_id() == "texts.raw-1-3"

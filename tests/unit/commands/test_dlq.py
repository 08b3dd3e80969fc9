"""`textstream dlq replay` without a broker: what a dead letter's original is, which ones a replay
selects and skips, the time arguments (the replay itself: tests/integration/test_replay.py)."""

from __future__ import annotations

import argparse

import pytest

from commands.dlq import selection, statuses, when
from commands.main import build_parser
from worker.limits import Limits
from worker.records import RawRecord, Rejected, Source
from worker.replay import MARKER, DeadLetter, Plan, Selection
from worker.route import dead_letter


def as_dead_letter(rej: Rejected, offset: int, partition: int = 0, timestamp: float = 1000.0,
                   limits: Limits | None = None) -> DeadLetter:
    """The dead letter the worker writes for `rej` (worker/route.py), as read back at `offset`."""
    out = dead_letter("texts.dlq", limits or Limits(10_000, 10_000, 5_000, "texts.raw"), rej)
    return DeadLetter("texts.dlq", partition, offset, timestamp, out.key, out.value, tuple(out.headers or ()))


def rejected(value: bytes, reason: str = "model_error", headers: tuple[tuple[str, bytes], ...] = (),
             key: bytes | None = b"k1") -> Rejected:
    raw = RawRecord(value, key, Source("texts.raw", 2, 41), headers=headers)
    return Rejected.of(raw, reason, "the model failed")  # type: ignore[arg-type]


def test_a_dead_letter_gives_back_the_original_value_key_and_headers() -> None:
    original = (("trace", b"abc"), ("error", b"a header of the producer's own"))
    d = as_dead_letter(rejected(b'{"text": "hi"}', headers=original), offset=7)
    assert d.reason == "model_error" and d.replayable
    assert d.value == b'{"text": "hi"}' and d.key == b"k1"
    assert d.original_headers() == list(original)  # the reason headers at the end only are removed
    assert d.replay_headers() == [*original, (MARKER, b"texts.dlq:0:7")]


def test_a_dead_letter_of_a_replayed_record_carries_only_the_new_marker() -> None:
    d = as_dead_letter(rejected(b"x", headers=((MARKER, b"texts.dlq:0:7"), ("a", b"1"))), offset=9)
    assert d.replay_headers() == [("a", b"1"), (MARKER, b"texts.dlq:0:9")]


def test_a_dead_letter_without_its_original_is_not_replayable() -> None:
    tight = Limits(dead_letter_bytes=400, output_bytes=10_000, text_bytes=10_000, input_topic="texts.raw")
    d = as_dead_letter(rejected(b"x" * 1000, "too_large"), offset=1, limits=tight)
    assert d.value == b"" and d.header("original_dropped") == "true"
    assert not d.replayable
    plan = Plan.of([d], Selection(), set())
    assert plan.unreplayable == [d] and plan.send == []


def test_a_corrupt_batch_is_not_replayable() -> None:
    # Its value is a whole stored batch: sent back as one record it would be garbage on the input.
    d = as_dead_letter(rejected(b"\x00" * 80, "corrupt_batch"), offset=3)
    assert d.value and d.reason == "corrupt_batch" and not d.replayable


def test_selection_by_reason_time_partition_and_offsets() -> None:
    letters = [as_dead_letter(rejected(b"a", "model_error"), 0, 0, 100.0),
               as_dead_letter(rejected(b"b", "invalid_json"), 1, 0, 200.0),
               as_dead_letter(rejected(b"c", "model_error"), 2, 0, 300.0),
               as_dead_letter(rejected(b"d", "model_error"), 0, 1, 300.0)]

    def sent(sel: Selection, done: frozenset[bytes] = frozenset()) -> list[bytes | None]:
        return [d.value for d in Plan.of(letters, sel, set(done)).send]

    assert sent(Selection()) == [b"a", b"b", b"c", b"d"]
    assert sent(Selection(reasons=frozenset({"model_error"}))) == [b"a", b"c", b"d"]
    assert sent(Selection(since=200.0, until=300.0)) == [b"b"]  # since inclusive, until exclusive
    assert sent(Selection(partition=0, from_offset=1, to_offset=2)) == [b"b", b"c"]
    assert sent(Selection(to_offset=0)) == [b"a", b"d"]  # offsets apply in each partition
    # The ledger names topic:partition:offset:timestamp of what was replayed: skipped, and listed as such.
    done = {letters[i].ledger_key for i in (0, 1, 3)}
    assert letters[0].ledger_key == b"texts.dlq:0:0:100000"
    assert as_dead_letter(rejected(b"a", "model_error"), 0, 0, 500.0).ledger_key not in done  # a DLQ made anew
    plan = Plan.of(letters, Selection(reasons=frozenset({"model_error"})), done)
    assert [d.value for d in plan.send] == [b"c"] and [d.value for d in plan.already] == [b"a", b"d"]
    assert [s for _, s in statuses(plan, dry_run=True)] == ["already replayed", "would send", "already replayed"]


def test_time_arguments() -> None:
    assert when("1795757485.5") == 1795757485.5
    assert when("2026-11-30T12:00:00") == when("2026-11-30T12:00:00+00:00") == 1796040000.0  # UTC by default
    assert when("2026-11-30T13:00:00+01:00") == 1796040000.0
    with pytest.raises(argparse.ArgumentTypeError, match="neither Unix seconds nor an ISO 8601 time"):
        when("yesterday")


def test_replay_flags_build_the_selection() -> None:
    args = build_parser().parse_args(["dlq", "replay", "--reason", "model_error", "--reason", "too_large",
                                      "--since", "100", "--partition", "3", "--from-offset", "5", "--dry-run"])
    assert selection(args) == Selection(frozenset({"model_error", "too_large"}), 100.0, None, 3, 5, None)
    assert args.dry_run


def test_a_record_kafka_refuses_leaves_the_others_on_the_ledger(monkeypatch: pytest.MonkeyPatch) -> None:
    """One refused re-send (still too large for the input topic, say) must not stop the ledger from
    recording those Kafka acknowledged: a rerun would send them twice."""
    import asyncio

    from aiokafka.errors import MessageSizeTooLargeError
    from aiokafka.structs import RecordMetadata

    from worker import replay, topics

    ledger: list[bytes | None] = []

    class Producer:
        def __init__(self, **_: object) -> None:
            self.offset = 0

        async def start(self) -> None: ...
        async def stop(self) -> None: ...

        async def send(self, topic: str, value: bytes, key: bytes | None = None, headers: object = None) -> asyncio.Future[RecordMetadata]:
            if topic == "texts.dlq.replayed":
                ledger.append(key)
            elif value == b"refused at once":
                raise MessageSizeTooLargeError("larger than max_request_size")
            fut: asyncio.Future[RecordMetadata] = asyncio.get_running_loop().create_future()
            if value == b"refused by the broker":
                fut.set_exception(MessageSizeTooLargeError("the broker's max.message.bytes"))
            else:
                self.offset += 1
                fut.set_result(RecordMetadata(topic, 0, None, self.offset, -1, -1, -1))  # type: ignore[arg-type]
            return fut

    async def no_topics(*_: object, **__: object) -> None: ...

    monkeypatch.setattr(replay, "AIOKafkaProducer", Producer)
    monkeypatch.setattr(topics, "ensure_topics", no_topics)
    letters = [as_dead_letter(rejected(v), offset=i)
               for i, v in enumerate([b"ok 1", b"refused at once", b"refused by the broker", b"ok 2"])]
    outcome = asyncio.run(replay.send("b:9092", letters, to="texts.raw", ledger="texts.dlq.replayed"))
    assert [why is None for why in outcome] == [True, False, False, True]
    assert "MessageSizeTooLargeError" in (outcome[1] or "") and "max.message.bytes" in (outcome[2] or "")
    assert ledger == [letters[0].ledger_key, letters[3].ledger_key]

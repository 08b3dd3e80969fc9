"""Client helpers without a broker: record keys, input lines, rendering of tailed records, waiting for topics."""

from __future__ import annotations

import io
import itertools
import logging
import time
from collections.abc import Iterator
from typing import Any, cast

import orjson
import pytest

from worker.client import Record, key_of, partitions_of, read_lines, render, snippet
from worker.errors import TextstreamError
from worker.security import BrokerUnavailable

# --- key_of -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "field", "key"),
    [
        (b'{"id": "a1", "text": "x"}', "id", b"a1"),
        (b'  \t{"id": "a1"}', "id", b"a1"),  # leading blanks before the object
        ('{"id": "café-体育"}'.encode(), "id", "café-体育".encode()),
        (b'{"user": "bob", "id": "a1"}', "user", b"bob"),
        (b'{"id": 7}', "id", None),  # not a string
        (b'{"id": ""}', "id", None),  # empty
        (b'{"id": null}', "id", None),
        (b'{"text": "x"}', "id", None),  # absent
        (b'{"id": "a1"}', None, None),  # keys switched off
        (b'{"id": "a1"}', "", None),
        (b"plain text with id", "id", None),  # not JSON: no key
        (b'{"id": "a1", broken', "id", None),  # broken JSON: no key (the worker dead-letters it)
        (b'["id", "a1"]', "id", None),
    ],
)
def test_key_of(line: bytes, field: str | None, key: bytes | None) -> None:
    assert key_of(line, field) == key


# --- read_lines ---------------------------------------------------------------------------------


def test_read_lines_keeps_non_blank_lines_as_written() -> None:
    stream = io.BytesIO(b"first\r\n\n   \n\r\nsecond line \n\t{\"text\": \"third\"}\nlast without newline")
    assert list(read_lines(stream)) == [b"first", b"second line ", b'\t{"text": "third"}', b"last without newline"]


def test_read_lines_is_lazy() -> None:
    """A pipe that never ends (stdin) is sent as it comes, not read to the end first."""

    def endless() -> Iterator[bytes]:
        for i in itertools.count():
            yield f"line {i}\n".encode()

    assert list(itertools.islice(read_lines(cast(Any, endless())), 3)) == [b"line 0", b"line 1", b"line 2"]


# --- snippet ------------------------------------------------------------------------------------


def test_snippet_flattens_whitespace_and_cuts_to_width() -> None:
    assert snippet("a  b\n\tc ", 10) == "a b c"
    assert snippet("abcdefghij", 10) == "abcdefghij"  # exactly the width: unchanged
    cut = snippet("abcdefghijk", 10)
    assert cut == "abcdefghi…" and len(cut) == 10
    assert snippet("", 5) == ""


# --- render -------------------------------------------------------------------------------------


def record(value: bytes | None, *, topic: str = "texts.labeled", partition: int = 2, offset: int = 17,
           key: bytes | None = b"a1", headers: dict[str, str] | None = None) -> Record:
    return Record(topic, partition, offset, key, value, headers or {}, 1700000000.0)


PREDICTION = {"id": "a1", "label": "sport", "confidence": 0.91256, "scores": {"sport": 0.91256},
              "cluster_id": 4, "cluster_similarity": 0.5, "model_version": 3,
              "text": "Late  goal\n in the 90th minute", "source": {"topic": "texts.in"}}


def test_render_readable_prediction() -> None:
    line = render(record(orjson.dumps(PREDICTION)), as_json=False)
    assert line == ("texts.labeled[2]@17 sport          conf=0.913 cluster=4   v3 id=a1 "
                    "'Late goal in the 90th minute'")


def test_render_readable_cuts_a_long_text() -> None:
    line = render(record(orjson.dumps({**PREDICTION, "text": "word " * 40})), as_json=False)
    shown = line.split(" id=a1 ", 1)[1]
    assert shown == repr(("word " * 40)[:59] + "…")


def test_render_readable_dead_letter() -> None:
    headers = {"error": "invalid_json", "error_detail": "unexpected character: line 1 column 2",
               "source_topic": "texts.in"}
    line = render(record(b"{oops", topic="texts.dlq", partition=0, offset=5, headers=headers), as_json=False)
    assert line == ("texts.dlq[0]@5 DEAD-LETTER reason=invalid_json "
                    "detail='unexpected character: line 1 column 2' value='{oops'")


def test_render_readable_dead_letter_of_a_tombstone_and_a_long_detail() -> None:
    headers = {"error": "tombstone", "error_detail": "x" * 100}
    line = render(record(None, topic="texts.dlq", headers=headers), as_json=False)
    assert f"detail='{'x' * 59}…'" in line
    assert line.endswith(" value=''")


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (b'{"hello": "world"}', "'{\"hello\": \"world\"}'"),  # JSON, but not a prediction
        (b"plain  text\nhere", "'plain text here'"),
        (b"42", "'42'"),
        (b"\xff\xfeabc", "'\ufffd\ufffdabc'"),  # not UTF-8
        (None, "''"),
        (orjson.dumps({**PREDICTION, "confidence": None}), None),  # a prediction missing a figure
    ],
)
def test_render_readable_anything_else_shows_the_value(value: bytes | None, shown: str | None) -> None:
    line = render(record(value, topic="t", partition=0, offset=1), as_json=False)
    assert line.startswith("t[0]@1 ")
    assert "\n" not in line
    if shown is not None:
        assert line == f"t[0]@1 {shown}"
    else:
        assert "conf=" not in line and line.endswith("…'")  # the raw JSON, cut to 100 characters


def test_render_json_is_one_parseable_line_with_the_value_parsed() -> None:
    headers = {"trace": "abc"}
    line = render(record(orjson.dumps(PREDICTION), headers=headers), as_json=True)
    assert "\n" not in line
    assert orjson.loads(line) == {"topic": "texts.labeled", "partition": 2, "offset": 17, "key": "a1",
                                  "headers": {"trace": "abc"}, "value": PREDICTION}


@pytest.mark.parametrize(
    ("value", "key", "body", "shown_key"),
    [
        (b"plain text", None, "plain text", None),  # not JSON: the text itself
        (b"{oops", b"k", "{oops", "k"),
        (b"\xffbad", b"\xff", "\ufffdbad", "\ufffd"),  # bytes that are not UTF-8 are replaced
        (None, b"k", None, "k"),  # tombstone
    ],
)
def test_render_json_of_values_that_are_not_json(value: bytes | None, key: bytes | None, body: Any,
                                                 shown_key: str | None) -> None:
    headers = {"error": "invalid_json", "error_detail": "boom"}
    out = orjson.loads(render(record(value, topic="texts.dlq", key=key, headers=headers), as_json=True))
    assert out["value"] == body and out["key"] == shown_key and out["headers"] == headers


# --- partitions_of ------------------------------------------------------------------------------


class FakeClient:
    def __init__(self) -> None:
        self.refreshes = 0

    async def force_metadata_update(self) -> bool:
        self.refreshes += 1
        return True


class FakeConsumer:
    """Metadata where topic t exists (with its partitions) from refresh `appears[t]` on; never if absent."""

    def __init__(self, partitions: dict[str, set[int]], appears: dict[str, int]) -> None:
        self._client = FakeClient()
        self.partitions, self.appears = partitions, appears

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        if self._client.refreshes == 0:
            raise AssertionError("metadata read before it was refreshed")
        if topic in self.appears and self._client.refreshes >= self.appears[topic]:
            return set(self.partitions[topic])
        return None  # what aiokafka answers for a topic it does not know


def waiting_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == "worker.client"]


async def test_partitions_of_existing_topics_answers_at_once(caplog: pytest.LogCaptureFixture) -> None:
    consumer = FakeConsumer({"texts.labeled": {0, 1, 2}, "texts.dlq": {0}}, {"texts.labeled": 1, "texts.dlq": 1})
    started = time.monotonic()
    found = await partitions_of(cast(Any, consumer), ["texts.labeled", "texts.dlq"], wait=5)
    assert found == {"texts.labeled": {0, 1, 2}, "texts.dlq": {0}}
    assert consumer._client.refreshes == 1
    assert time.monotonic() - started < 0.4  # no sleep when nothing is missing
    assert waiting_warnings(caplog) == []


async def test_partitions_of_waits_for_a_missing_topic_and_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    consumer = FakeConsumer({"texts.labeled": {0, 1}, "texts.dlq": {0, 1}}, {"texts.labeled": 1, "texts.dlq": 3})
    with caplog.at_level(logging.WARNING, logger="worker.client"):
        found = await partitions_of(cast(Any, consumer), ["texts.labeled", "texts.dlq"])  # wait=None: for ever
    assert found == {"texts.labeled": {0, 1}, "texts.dlq": {0, 1}}
    assert consumer._client.refreshes == 3  # refreshed until the topic was there, not once more
    (warning,) = waiting_warnings(caplog)  # two rounds without the topic, one warning
    assert "texts.dlq" in warning and "texts.labeled" not in warning


async def test_partitions_of_gives_up_after_wait_naming_the_missing_topics(caplog: pytest.LogCaptureFixture) -> None:
    consumer = FakeConsumer({"texts.labeled": {0}}, {"texts.labeled": 1})
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="worker.client"), pytest.raises(BrokerUnavailable) as err:
        await partitions_of(cast(Any, consumer), ["texts.zeta", "texts.labeled", "texts.alpha"], wait=1.0)
    elapsed = time.monotonic() - started
    assert 1.0 <= elapsed < 2.5  # waited the whole second, then stopped
    message = str(err.value)
    assert "texts.alpha, texts.zeta" in message  # the missing ones, sorted
    assert "texts.labeled" not in message
    assert "within 1 s" in message
    assert isinstance(err.value, TextstreamError)
    assert len(waiting_warnings(caplog)) == 1
    assert consumer._client.refreshes >= 2  # it looked again before giving up


async def test_partitions_of_with_no_wait_checks_once() -> None:
    consumer = FakeConsumer({"texts.dlq": {0}}, {"texts.dlq": 2})
    with pytest.raises(BrokerUnavailable, match="texts.dlq"):
        await partitions_of(cast(Any, consumer), ["texts.dlq"], wait=0)
    assert consumer._client.refreshes == 1


async def test_partitions_of_a_topic_appearing_within_wait() -> None:
    consumer = FakeConsumer({"texts.dlq": {0, 1, 2, 3}}, {"texts.dlq": 2})
    assert await partitions_of(cast(Any, consumer), ["texts.dlq"], wait=5) == {"texts.dlq": {0, 1, 2, 3}}
    assert consumer._client.refreshes == 2


@pytest.mark.parametrize("value", [{"text": "hi", "label": "sport", "confidence": "high"},
                                   {"id": "a", "label": "x", "confidence": 0.5, "cluster_id": 1,
                                    "model_version": 1, "text": None}])
def test_render_readable_never_raises_on_a_json_record(value: dict[str, object]) -> None:
    """`tail --topic` of a topic that is not ours shows the value instead of a traceback."""
    line = render(Record("texts.in", 0, 1, None, orjson.dumps(value), {}, 0.0), as_json=False)
    assert line.startswith("texts.in[0]@1 ")

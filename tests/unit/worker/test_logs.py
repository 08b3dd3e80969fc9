from __future__ import annotations

import logging
import time

import orjson
import pytest

from worker import logs


def test_json_format_is_one_object_per_line(capsys: pytest.CaptureFixture[str]) -> None:
    logs.setup("INFO", "json")
    logging.getLogger("textstream.test").warning("dead-lettered %s reason=%s", "t/0/1", "invalid_utf8")
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("textstream.test").exception("failed")
    lines = capsys.readouterr().err.strip().splitlines()
    first, second = (orjson.loads(line) for line in lines)
    assert first["level"] == "WARNING" and first["logger"] == "textstream.test"
    assert first["msg"] == "dead-lettered t/0/1 reason=invalid_utf8" and first["ts"] > 0
    assert second["msg"] == "failed" and "ValueError: boom" in second["exc"]


def test_text_format_is_readable_and_library_chatter_is_quiet(capsys: pytest.CaptureFixture[str]) -> None:
    logs.setup("INFO", "text")
    logging.getLogger("worker.app").info("serving model version=2")
    logging.getLogger("aiokafka.consumer").info("joined group")  # narration only at DEBUG
    err = capsys.readouterr().err
    assert "INFO    worker.app: serving model version=2" in err
    assert "joined group" not in err


def test_repeated_client_library_errors_are_rate_limited() -> None:
    """A broker outage made aiokafka log ~6,000 identical lines a second (tests/faults)."""
    from worker.logs import RepeatFilter

    filt = RepeatFilter(window=0.2)

    def record(name: str, msg: str, *args: object) -> logging.LogRecord:
        return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, args, None)

    noisy = [record("aiokafka", "Unable connect to node with id %s: %s", 1, f"try {i}") for i in range(1000)]
    passed = [r for r in noisy if filt.filter(r)]
    assert len(passed) == 1
    other = record("aiokafka", "Unable to update metadata from %s", [1])
    assert filt.filter(other)  # another template has its own budget
    ours = [record("worker.app", "batch of %d failed", 5) for _ in range(5)]
    assert all(filt.filter(r) for r in ours)  # never our own loggers
    time.sleep(0.25)
    later = record("aiokafka", "Unable connect to node with id %s: %s", 1, "again")
    assert filt.filter(later)
    assert "999 more like this" in later.getMessage()


def test_a_fetch_that_met_a_leader_election_is_a_warning_that_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    """Every `make demo` printed aiokafka's ERROR for a partition of a topic just created."""
    from worker import logs

    logs.setup("INFO")
    fetcher = logging.getLogger("aiokafka.consumer.fetcher")
    fetcher.error("Failed fetch offsets from %s: %s", 1,
                  "[Error 6] NotLeaderForPartitionError: TopicPartition(topic='texts.dlq', partition=1)")
    fetcher.error("Unexpected error in fetcher routine: %s", "boom")
    err = capsys.readouterr().err
    assert "WARNING aiokafka.consumer.fetcher: Failed fetch offsets from 1: [Error 6] NotLeaderForPartitionError" in err
    assert "the partition's leader is being elected" in err
    assert "ERROR   aiokafka.consumer.fetcher: Unexpected error in fetcher routine: boom" in err  # others stay errors

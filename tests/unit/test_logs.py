from __future__ import annotations

import logging

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

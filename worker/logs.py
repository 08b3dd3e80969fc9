"""Logging set-up, done once at the entry point; modules only call logging.getLogger(__name__).

The same configuration is handed to Faust's worker, so its lines and ours share one format:
readable text by default, one JSON object per line with TEXTSTREAM_LOG_FORMAT=json.
"""

from __future__ import annotations

import logging
import logging.config
import os
import sys
import time
from typing import Any, TextIO

import orjson

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
_NOISY = ("aiokafka", "faust.transport.drivers.aiokafka", "mode", "faust")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg (+ exc)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


class RepeatFilter(logging.Filter):
    """Lets one record per (logger, level, message template) through every `window` seconds from the
    client libraries; the next one that passes says how many were dropped.

    While the broker is down, aiokafka logs "Unable connect to node" and "Unable to update metadata"
    on every metadata retry: ~6,000 lines a second, 6 MB in a 10 s outage (measured by
    tests/faults/test_broker_restart.py). Our own loggers are never filtered.
    """

    def __init__(self, window: float = 10.0, prefixes: tuple[str, ...] = ("aiokafka",)) -> None:
        super().__init__()
        self.window = window
        self.prefixes = prefixes
        self._last: dict[tuple[str, int, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self.prefixes):
            return True
        key = (record.name, record.levelno, str(record.msg))
        now = time.monotonic()
        last, dropped = self._last.get(key, (float("-inf"), 0))
        if now - last < self.window:
            self._last[key] = (last, dropped + 1)
            return False
        self._last[key] = (now, 0)
        if dropped:
            record.msg = f"{record.msg} ({dropped} more like this in the last {now - last:.0f} s)"
        return True


class TransientFilter(logging.Filter):
    """aiokafka logs at ERROR a fetch that met a partition without a leader yet, which it retries at
    once: normal right after a topic is created (every `make demo` showed one) or while a broker
    restarts. Shown as a WARNING that says so, not as an error a newcomer must investigate."""

    TRANSIENT = ("NotLeaderForPartitionError", "LeaderNotAvailableError")

    def filter(self, record: logging.LogRecord) -> bool:
        if (record.name.startswith("aiokafka") and record.levelno == logging.ERROR
                and any(name in record.getMessage() for name in self.TRANSIENT)):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            # The template stays a template (RepeatFilter counts repeats by it).
            record.msg = (f"{record.msg} (retried: the partition's leader is being elected, e.g. just after "
                          "the topic was created)")
        return True


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is at the time of each record (as logging's own last-resort
    handler does), so a swapped or captured stderr never leaves a handler on a closed stream."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def dict_config(level: str = "INFO", fmt: str = "text") -> dict[str, Any]:
    quiet = level if level == "DEBUG" else "WARNING"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "text": {"format": TEXT_FORMAT},
            "json": {"()": JsonFormatter},
        },
        "filters": {"repeats": {"()": RepeatFilter}, "transient": {"()": TransientFilter}},
        "handlers": {"stderr": {"()": StderrHandler, "formatter": fmt, "filters": ["transient", "repeats"]}},
        "root": {"level": level, "handlers": ["stderr"]},
        # Faust and aiokafka narrate every start-up step at INFO; keep their warnings and errors.
        "loggers": {name: {"level": quiet} for name in _NOISY},
    }


def setup(level: str = "INFO", fmt: str = "text") -> None:
    """Configure the root logger. Not with dictConfig: that closes every existing handler, and
    absl's (installed by TensorFlow) closes the stream it holds, which may not be ours."""
    # TensorFlow's C++ start-up chatter says nothing a user can act on (must precede its import).
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    config = dict_config(level, fmt)
    handler = StderrHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(TransientFilter())
    handler.addFilter(RepeatFilter())
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name, cfg in config["loggers"].items():
        logging.getLogger(name).setLevel(cfg["level"])

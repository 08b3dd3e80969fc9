"""Corrections: the labels people give after the fact, read from the feedback topic, kept for training.

A correction is a JSON object on TEXTSTREAM_FEEDBACK_TOPIC:
  {"id": "m-1", "label": "billing"}                  the id of a labelled record (its text comes from the
                                                     enriched topic, which the trainer also reads)
  {"text": "...", "label": "billing"}                a text with its label
  {"id": "m-1", "text": "...", "label": "billing"}   both
A label the served model does not know is allowed: the next version learns it. Anything else is
refused with a reason, and the trainer dead-letters it with its original bytes.

The store is one SQLite file. Corrections, the texts seen on the enriched topic, and the next offset of
every partition read are written in one SQLite transaction per batch of records, so a restart resumes
exactly after the last batch it stored: nothing is counted twice, nothing is skipped. The newest
correction of an id wins. Bounds: at most `max_corrections` corrections and `max_texts` texts (the
oldest go first), and corrections older than `retention_days` are dropped.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from worker import topics

# A label becomes a topic name (prefix + label made safe, worker/topics.py), which Kafka caps at 249.
MAX_LABEL_CHARS = 200


class BadCorrection(ValueError):
    """A feedback record that is not a correction; `reason` goes to the dead letter's headers."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class Correction:
    key: str  # the record id, or "text:<sha256 of the text>" when there is none
    label: str
    text: str | None  # None until the id's text is known (from the enriched topic)
    at: float  # the feedback record's timestamp, seconds


def text_key(text: str) -> str:
    return "text:" + hashlib.sha256(text.encode()).hexdigest()


def parse(value: bytes | None, at: float) -> Correction:
    """One feedback record's value; BadCorrection with a reason if it is not a correction."""
    if value is None:
        raise BadCorrection("tombstone", "a record without a value")
    try:
        body = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise BadCorrection("invalid_json", f"not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadCorrection("invalid_json", f"a JSON {type(body).__name__}, not an object")
    label, rid, text = body.get("label"), body.get("id"), body.get("text")
    if not isinstance(label, str) or not label.strip():
        raise BadCorrection("missing_label", "no \"label\" string")
    label = label.strip()
    if len(topics.label_topic("", label)) > MAX_LABEL_CHARS:
        raise BadCorrection("invalid_label", f"label {label[:80]!r} is too long for a topic name: at most "
                                             f"{MAX_LABEL_CHARS} characters once made safe for Kafka")
    if rid is not None and (not isinstance(rid, str) or not rid):
        raise BadCorrection("invalid_id", "\"id\" must be a non-empty string")
    if text is not None and (not isinstance(text, str) or not text.strip()):
        raise BadCorrection("empty_text", "\"text\" must be a non-empty string")
    if rid is not None:
        return Correction(rid, label, text, at)
    if text is None:
        raise BadCorrection("missing_text", "neither \"id\" nor \"text\": nothing to attach the label to")
    return Correction(text_key(text), label, text, at)


@dataclass(frozen=True)
class Counts:
    corrections: int  # kept, with or without their text
    ready: int  # with their text: what the next training uses
    pending: int  # ready, and arrived since the last training
    texts: int  # enriched texts kept for joining


_SCHEMA = """
CREATE TABLE IF NOT EXISTS corrections (key TEXT PRIMARY KEY, label TEXT NOT NULL, text TEXT, at REAL NOT NULL,
                                        seq INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS corrections_seq ON corrections (seq);
CREATE TABLE IF NOT EXISTS texts (id TEXT PRIMARY KEY, text TEXT NOT NULL, seq INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS texts_seq ON texts (seq);
CREATE TABLE IF NOT EXISTS offsets (topic TEXT NOT NULL, partition INTEGER NOT NULL, next INTEGER NOT NULL,
                                    PRIMARY KEY (topic, partition));
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value REAL NOT NULL);
"""


class Store:
    """The trainer's state: corrections, texts to join them with, offsets read, the last training."""

    def __init__(self, path: Path, *, max_corrections: int = 1_000_000, max_texts: int = 1_000_000,
                 retention_days: float = 365.0) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_corrections, self.max_texts, self.retention_days = max_corrections, max_texts, retention_days
        self.db = sqlite3.connect(path, isolation_level=None)  # transactions are explicit (BEGIN ... COMMIT)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")  # a stored batch survives a power cut
        self.db.executescript(_SCHEMA)
        self.db.execute("INSERT OR IGNORE INTO meta (name, value) VALUES ('created_at', ?)", (time.time(),))

    def close(self) -> None:
        self.db.close()

    def _meta(self, name: str, default: float = 0.0) -> float:
        row = self.db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return float(row[0]) if row else default

    def offsets(self) -> dict[tuple[str, int], int]:
        """The next offset to read of every partition stored so far."""
        return {(t, p): n for t, p, n in self.db.execute("SELECT topic, partition, next FROM offsets")}

    def apply(self, corrections: Sequence[Correction], texts: Iterable[tuple[str, str]],
              offsets: dict[tuple[str, int], int], now: float | None = None) -> None:
        """Store one batch (corrections, (id, text) pairs from the enriched topic, and the next offset
        of each partition it came from) in one transaction, then apply the bounds."""
        now = time.time() if now is None else now
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            seq = int(self._meta("seq"))
            for tid, seen in texts:
                seq += 1
                db.execute("INSERT INTO texts (id, text, seq) VALUES (?, ?, ?) "
                           "ON CONFLICT (id) DO UPDATE SET text = excluded.text, seq = excluded.seq", (tid, seen, seq))
                # Corrections that arrived before their text: join them now.
                db.execute("UPDATE corrections SET text = ? WHERE key = ? AND text IS NULL", (seen, tid))
            for c in corrections:
                seq += 1
                text: str | None = c.text
                if text is None:
                    row = db.execute("SELECT text FROM texts WHERE id = ?", (c.key,)).fetchone()
                    text = row[0] if row else None
                db.execute("INSERT INTO corrections (key, label, text, at, seq) VALUES (?, ?, ?, ?, ?) "
                           "ON CONFLICT (key) DO UPDATE SET label = excluded.label, "
                           "text = COALESCE(excluded.text, corrections.text), at = excluded.at, seq = excluded.seq",
                           (c.key, c.label, text, c.at, seq))
            db.execute("INSERT INTO meta (name, value) VALUES ('seq', ?) "
                       "ON CONFLICT (name) DO UPDATE SET value = excluded.value", (seq,))
            for (topic, partition), nxt in offsets.items():
                db.execute("INSERT INTO offsets (topic, partition, next) VALUES (?, ?, ?) "
                           "ON CONFLICT (topic, partition) DO UPDATE SET next = excluded.next", (topic, partition, nxt))
            db.execute("DELETE FROM corrections WHERE at < ?", (now - self.retention_days * 86400,))
            for table, cap in (("corrections", self.max_corrections), ("texts", self.max_texts)):
                db.execute(f"DELETE FROM {table} WHERE seq <= (SELECT seq FROM {table} ORDER BY seq DESC "
                           f"LIMIT 1 OFFSET ?)", (cap,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def counts(self) -> Counts:
        trained = self._meta("trained_seq")
        total, ready, pending = self.db.execute(
            "SELECT COUNT(*), COUNT(text), COUNT(CASE WHEN text IS NOT NULL AND seq > ? THEN 1 END) FROM corrections",
            (trained,)).fetchone()
        (texts,) = self.db.execute("SELECT COUNT(*) FROM texts").fetchone()
        return Counts(int(total), int(ready), int(pending), int(texts))

    def ready(self) -> Iterator[tuple[str, str]]:
        """(text, label) of every correction whose text is known, oldest first."""
        yield from self.db.execute("SELECT text, label FROM corrections WHERE text IS NOT NULL ORDER BY seq")

    def snapshot(self) -> tuple[list[tuple[str, str]], float]:
        """(the ready corrections as (text, label), the store's seq then): the seq to pass to `trained`
        once a training on them is done."""
        seq = self._meta("seq")
        return list(self.ready()), seq

    def trained(self, seq: float, at: float) -> None:
        """Record a finished training (published or refused) over everything stored up to `seq`."""
        self.db.execute("BEGIN IMMEDIATE")
        for name, value in (("trained_seq", seq), ("trained_at", at)):
            self.db.execute("INSERT INTO meta (name, value) VALUES (?, ?) "
                            "ON CONFLICT (name) DO UPDATE SET value = excluded.value", (name, value))
        self.db.execute("COMMIT")

    def last_training(self) -> float:
        """When the last training finished (0: never)."""
        return self._meta("trained_at")

    def since(self) -> float:
        """What the schedule counts from: the last training, or the store's creation if none yet."""
        return self._meta("trained_at") or self._meta("created_at")

"""`textstream trainer`: the learning loop as a service (one per deployment).

It reads the feedback topic (corrections, training/corrections.py) and the enriched topic (the texts
that id-only corrections are joined with), stores both with the offsets read in one SQLite transaction
per batch, and retrains when enough new corrections arrived (TEXTSTREAM_TRAINER_MIN_CORRECTIONS) or,
with any pending, when the last training is older than TEXTSTREAM_TRAINER_INTERVAL. A training runs
`training.train.train` over the base data (TEXTSTREAM_TRAINER_DATA) plus every stored correction; its
quality gate decides, and a published version is announced on the models topic, so workers swap to it
as after `textstream train`.

It reads every partition itself (no consumer group) from the offsets in its store, so a restart resumes
after the last stored batch: no correction is counted twice or skipped. A feedback record that is not
a correction goes to the dead-letter topic with its original bytes and the reason, before the batch's
offsets are stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client import Counter, Gauge
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from training import holdout
from training.config import TrainConfig
from training.corrections import BadCorrection, Correction, Store, parse
from training.data import load
from worker import client, events, security, topics
from worker.config import ENV_PREFIX, Settings, validation_problems
from worker.errors import ConfigError
from worker.limits import reason_headers

logger = logging.getLogger(__name__)


class TrainerSettings(BaseSettings):
    """The trainer's own settings; Kafka, topics and the registry come from the worker's Settings."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")

    feedback_topic: str = Field("texts.feedback", description="topic of corrections: {\"id\", \"label\"} or "
                                                              "{\"text\", \"label\"} (training/corrections.py)")
    trainer_data: str = Field("", description="base training data, comma-separated files or directories (as "
                                              "`textstream train --data`); corrections are added to it")
    trainer_state: Path = Field(Path("trainer-state"), description="folder of the trainer's store (corrections, "
                                                                   "texts, offsets read): keep it on a volume")
    trainer_min_corrections: int = Field(100, ge=1, description="retrain once this many new corrections (with their "
                                                                "text) arrived since the last training")
    trainer_interval: float = Field(86_400.0, gt=0, description="seconds: retrain when any correction is pending and "
                                                                "the last training is older than this")
    trainer_max_corrections: int = Field(1_000_000, ge=1, description="corrections kept (the oldest go first)")
    trainer_max_texts: int = Field(1_000_000, ge=1, description="enriched texts kept for joining id-only "
                                                                "corrections (the oldest go first)")
    trainer_retention_days: float = Field(365.0, gt=0, description="corrections older than this are dropped")
    trainer_port: int = Field(6068, ge=0, le=65535, description="port of the trainer's /metrics (0: none)")

    @property
    def data_paths(self) -> list[Path]:
        return [Path(p.strip()) for p in self.trainer_data.split(",") if p.strip()]


def load_trainer_settings() -> TrainerSettings:
    """Read and validate the trainer's settings; ConfigError naming each bad variable."""
    try:
        return TrainerSettings()
    except ValidationError as exc:
        problems = validation_problems(exc, lambda field: f"{ENV_PREFIX}{field.upper()}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems)) from None


CORRECTIONS = Counter("textstream_trainer_corrections_total", "Feedback records read, by outcome",
                      ["outcome"])  # stored | dead_lettered
PENDING = Gauge("textstream_trainer_corrections_pending",
                "Corrections with their text that arrived since the last training")
STORED = Gauge("textstream_trainer_corrections_stored", "Corrections kept, by whether their text is known",
               ["text"])  # known | waiting
TRAININGS = Counter("textstream_trainer_trainings_total", "Trainings run, by outcome",
                    ["outcome"])  # published | refused | failed
LAST_TRAINING = Gauge("textstream_trainer_last_training_timestamp_seconds", "When the last training finished")
LAST_VERSION = Gauge("textstream_trainer_last_published_version", "The version the trainer published last")
LAST_GATE = Gauge("textstream_trainer_last_gate_published",
                  "The last quality gate's decision: 1 published, 0 refused (failed trainings reach no gate)")
GATE_F1 = Gauge("textstream_trainer_last_gate_macro_f1", "Macro-F1 on the held-out slice at the last quality gate",
                ["model"])  # new | served


@dataclass(frozen=True)
class Batch:
    corrections: list[Correction]
    texts: list[tuple[str, str]]
    dead: list[tuple[Any, BadCorrection]]  # (consumer record, why)
    offsets: dict[tuple[str, int], int]


def split_batch(records: Sequence[Any], feedback_topic: str) -> Batch:
    """Feedback records into corrections (or dead letters), enriched records into (id, text)."""
    corrections, texts, dead, offsets = [], [], [], {}
    for r in records:
        offsets[(r.topic, r.partition)] = r.offset + 1
        if r.topic == feedback_topic:
            try:
                corrections.append(parse(r.value, (r.timestamp or 0) / 1000 or time.time()))
            except BadCorrection as exc:
                dead.append((r, exc))
            continue
        with contextlib.suppress(orjson.JSONDecodeError, TypeError):
            out = orjson.loads(r.value or b"")
            if isinstance(out, dict) and isinstance(out.get("id"), str) and isinstance(out.get("text"), str):
                texts.append((out["id"], out["text"]))
    return Batch(corrections, texts, dead, offsets)


def last_per_text(texts: Sequence[str]) -> list[int]:
    """Indices of the rows to train on, in order: of rows with the same text, only the last."""
    last = {text: i for i, text in enumerate(texts)}
    return [i for i, text in enumerate(texts) if last[text] == i]


def due(pending: int, since: float, now: float, settings: TrainerSettings) -> bool:
    """Whether to train now: enough new corrections, or any and the last training (or the trainer's first
    start, before any) is older than the interval."""
    if pending >= settings.trainer_min_corrections:
        return True
    return pending > 0 and now - since >= settings.trainer_interval


def split_files(base: Sequence[Path], corrections: Sequence[tuple[str, str]], folder: Path,
                cfg: TrainConfig) -> tuple[Path, Path]:
    """Base data (in `cfg`'s fields) and corrections ((text, label), the text already joined as the
    worker joins fields) in two files: training rows, and the held-out slice of
    training/holdout.py (the same texts in every training, so the gate is fair to both versions).
    A text given twice keeps its last label: a correction replaces the base row it corrects.

    The files use `cfg`'s fields, so the version's manifest keeps them: each text goes in the first
    field and the others stay empty, which `worker.textfields.join` leaves out."""
    ds = load(base, cfg.text_fields, cfg.label_field, cfg.bad_rows)
    texts = [*ds.texts, *(text for text, _ in corrections)]
    labels = [*ds.labels, *(label for _, label in corrections)]
    kept = last_per_text(texts)
    if len(kept) < len(texts):
        logger.info("%d rows replaced by a later row with the same text", len(texts) - len(kept))
    texts, labels = [texts[i] for i in kept], [labels[i] for i in kept]
    train_rows, eval_rows = holdout.split_rows(texts, labels, cfg.test_size)
    first, *others = cfg.text_fields
    out = (folder / "train.jsonl", folder / "evaluation.jsonl")
    for path, rows in zip(out, (train_rows, eval_rows), strict=True):
        with path.open("w", encoding="utf-8") as fh:
            for i in rows:
                row = {first: texts[i], **dict.fromkeys(others, ""), cfg.label_field: labels[i]}
                fh.write(orjson.dumps(row).decode() + "\n")
    logger.info("%d rows for training, %d held out", len(train_rows), len(eval_rows))
    return out


class Trainer:
    def __init__(self, settings: Settings, tsettings: TrainerSettings, cfg: TrainConfig) -> None:
        self.settings, self.tsettings, self.cfg = settings, tsettings, cfg
        self.access = security.from_settings(settings)
        self.store = Store(tsettings.trainer_state / "trainer.sqlite", max_corrections=tsettings.trainer_max_corrections,
                           max_texts=tsettings.trainer_max_texts, retention_days=tsettings.trainer_retention_days)
        self.retry_at = 0.0  # after a failed training, not before this

    def _gauges(self) -> None:
        c = self.store.counts()
        PENDING.set(c.pending)
        LAST_TRAINING.set(self.store.last_training())  # from the store, so a restart shows it too
        STORED.labels("known").set(c.ready)
        STORED.labels("waiting").set(c.corrections - c.ready)

    async def _assign(self, consumer: AIOKafkaConsumer) -> None:
        wanted = [self.tsettings.feedback_topic, self.settings.output_topic]
        found = await client.partitions_of(consumer, wanted, wait=60)
        parts = [TopicPartition(topic, p) for topic in wanted for p in sorted(found[topic])]
        consumer.assign(parts)
        stored = self.store.offsets()
        for tp in parts:
            if (tp.topic, tp.partition) in stored:
                consumer.seek(tp, stored[(tp.topic, tp.partition)])
            else:
                await consumer.seek_to_beginning(tp)
        logger.info("trainer reading %s from the stored offsets (%d partitions; %d stored before)",
                    " and ".join(wanted), len(parts), len(stored))

    async def run(self, stop: asyncio.Event) -> None:
        s, ts = self.settings, self.tsettings
        spec = topics.TopicSpec.from_settings(s)
        needed = [ts.feedback_topic, s.dlq_topic, s.output_topic]
        if s.create_topics:
            await topics.ensure_topics(s.bootstrap_servers, needed, s.topic_partitions, security=self.access, spec=spec)
        else:
            await topics.require_topics(s.bootstrap_servers, needed, security=self.access)
        consumer = AIOKafkaConsumer(bootstrap_servers=s.bootstrap_servers, group_id=None, enable_auto_commit=False,
                                    isolation_level="read_committed", **self.access.kwargs())
        producer = AIOKafkaProducer(bootstrap_servers=s.bootstrap_servers, acks="all", enable_idempotence=True,
                                    **self.access.kwargs())
        await consumer.start()
        await producer.start()
        try:
            await self._assign(consumer)
            self._gauges()
            logger.info("trainer ready: %s", self.store.counts())
            while not stop.is_set():
                fetched = await consumer.getmany(timeout_ms=500, max_records=5000)
                records = [r for part in fetched.values() for r in part]
                if records:
                    await self._store(split_batch(records, ts.feedback_topic), producer)
                counts = self.store.counts()
                now = time.time()
                if now >= self.retry_at and due(counts.pending, self.store.since(), now, ts):
                    await self.train_once()
        finally:
            await consumer.stop()
            await producer.stop()
            self.store.close()

    async def _store(self, batch: Batch, producer: AIOKafkaProducer) -> None:
        # Dead letters first: once the offsets are stored, these records are never read again.
        for r, why in batch.dead:
            headers = [*(r.headers or ()), *reason_headers(why.reason, str(why), r.topic, r.partition, r.offset)]
            await producer.send_and_wait(self.settings.dlq_topic, r.value, key=r.key, headers=headers)
            logger.warning("feedback record %s-%d-%d dead-lettered: %s (%s)", r.topic, r.partition, r.offset,
                           why.reason, why)
        self.store.apply(batch.corrections, batch.texts, batch.offsets)  # milliseconds; no group to heartbeat
        CORRECTIONS.labels("stored").inc(len(batch.corrections))
        CORRECTIONS.labels("dead_lettered").inc(len(batch.dead))
        self._gauges()

    async def train_once(self) -> int | None:
        """Train on the base data and every stored correction; the version published, or None."""
        from training.train import train

        with tempfile.TemporaryDirectory(prefix="textstream-trainer-") as tmp:
            corrections, seq = self.store.snapshot()
            logger.info("training on %s and %d corrections", ", ".join(map(str, self.tsettings.data_paths)) or "-",
                        len(corrections))
            waiting = self.store.counts()
            if waiting.corrections > waiting.ready:
                logger.warning("%d corrections by id still wait for their record's text on %s (it may have left the "
                               "topic before the trainer read it); they are kept for %g days; send the text with "
                               "the id to use them now", waiting.corrections - waiting.ready,
                               self.settings.output_topic, self.tsettings.trainer_retention_days)
            try:
                files = await asyncio.to_thread(split_files, self.tsettings.data_paths, corrections, Path(tmp), self.cfg)
                result = await asyncio.to_thread(train, [files[0]], self.settings.model_dir, self.cfg, [files[1]],
                                                 self.settings)
            except Exception:
                TRAININGS.labels("failed").inc()
                self.retry_at = time.time() + min(self.tsettings.trainer_interval, 300.0)
                logger.exception("training failed; the served version stays, next try in %.0f s",
                                 self.retry_at - time.time())
                return None
        outcome = "published" if result.version is not None else "refused"
        TRAININGS.labels(outcome).inc()
        LAST_GATE.set(result.version is not None)
        GATE_F1.labels("new").set(result.decision.new_f1)
        if result.decision.current_f1 is not None:
            GATE_F1.labels("served").set(result.decision.current_f1)
        self.store.trained(seq, time.time())
        self._gauges()
        logger.info("%s", result.decision.describe())
        if result.version is None:
            return None
        LAST_VERSION.set(result.version)
        event = {"event": "published", "version": result.version, "registry": str(self.settings.model_dir)}
        try:
            await events.announce(self.settings.bootstrap_servers, self.settings.models_topic, event,
                                  security=self.access)
        except Exception as exc:  # workers poll the registry anyway
            logger.warning("published version %d; could not announce it (%s): workers find it at their next poll",
                           result.version, exc)
        else:
            logger.info("published and announced version %d", result.version)
        return result.version

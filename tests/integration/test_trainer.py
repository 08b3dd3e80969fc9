"""The learning loop on the real broker (issue 18): corrections on the feedback topic, `textstream trainer`
restarted mid-stream, a version with a new label published, and the worker serving it."""

from __future__ import annotations

import asyncio
import gzip
import json
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from devkit.kafka_local import free_ports
from devkit.stack import http_get
from tests.factories import BBC, copy_registry
from tests.integration.conftest import REPO, stack_on, wait_until
from worker import client, topics

pytestmark = pytest.mark.integration

# The tiny model's settings (tests/factories.py TINY), as the trainer's flags.
TINY_FLAGS = ["--epochs", "3", "--batch-size", "32", "--vocab-size", "3000", "--sequence-length", "60",
              "--embedding-dim", "16", "--lstm-units", "16", "--no-bidirectional", "--ngram-vocab", "5000",
              "--cluster-vocab", "1500", "--latent-dim", "8", "--ae-epochs", "1", "--dec-iterations", "3"]
URGENT = ["URGENT: the {} server is down, page the on-call engineer now",
          "Outage alert: customers cannot log in to {}, escalate immediately",
          "Critical incident on {}: payments failing, all hands to the bridge call"]


class Trainer:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = int(env["TEXTSTREAM_TRAINER_PORT"])
        with log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "commands", "trainer", *TINY_FLAGS], cwd=REPO,
                                         env=env, stdout=out, stderr=subprocess.STDOUT)
        self.log = log

    def metric(self, name: str) -> float:
        if self.proc.poll() is not None:
            raise AssertionError(f"the trainer exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
        _, text = http_get(self.port, "/metrics")
        return sum(float(line.rsplit(" ", 1)[1]) for line in str(text).splitlines() if line.startswith(name))

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=120)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def trainers() -> Iterator[list[Trainer]]:
    """The trainers a test starts, killed afterwards if still running (a failed test leaves none behind)."""
    started: list[Trainer] = []
    yield started
    for trainer in started:
        trainer.kill()


def _urgent(start: int, n: int) -> list[bytes]:
    return [orjson.dumps({"text": URGENT[i % 3].format(f"host-{i}"), "label": "urgent"}) for i in range(start, start + n)]


def test_corrections_with_a_new_label_reach_every_worker_and_a_restart_counts_each_once(
        broker: str, tiny_registry: Path, tmp_path: Path, trainers: list[Trainer]) -> None:
    base = tmp_path / "base.jsonl"
    with gzip.open(BBC, "rt", encoding="utf-8") as fh, base.open("w", encoding="utf-8") as out:
        for i, line in enumerate(fh):
            if i < 300:
                out.write(line)
    with stack_on(broker, copy_registry(tiny_registry, tmp_path / "registry"), tmp_path) as stack:
        feedback = f"{stack.ns}.feedback"
        workers = [stack.start_worker(), stack.start_worker()]  # two in the group: both must swap
        for worker in workers:
            stack.wait_ready(worker)
        # Ten labelled records whose ids the id-only corrections below name.
        stack.send([orjson.dumps({"id": f"r-{i}", "text": f"Shares in the bank rose {i} percent on profits"})
                    for i in range(10)])
        stack.read([stack.labeled], 10)

        state = tmp_path / "trainer-state"
        env = stack.env(TEXTSTREAM_FEEDBACK_TOPIC=feedback, TEXTSTREAM_TRAINER_DATA=str(base),
                        TEXTSTREAM_TRAINER_STATE=str(state), TEXTSTREAM_TRAINER_MIN_CORRECTIONS="50",
                        TEXTSTREAM_TRAINER_PORT=str(free_ports(1)[0]))
        trainer = Trainer(env, tmp_path / "trainer-1.log")
        trainers.append(trainer)
        asyncio.run(topics.ensure_topics(broker, [feedback], 4))

        def send(values: list[bytes]) -> None:
            asyncio.run(client.send_values(broker, feedback, values))

        send(_urgent(0, 25) + [orjson.dumps({"id": f"r-{i}", "label": "tech"}) for i in range(10)]
             + [b"not json", b'{"id": "r-1"}'])
        wait_until(lambda: trainer.metric('textstream_trainer_corrections_total{outcome="stored"}') == 35, 300,
                   "the trainer storing 35 corrections")
        assert trainer.metric('textstream_trainer_corrections_total{outcome="dead_lettered"}') == 2
        assert trainer.metric("textstream_trainer_trainings_total") == 0  # 35 < 50: no training yet
        assert trainer.stop() == 0, trainer.log.read_text()[-3000:]

        # Restarted mid-stream: it resumes after what it stored, so the first 35 are not read again.
        trainer = Trainer(env, tmp_path / "trainer-2.log")
        trainers.append(trainer)
        send(_urgent(25, 20))
        wait_until(lambda: trainer.metric('textstream_trainer_trainings_total{outcome="published"}') == 1, 600,
                   "a version published from the corrections")
        assert trainer.metric('textstream_trainer_corrections_total{outcome="stored"}') == 20  # only the new ones
        assert trainer.metric('textstream_trainer_corrections_total{outcome="dead_lettered"}') == 0
        assert trainer.metric("textstream_trainer_last_gate_published") == 1
        assert trainer.metric('textstream_trainer_last_gate_macro_f1{model="new"}') > 0
        manifest = json.loads((stack.model_dir / "2" / "manifest.json").read_text())
        assert "urgent" in manifest["labels"]
        # Every worker swapped to it (announced on the models topic), and the new label is routed.
        for worker in workers:
            wait_until(lambda w=worker: w.status().get("model_version") == 2, 300, "every worker serving version 2")
        stack.send([orjson.dumps({"id": "u-1", "text": URGENT[0].format("mail")})])
        labelled = [orjson.loads(r.value or b"") for r in stack.read([stack.labeled], 11)]
        new = next(r for r in labelled if r["id"] == "u-1")
        assert new["model_version"] == 2 and "urgent" in new["scores"]
        assert trainer.stop() == 0
        dead = stack.read([stack.dlq], 2, settle=5)  # once each, though the trainer read twice
        assert sorted(r.headers.get("error", "") for r in dead) == ["invalid_json", "missing_label"]
        assert {r.value for r in dead} == {b"not json", b'{"id": "r-1"}'}  # the original bytes

    db = sqlite3.connect(state / "trainer.sqlite")
    total, with_text = db.execute("SELECT COUNT(*), COUNT(text) FROM corrections").fetchone()
    assert (total, with_text) == (55, 55)  # 45 texts + 10 ids joined with their labelled texts, each once
    labels = dict(db.execute("SELECT label, COUNT(*) FROM corrections GROUP BY label").fetchall())
    assert labels == {"urgent": 45, "tech": 10}

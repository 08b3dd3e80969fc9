"""Start-up paths on a new, slow machine: nothing may depend on the worker starting fast.

The worker creates its topics and answers /healthz before it imports TensorFlow and loads the
model; readers (the demo, `tail`, the test helpers) wait for topics that do not exist yet.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest

from devkit.stack import list_topics
from tests.integration.conftest import REPO, Stack, wait_until
from worker import client, topics

pytestmark = pytest.mark.integration

SLOW_START = Path(__file__).resolve().parent / "slow_start"
HELD_FOR_S = 15  # well past the 5-10 s a warm machine needs: what a cold one may take


def test_a_slow_model_load_keeps_topics_and_health_up_and_a_reader_started_first_gets_every_record(
        stack: Stack, tmp_path: Path) -> None:
    texts = [orjson.dumps({"id": f"s-{i}", "text": f"The club won the final match {i}."}) for i in range(8)]
    values = [*texts, b'{"id": "broken", "text": ']
    # The reader starts before any worker or topic exists, as `make demo`'s and a subscriber's do.
    got: list[client.Record] = []
    reader = threading.Thread(target=lambda: got.extend(stack.read([stack.labeled, stack.dlq], len(values),
                                                                   timeout=600, settle=1.0)))
    reader.start()

    gate = tmp_path / "release-model-load"
    started = time.monotonic()
    worker = stack.start_worker(PYTHONPATH=os.pathsep.join([str(SLOW_START), os.environ.get("PYTHONPATH", "")]),
                                TEXTSTREAM_TEST_LOAD_GATE=str(gate))
    wait_until(lambda: worker.get("/healthz")[0] == 200, 300, f"/healthz while the model load is held\n{stack.logs()}")
    wait_until(lambda: {stack.raw, stack.labeled, stack.dlq} <= list_topics(stack.bootstrap), 60,
               "the worker's topics before its model loads")
    status, body = worker.get("/readyz")
    assert status == 503 and body["checks"]["model_loaded"] is False  # type: ignore[index]
    assert stack.send(values) == len(values)

    # Hold the load well past what a warm machine needs; the worker stays alive and healthy.
    while time.monotonic() - started < HELD_FOR_S:
        assert worker.proc.poll() is None, stack.logs()
        assert worker.get("/healthz")[0] == 200
        assert reader.is_alive()  # still waiting: it did not give up on the slow worker
        time.sleep(0.5)
    assert got == []

    gate.touch()
    reader.join(timeout=600)
    assert not reader.is_alive()
    assert sorted(r.topic for r in got) == sorted([stack.labeled] * len(texts) + [stack.dlq]), stack.logs()
    assert {orjson.loads(r.value or b"")["id"] for r in got if r.topic == stack.labeled} == {f"s-{i}" for i in range(8)}
    wait_until(lambda: worker.get("/readyz")[0] == 200, 120, "ready once the model serves")


def test_tail_on_an_empty_broker_waits_for_its_topic_then_prints_what_arrives(stack: Stack) -> None:
    topic = f"{stack.ns}.later"
    tail = subprocess.Popen(
        [sys.executable, "-m", "commands", "tail", "--topic", topic, "--json", "--max", "3"], cwd=REPO,
        env=stack.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        assert tail.stderr is not None
        said = [tail.stderr.readline().decode()]  # blocks until tail says something (or exits)
        while said[-1] and "waiting for topic(s)" not in said[-1] and len(said) < 20:
            said.append(tail.stderr.readline().decode())
        assert "waiting for topic(s)" in said[-1] and topic in said[-1], said
        assert tail.poll() is None
        asyncio.run(topics.ensure_topics(stack.bootstrap, [topic], 2))
        asyncio.run(client.send_values(stack.bootstrap, topic, [b'{"id": "a", "text": "one"}', b"two", b"three"]))
        out, err = tail.communicate(timeout=120)
    finally:
        if tail.poll() is None:
            tail.kill()
            tail.wait()
    assert tail.returncode == 0, err
    values = sorted(str(orjson.loads(line)["value"]) for line in out.decode().splitlines())
    assert values == sorted(["{'id': 'a', 'text': 'one'}", "two", "three"])

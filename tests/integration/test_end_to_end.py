"""The contract on a real broker: every input comes out once, labelled or dead-lettered."""

from __future__ import annotations

import random
import signal
from collections import Counter

import orjson
import pytest

from tests.factories import NEWS, malformed
from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration


def valid_records(n: int) -> list[bytes]:
    return [orjson.dumps({"id": f"ok-{i}", "text": f"{NEWS[i % len(NEWS)]} Item {i}.", "seq": i}) for i in range(n)]


def test_1000_records_with_50_malformed(stack: Stack) -> None:
    good = valid_records(950)
    bad = malformed(stack.max_text_bytes)
    bad_values = [v for values in bad.values() for v in values]
    assert len(bad_values) == 50
    values = good + bad_values
    random.Random(1).shuffle(values)
    assert stack.send(values) == 1000
    stack.start_worker()

    labeled = stack.read([stack.labeled], 950)
    assert len(labeled) == 950, stack.logs()
    outputs = [orjson.loads(r.value or b"") for r in labeled]
    assert {o["id"] for o in outputs} == {f"ok-{i}" for i in range(950)}
    labels = set(outputs[0]["scores"])
    for rec, out in zip(labeled, outputs, strict=True):
        assert {"id", "label", "confidence", "scores", "cluster_id", "cluster_similarity", "model_version",
                "text", "source", "received_at", "processed_at", "seq"} <= set(out)
        assert out["label"] in labels and out["model_version"] == 1
        assert 0 < out["confidence"] <= 1 and isinstance(out["cluster_id"], int)
        assert rec.key == out["id"].encode()  # the input key (= id, set by `send`) is kept
        assert out["processed_at"] >= out["received_at"]

    routed = stack.read([stack.label_topic(label) for label in sorted(labels)], 950, settle=1.0)
    assert len(routed) == 950
    for rec in routed:
        out = orjson.loads(rec.value or b"")
        assert rec.topic == stack.label_topic(out["label"])
    assert sorted(r.value for r in routed) == sorted(r.value for r in labeled)  # type: ignore[type-var]

    dead = stack.read([stack.dlq], 50, settle=1.0)
    assert len(dead) == 50
    assert sorted(r.value for r in dead) == sorted(bad_values)  # original bytes, unchanged  # type: ignore[type-var]
    assert Counter(r.headers["error"] for r in dead) == dict.fromkeys(bad, 10)
    for rec in dead:
        assert rec.headers["source_topic"] == stack.raw
        assert int(rec.headers["source_partition"]) in range(4) and int(rec.headers["source_offset"]) >= 0
        assert rec.headers["error_detail"]
    assert stack.stop_worker(stack.workers[0]) == 0  # clean shutdown on SIGTERM


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_and_restart_loses_nothing(stack: Stack, sig: int) -> None:
    n = 4000
    stack.send(valid_records(n))
    first = stack.start_worker()
    # Stop the worker in the middle of the stream.
    partial = stack.read([stack.labeled], 600, settle=0.0)
    assert 600 <= len(partial) < n, stack.logs()
    assert stack.stop_worker(first, sig) == 0, stack.logs()

    stack.start_worker()
    labeled = stack.read([stack.labeled], n, timeout=180)
    ids = Counter(orjson.loads(r.value or b"")["id"] for r in labeled)
    missing = {f"ok-{i}" for i in range(n)} - set(ids)
    assert not missing, f"{len(missing)} lost\n{stack.logs()}"
    duplicates = sum(c - 1 for c in ids.values())
    # A clean stop commits what was delivered: at most the batch in flight comes back.
    assert duplicates <= 512, duplicates


def test_a_text_without_a_word_alone_in_its_batch_is_labelled(stack: Stack) -> None:
    # Alone in a model call, a punctuation-only text made Keras' LSTM fail on zero steps: the worker
    # stopped uncommitted and met the same record after every restart.
    worker = stack.start_worker()
    stack.wait_ready(worker)
    for i, text in enumerate(["!!! ???", "..."]):
        assert stack.send([orjson.dumps({"id": f"punct-{i}", "text": text})]) == 1
        labeled = stack.read([stack.labeled], i + 1, settle=0.5)
        assert sorted(orjson.loads(r.value or b"")["id"] for r in labeled) == [f"punct-{j}" for j in range(i + 1)], \
            stack.logs()
    assert worker.proc.poll() is None
    assert stack.stop_worker(worker) == 0

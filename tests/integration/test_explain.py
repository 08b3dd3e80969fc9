"""TEXTSTREAM_EXPLAIN on a real broker: the worker's published records carry their explanation."""

from __future__ import annotations

import orjson
import pytest

from tests.factories import NEWS
from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration


def test_an_explaining_worker_publishes_each_record_with_its_explanation(stack: Stack) -> None:
    values = [orjson.dumps({"id": f"n{i}", "text": text}) for i, text in enumerate(NEWS)]
    assert stack.send(values) == len(values)
    stack.start_worker(TEXTSTREAM_EXPLAIN="true")
    labeled = stack.read([stack.labeled], len(values))
    outputs = {o["id"]: o for o in (orjson.loads(r.value or b"") for r in labeled)}
    assert set(outputs) == {f"n{i}" for i in range(len(NEWS))}, stack.logs()
    for out in outputs.values():
        why = out["explanation"]
        assert why["label"] == out["label"]
        assert why["linear"] and all(isinstance(x["ngram"], str) for x in why["linear"])
        assert sum(x["weight"] for x in why["linear"]) + why["linear_rest"] + why["linear_bias"] == \
            pytest.approx(why["linear_logit"], rel=2e-6, abs=1e-4)
    routed = stack.read([stack.label_topic(outputs["n0"]["label"])], 1, settle=1.0)
    assert any("explanation" in orjson.loads(r.value or b"") for r in routed)  # the label topic's copy too
    assert stack.stop_worker(stack.workers[0]) == 0

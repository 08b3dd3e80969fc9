"""The review route on a real broker: a record under the confidence threshold goes to the review
topic and the enriched topic, not to its label's topic."""

from __future__ import annotations

import itertools

import orjson
import pytest

from tests.factories import NEWS
from tests.integration.conftest import Stack
from worker.bundle import Bundle
from worker.predict import predict
from worker.records import Source, TextMessage

pytestmark = pytest.mark.integration

# Not news, or two kinds of news in one text: the model should be least sure about these.
UNSURE = ["ok thanks", "see you at seven then", "zzqx vprk",
          *(f"{a} {b}" for a, b in itertools.combinations(NEWS, 2))]


def test_an_unsure_record_goes_to_review_and_the_enriched_topic_not_its_label_topic(stack: Stack,
                                                                                        tiny_bundle: Bundle) -> None:
    texts = [*NEWS, *UNSURE]
    # The threshold goes in the middle of the widest gap between the served version's (calibrated)
    # confidences, computed here with the same files and code, so that some record is under it.
    # Which records are under it is then decided by the confidence the worker wrote.
    preds = predict(tiny_bundle, [TextMessage(str(i), t, Source("x", 0, i)) for i, t in enumerate(texts)])
    ranked = sorted(p.confidence for p in preds)
    gap, low = max((b - a, a) for a, b in itertools.pairwise(ranked))
    threshold = round(low + gap / 2, 6)

    review = f"{stack.ns}.review"
    stack.send([orjson.dumps({"id": str(i), "text": t}) for i, t in enumerate(texts)])
    stack.start_worker(TEXTSTREAM_MIN_CONFIDENCE=str(threshold), TEXTSTREAM_REVIEW_TOPIC=review)

    labeled = {orjson.loads(r.value or b"")["id"]: r.value for r in stack.read([stack.labeled], len(texts), timeout=300)}
    assert set(labeled) == {str(i) for i in range(len(texts))}, stack.logs()
    unsure = {i for i, v in labeled.items() if orjson.loads(v or b"")["confidence"] < threshold}
    assert 0 < len(unsure) < len(texts), (threshold, ranked)
    reviewed = stack.read([review], len(unsure), settle=1.0)
    assert sorted(orjson.loads(r.value or b"")["id"] for r in reviewed) == sorted(unsure)
    for rec in reviewed:
        out = orjson.loads(rec.value or b"")
        assert rec.value == labeled[out["id"]]  # the same enriched record on both topics
        assert out["route"] == "review" and out["min_confidence"] == threshold
    label_topics = sorted({stack.label_topic(label) for label in tiny_bundle.labels})
    routed = stack.read(label_topics, len(texts) - len(unsure), settle=1.0)
    by_id = {orjson.loads(r.value or b"")["id"]: r for r in routed}
    assert len(routed) == len(by_id) and set(by_id) == set(labeled) - unsure  # no unsure record on a label topic
    for rec in routed:
        out = orjson.loads(rec.value or b"")
        assert out["route"] == "label" and out["confidence"] >= threshold and rec.topic == stack.label_topic(out["label"])
    assert stack.stop_worker(stack.workers[0]) == 0

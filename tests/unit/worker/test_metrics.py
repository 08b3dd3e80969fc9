"""The batch counters of worker/metrics.py: records sent to review, by label."""

from __future__ import annotations

from prometheus_client import REGISTRY

from worker import metrics
from worker.records import Prediction


def reviewed(label: str) -> float:
    return REGISTRY.get_sample_value("textstream_review_total", {"label": label}) or 0.0


def test_records_sent_to_review_are_counted_by_label() -> None:
    before = {label: reviewed(label) for label in ("m-spam", "m-ham")}
    preds = [Prediction(label, 0.4, {label: 0.4}, 0, 0.9) for label in ("m-spam", "m-spam", "m-ham")]
    metrics.observe_batch(preds, [], 0.3, reviewed=["m-spam", "m-spam"])
    assert reviewed("m-spam") - before["m-spam"] == 2
    assert reviewed("m-ham") - before["m-ham"] == 0

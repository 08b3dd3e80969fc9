"""Every Prometheus metric the worker exports: one module, base units, `textstream_` prefix.

Served at /metrics on the worker's web port, beside Faust's own transport metrics (`faust_*`).
Histogram buckets are in seconds (faust's sensor documents the ms-vs-seconds bucket trap).
"""

from __future__ import annotations

import collections
from collections.abc import Sequence

from prometheus_client import Counter, Gauge, Histogram

from worker.records import Prediction, Rejected

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
_UNIT_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)

MESSAGES = Counter(
    "textstream_messages_total",
    "Input records by outcome (labeled, dead_lettered) and dead-letter reason ('' when labeled).",
    ["outcome", "reason"],
)
SKIPPED_OFFSETS = Counter(
    "textstream_skipped_offsets_total",
    "Input offsets skipped because their record batch cannot be read by any client (corrupt_batch: one dead "
    "letter per batch, counted in textstream_messages_total).",
)
BATCH_SIZE = Histogram("textstream_batch_size", "Records per micro-batch.", buckets=_BATCH_BUCKETS)
INFERENCE_SECONDS = Histogram(
    "textstream_inference_seconds", "Model time per micro-batch (decode, classify, embed, route).",
    buckets=_LATENCY_BUCKETS,
)
END_TO_END_SECONDS = Histogram(
    "textstream_end_to_end_seconds", "Input record timestamp to outputs acknowledged by Kafka.",
    buckets=_LATENCY_BUCKETS,
)
IN_FLIGHT = Gauge("textstream_in_flight", "Records taken from Kafka whose outputs are not yet acknowledged.")
MODEL_VERSION = Gauge("textstream_model_version", "Model version being served (0 before the first load).")
MODEL_LOADED_AT = Gauge("textstream_model_loaded_timestamp_seconds", "Unix time the served version was loaded.")
MODEL_LOAD_SECONDS = Gauge("textstream_model_load_seconds", "Seconds the served version took to verify, load and warm up.")
RELOADS = Counter("textstream_model_reloads_total", "Model load attempts by result (success, failure).", ["result"])
for _result in ("success", "failure"):
    RELOADS.labels(_result)  # export 0 from the start, so increase() sees the first failure
PREDICTIONS = Counter("textstream_predictions_total", "Labelled records by predicted label.", ["label"])
CONFIDENCE = Histogram("textstream_confidence", "Confidence of the predicted label.", buckets=_UNIT_BUCKETS)
REVIEWED = Counter(
    "textstream_review_total",
    "Labelled records sent to the review topic instead of their label's topic (confidence under the threshold), "
    "by predicted label.",
    ["label"],
)
LSTM_TEXTS = Counter(
    "textstream_lstm_texts_total",
    "Labelled records by whether the classifier's LSTM branch ran for them (false: the n-gram branch decided the "
    "label and route alone, worker/lstm_skip.py).",
    ["ran"],
)
for _ran in ("true", "false"):
    LSTM_TEXTS.labels(_ran)
CLUSTERS = Counter("textstream_cluster_assignments_total", "Labelled records by assigned cluster.", ["cluster"])
NOVEL = Counter(
    "textstream_novel_texts_total",
    "Labelled records whose cosine similarity to their cluster centroid is below TEXTSTREAM_NOVELTY_THRESHOLD.",
)
CONSUMER_LAG = Gauge(
    "textstream_consumer_lag", "Records not yet committed: end offset minus committed offset.", ["topic", "partition"],
)


def observe_batch(predictions: Sequence[Prediction], rejected: Sequence[Rejected], novelty_threshold: float,
                  reviewed: Sequence[str] = ()) -> None:
    """Count one processed batch: outcomes, labels, confidence, clusters, novel texts, records sent to review."""
    if predictions:
        MESSAGES.labels("labeled", "").inc(len(predictions))
    for reason, n in collections.Counter(rej.reason for rej in rejected).items():
        MESSAGES.labels("dead_lettered", reason).inc(n)
    for rej in rejected:
        if rej.reason == "corrupt_batch":
            first = int(dict(rej.headers)["source_first_offset"])
            SKIPPED_OFFSETS.inc(rej.source.offset - first + 1)
    # One update per distinct label and cluster, not per record: this runs on the event loop.
    for label, n in collections.Counter(p.label for p in predictions).items():
        PREDICTIONS.labels(label).inc(n)
    for label, n in collections.Counter(reviewed).items():
        REVIEWED.labels(label).inc(n)
    ran = sum(p.lstm_ran for p in predictions)
    if ran:
        LSTM_TEXTS.labels("true").inc(ran)
    if len(predictions) - ran:
        LSTM_TEXTS.labels("false").inc(len(predictions) - ran)
    for cluster, n in collections.Counter(p.cluster_id for p in predictions).items():
        CLUSTERS.labels(str(cluster)).inc(n)
    novel = sum(1 for p in predictions if p.cluster_similarity < novelty_threshold)
    if novel:
        NOVEL.inc(novel)
    for p in predictions:
        CONFIDENCE.observe(p.confidence)

"""Stage 3: a batch of decoded messages in, one prediction per message out (one model call).

Synchronous and Kafka-free, so unit tests call it directly and the agent runs it in a thread
(blocking code in an agent would block every agent).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from worker.bundle import Bundle
from worker.records import Prediction, TextMessage

PROBE = "a plain text that any model version labels"


def assign_clusters(embeddings: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid by cosine similarity: (cluster ids, similarities). Centroids are unit rows."""
    norms = np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    sims = (embeddings / norms) @ centroids.T
    ids = sims.argmax(axis=1)
    return ids, sims[np.arange(len(ids)), ids]


def predict(bundle: Bundle, messages: Sequence[TextMessage], explain: int | None = None) -> list[Prediction]:
    """Label and cluster every message with one model call; with `explain` (tokens to occlude, may
    be 0), each prediction carries its explanation (worker/explain.py: more model calls)."""
    if not messages:
        return []
    predictions = _predict(bundle, messages)
    if explain is None:
        return predictions
    from worker.explain import explain as explain_texts

    why = explain_texts(bundle, [m.text for m in messages], explain)
    return [dataclasses.replace(p, explanation=w) for p, w in zip(predictions, why, strict=True)]


def _predict(bundle: Bundle, messages: Sequence[TextMessage]) -> list[Prediction]:
    probs, embeddings = bundle.infer([m.text for m in messages])
    cluster_ids, sims = assign_clusters(embeddings, bundle.centroids)
    best = probs.argmax(axis=1)
    labels = bundle.labels
    return [
        Prediction(
            label=labels[b],
            confidence=round(float(p[b]), 6),
            scores={label: round(float(x), 6) for label, x in zip(labels, p, strict=True)},
            cluster_id=int(c),
            cluster_similarity=round(float(s), 6),
        )
        for p, b, c, s in zip(probs, best, cluster_ids, sims, strict=True)
    ]


def predict_each(bundle: Bundle, messages: list[TextMessage], explain: int | None = None) -> list[Prediction | Exception]:
    """One model call for the batch; if it fails, one call per message, so that an input the model
    cannot take is dead-lettered instead of failing its batch again after every restart. When a
    probe text fails too, the fault is the model's or the machine's, not an input's: raise."""
    try:
        return list(predict(bundle, messages, explain))
    except Exception as exc:
        try:
            bundle.infer([PROBE])
        except Exception:
            raise exc from None
        return _one_by_one(bundle, messages, explain)


def _one_by_one(bundle: Bundle, messages: list[TextMessage], explain: int | None) -> list[Prediction | Exception]:
    """Each message's prediction, or the exception the model raised on it alone."""
    results: list[Prediction | Exception] = []
    for msg in messages:
        try:
            results.extend(predict(bundle, [msg], explain))
        except Exception as alone:
            results.append(alone)
    return results

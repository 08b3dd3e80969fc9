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


def predict(bundle: Bundle, messages: Sequence[TextMessage], explain: int | None = None,
            floor: Sequence[float] | None = None, every_text: bool = False) -> list[Prediction]:
    """Label and cluster every message with one model call; with `explain` (tokens to occlude, may
    be 0), each prediction carries its explanation (worker/explain.py: more model calls). `floor`
    (per label, the review threshold) and `every_text` go to the model call (worker/lstm_skip.py)."""
    if not messages:
        return []
    predictions = _predict(bundle, messages, floor, every_text)
    if explain is None:
        return predictions
    from worker.explain import explain as explain_texts

    why = explain_texts(bundle, [m.text for m in messages], explain)
    return [dataclasses.replace(p, explanation=w) for p, w in zip(predictions, why, strict=True)]


def _predict(bundle: Bundle, messages: Sequence[TextMessage], floor: Sequence[float] | None,
             every_text: bool) -> list[Prediction]:
    probs, embeddings, lstm_ran = bundle.infer([m.text for m in messages],
                                               None if floor is None else np.asarray(floor), every_text)
    cluster_ids, sims = assign_clusters(embeddings, bundle.centroids)
    best = probs.argmax(axis=1)
    labels = bundle.labels
    names = bundle.cluster_terms
    return [
        Prediction(
            label=labels[b],
            confidence=round(float(p[b]), 6),
            scores={label: round(float(x), 6) for label, x in zip(labels, p, strict=True)},
            cluster_id=int(c),
            cluster_similarity=round(float(s), 6),
            lstm_ran=bool(r),
            cluster_terms=names[c] if c < len(names) else (),
        )
        for p, b, c, s, r in zip(probs, best, cluster_ids, sims, lstm_ran, strict=True)
    ]


def predict_each(bundle: Bundle, messages: list[TextMessage], explain: int | None = None,
                 floor: Sequence[float] | None = None, every_text: bool = False) -> list[Prediction | Exception]:
    """One model call for the batch; if it fails, one call per message, so that an input the model
    cannot take is dead-lettered instead of failing its batch again after every restart. When a
    probe text fails too, the fault is the model's or the machine's, not an input's: raise."""
    try:
        return list(predict(bundle, messages, explain, floor, every_text))
    except Exception as exc:
        try:
            bundle.infer([PROBE])
        except Exception:
            raise exc from None
        return _one_by_one(bundle, messages, explain, floor, every_text)


def _one_by_one(bundle: Bundle, messages: list[TextMessage], explain: int | None,
                floor: Sequence[float] | None, every_text: bool) -> list[Prediction | Exception]:
    """Each message's prediction, or the exception the model raised on it alone."""
    results: list[Prediction | Exception] = []
    for msg in messages:
        try:
            results.extend(predict(bundle, [msg], explain, floor, every_text))
        except Exception as alone:
            results.append(alone)
    return results

"""The pure core: a batch of decoded messages in, one prediction per message out.

Synchronous and Kafka-free, so unit tests call it directly and the agent runs it in a thread
(blocking code in an agent would block every agent).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from worker.bundle import Bundle
from worker.codec import Prediction, TextMessage


def assign_clusters(embeddings: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid by cosine similarity: (cluster ids, similarities). Centroids are unit rows."""
    norms = np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    sims = (embeddings / norms) @ centroids.T
    ids = sims.argmax(axis=1)
    return ids, sims[np.arange(len(ids)), ids]


def predict(bundle: Bundle, messages: Sequence[TextMessage]) -> list[Prediction]:
    """Label and cluster every message with one model call."""
    if not messages:
        return []
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

"""Held-out figures: classification against the labels, clusters against the labels (never used to fit them)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    adjusted_rand_score,
    confusion_matrix,
    f1_score,
    normalized_mutual_info_score,
    precision_recall_fscore_support,
    silhouette_score,
)

HEADLINE = ("accuracy", "macro_f1", "nmi", "ari", "purity", "silhouette")


def _r(x: float) -> float:
    return round(float(x), 4)


def classification(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix (rows: true)."""
    idx = list(range(len(labels)))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=idx, zero_division=0)
    return {
        "accuracy": _r(accuracy_score(y_true, y_pred)),
        "macro_f1": _r(f1_score(y_true, y_pred, labels=idx, average="macro", zero_division=0)),
        "per_class": {
            name: {"precision": _r(p), "recall": _r(r), "f1": _r(f), "support": int(s)}
            for name, p, r, f, s in zip(labels, precision, recall, f1, support, strict=True)
        },
        "confusion": confusion_matrix(y_true, y_pred, labels=idx).tolist(),
    }


def purity(y_true: np.ndarray, clusters: np.ndarray) -> float:
    """Share of texts whose cluster's most common label is their own."""
    total = 0
    for c in np.unique(clusters):
        total += int(np.bincount(y_true[clusters == c]).max())
    return total / max(len(y_true), 1)


def clustering(y_true: np.ndarray, clusters: np.ndarray, embeddings: np.ndarray, seed: int = 0,
               sample: int = 3000) -> dict[str, Any]:
    """NMI, ARI and purity against the labels; cosine silhouette of the embeddings (sampled)."""
    n_found = len(np.unique(clusters))
    silhouette = 0.0
    if 1 < n_found < len(clusters):
        size = min(sample, len(clusters))
        silhouette = float(silhouette_score(embeddings, clusters, metric="cosine", sample_size=size, random_state=seed))
    return {
        "nmi": _r(normalized_mutual_info_score(y_true, clusters)),
        "ari": _r(adjusted_rand_score(y_true, clusters)),
        "purity": _r(purity(y_true, clusters)),
        "silhouette": _r(silhouette),
        "sizes": np.bincount(clusters).tolist(),
    }


def headline(cls: dict[str, Any], clu: dict[str, Any]) -> dict[str, float]:
    """The figures that go to the manifest's `metrics` and the gate."""
    both = {**cls, **clu}
    return {k: float(both[k]) for k in HEADLINE}


def cluster_ablation(stages: dict[str, np.ndarray], y_true: np.ndarray) -> dict[str, float]:
    """NMI of each clusterer stage's partition (training/clusterer.py `stages`) against the labels."""
    return {name: _r(normalized_mutual_info_score(y_true, part)) for name, part in stages.items()}

"""Held-out figures on small hand-made arrays, checked by hand (and against sklearn where it is the definition)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from training import evaluate

LABELS = ["a", "b", "c"]
Y_TRUE = np.array([0, 0, 1, 1, 2, 2])
Y_PRED = np.array([0, 1, 1, 1, 2, 0])


def test_classification_figures() -> None:
    out = evaluate.classification(Y_TRUE, Y_PRED, LABELS)
    assert out["accuracy"] == 0.6667  # 4 of 6 right
    # a: predicted at 0 (right) and 5 (wrong), true at 0, 1 -> P 1/2, R 1/2, F1 1/2
    # b: predicted at 1 (wrong), 2, 3 -> P 2/3, R 2/2, F1 0.8
    # c: predicted at 4 (right), true at 4, 5 -> P 1, R 1/2, F1 2/3
    assert out["per_class"] == {
        "a": {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2},
        "b": {"precision": 0.6667, "recall": 1.0, "f1": 0.8, "support": 2},
        "c": {"precision": 1.0, "recall": 0.5, "f1": 0.6667, "support": 2},
    }
    assert out["macro_f1"] == round((0.5 + 0.8 + 2 / 3) / 3, 4) == 0.6556
    assert out["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]  # rows: true class


def test_classification_keeps_every_class_even_one_absent_from_the_split() -> None:
    out = evaluate.classification(Y_TRUE, Y_PRED, [*LABELS, "d"])
    assert list(out["per_class"]) == ["a", "b", "c", "d"]
    assert out["per_class"]["d"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert out["macro_f1"] == round((0.5 + 0.8 + 2 / 3 + 0) / 4, 4)  # the absent class counts as 0
    assert out["confusion"] == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]


def test_classification_perfect() -> None:
    out = evaluate.classification(Y_TRUE, Y_TRUE, LABELS)
    assert out["accuracy"] == 1.0 and out["macro_f1"] == 1.0
    assert out["confusion"] == [[2, 0, 0], [0, 2, 0], [0, 0, 2]]


@pytest.mark.parametrize(
    ("y_true", "clusters", "expected"),
    [
        ([0, 0, 1, 1, 2, 2], [0, 0, 0, 1, 1, 1], 4 / 6),  # cluster 0: a a b -> 2; cluster 1: b c c -> 2
        ([0, 0, 1, 1], [5, 5, 3, 3], 1.0),  # cluster ids need not match label ids
        ([0, 1, 2, 0], [0, 0, 0, 0], 2 / 4),  # one cluster: the share of the commonest label
        ([0, 1, 2], [0, 1, 2], 1.0),  # singletons are trivially pure
    ],
)
def test_purity(y_true: list[int], clusters: list[int], expected: float) -> None:
    assert evaluate.purity(np.array(y_true), np.array(clusters)) == pytest.approx(expected)


def test_purity_of_nothing_is_zero() -> None:
    assert evaluate.purity(np.array([], dtype=int), np.array([], dtype=int)) == 0.0


def test_clustering_of_perfect_separated_clusters() -> None:
    """Two clusters on orthogonal directions: cosine distance 0 inside, 1 across, so silhouette is 1."""
    y_true = np.array([0, 0, 0, 1, 1, 1])
    clusters = np.array([1, 1, 1, 0, 0, 0])  # the labels, renamed
    emb = np.array([[1, 0], [2, 0], [0.5, 0], [0, 1], [0, 3], [0, 0.2]], dtype=np.float32)
    out = evaluate.clustering(y_true, clusters, emb)
    assert out == {"nmi": 1.0, "ari": 1.0, "purity": 1.0, "silhouette": 1.0, "sizes": [3, 3]}


def test_clustering_figures_of_an_imperfect_split() -> None:
    y_true = np.array([0, 0, 1, 1, 2, 2])
    clusters = np.array([0, 0, 0, 2, 2, 2])  # cluster 1 is empty
    emb = np.array([[1, 0], [1, 0.1], [1, 0.2], [0, 1], [0.1, 1], [0.2, 1]])
    out = evaluate.clustering(y_true, clusters, emb)
    assert out["purity"] == 0.6667
    assert out["sizes"] == [3, 0, 3]
    assert out["nmi"] == round(normalized_mutual_info_score(y_true, clusters), 4)
    assert out["ari"] == round(adjusted_rand_score(y_true, clusters), 4)
    # by hand: pairs together in both 1 + 1 = 2; in the labels 3 x C(2,2) = 3; in the clusters 2 x C(3,2) = 6;
    # expected 3 * 6 / C(6,2) = 1.2; ARI = (2 - 1.2) / ((3 + 6) / 2 - 1.2) = 0.8 / 3.3
    assert out["ari"] == 0.2424
    assert 0 < out["nmi"] < 1 and out["ari"] < 1
    # tight, well separated groups: high, but not perfect
    assert 0.9 < out["silhouette"] < 1.0


def test_silhouette_by_hand() -> None:
    """Points at 0°, 0° and 90°: cosine distances 0 (first two) and 1 (to the third).
    Point 0: a = 0, b = 1 -> 1; point 1 likewise; point 2 is alone in its cluster -> 0. Mean 2/3."""
    out = evaluate.clustering(np.array([0, 0, 1]), np.array([0, 0, 1]), np.array([[1.0, 0], [3.0, 0], [0, 1.0]]))
    assert out["silhouette"] == pytest.approx(2 / 3, abs=1e-4)


@pytest.mark.parametrize("clusters", [[0, 0, 0, 0], [0, 1, 2, 3]])
def test_silhouette_is_zero_when_undefined(clusters: list[int]) -> None:
    """One cluster, or one per text: silhouette is undefined and reported as 0 instead of raising."""
    out = evaluate.clustering(np.array([0, 0, 1, 1]), np.array(clusters), np.eye(4))
    assert out["silhouette"] == 0.0
    assert out["sizes"] == np.bincount(clusters).tolist()


def test_headline_takes_the_gate_figures_as_floats() -> None:
    cls = evaluate.classification(Y_TRUE, Y_PRED, LABELS)
    clu = evaluate.clustering(Y_TRUE, np.array([0, 0, 0, 1, 1, 1]), np.eye(6)[:, :3] + 0.1)
    head = evaluate.headline(cls, clu)
    assert list(head) == list(evaluate.HEADLINE)
    assert head["accuracy"] == 0.6667 and head["purity"] == 0.6667
    assert all(type(v) is float for v in head.values())
    assert "per_class" not in head and "sizes" not in head

"""Stage 3: one model call labels and clusters a batch."""

from __future__ import annotations

import numpy as np
import pytest

from tests.unit.worker.fakes import fake_bundle
from worker import predict
from worker.records import Prediction, Source, TextMessage

TEXTS = [
    "The central bank raised interest rates as inflation and company profits worried markets.",
    "The striker scored twice as the team won the cup final in front of a record crowd.",
    "The new smartphone chip makes software run faster and saves battery on mobile phones.",
]


def messages(texts: list[str]) -> list[TextMessage]:
    return [TextMessage(f"m{i}", t, Source("texts.raw", 0, i)) for i, t in enumerate(texts)]


def test_assign_clusters_uses_cosine_similarity() -> None:
    centroids = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    ids, sims = predict.assign_clusters(np.array([[10.0, 1.0], [0.1, 3.0], [-1.0, -1.0]]), centroids)
    assert ids.tolist() == [0, 1, 0]
    assert sims[0] == pytest.approx(10 / np.sqrt(101))
    assert sims[2] == pytest.approx(-1 / np.sqrt(2))


def test_predict_gives_one_prediction_per_message(tiny_bundle) -> None:  # type: ignore[no-untyped-def]
    preds = predict.predict(tiny_bundle, messages(TEXTS))
    assert len(preds) == len(TEXTS)
    for p in preds:
        assert p.label in tiny_bundle.labels
        assert set(p.scores) == set(tiny_bundle.labels)
        assert sum(p.scores.values()) == pytest.approx(1.0, abs=1e-4)
        assert p.confidence == max(p.scores.values())
        assert 0 <= p.cluster_id < tiny_bundle.centroids.shape[0]
        assert -1.0 <= p.cluster_similarity <= 1.0
        assert list(p.cluster_terms) == tiny_bundle.manifest["cluster_terms"][p.cluster_id] and p.cluster_terms
    assert predict.predict(tiny_bundle, []) == []


@pytest.mark.parametrize("terms", [None, [["a"]], "abc", [["a"], 3, ["b"], ["c"], ["d"]]])
def test_a_version_without_cluster_names_gives_none(tiny_bundle, terms: object) -> None:  # type: ignore[no-untyped-def]
    """Versions trained before clusters had names (or a list that does not fit) serve no terms."""
    import dataclasses

    from worker.bundle import cluster_names

    names = cluster_names({**tiny_bundle.manifest, "cluster_terms": terms}, len(tiny_bundle.centroids))
    assert names == ()
    unnamed = dataclasses.replace(tiny_bundle, cluster_terms=names)
    assert [p.cluster_terms for p in predict.predict(unnamed, messages(TEXTS))] == [(), (), ()]


def test_predict_is_deterministic_and_batch_independent(tiny_bundle) -> None:  # type: ignore[no-untyped-def]
    together = predict.predict(tiny_bundle, messages(TEXTS))
    alone = [predict.predict(tiny_bundle, messages([t]))[0] for t in TEXTS]
    for a, b in zip(together, alone, strict=True):
        assert a.label == b.label and a.cluster_id == b.cluster_id
        assert a.confidence == pytest.approx(b.confidence, abs=1e-4)


def test_a_text_without_a_single_token_alone_in_its_batch_is_labelled(tiny_bundle) -> None:  # type: ignore[no-untyped-def]
    # Keras' LSTM fails on a call whose texts have no tokens at all (zero steps): before the packed
    # LSTM such a record, alone in a batch, failed the batch after every restart.
    (pred,) = predict.predict(tiny_bundle, messages(["!!! ???"]))
    assert pred.label in tiny_bundle.labels


def test_predict_each_retries_one_by_one_and_returns_the_error_of_the_input_that_fails() -> None:
    results = predict.predict_each(fake_bundle("poison"), messages(["sport news", "a poison text", "tech news"]))
    assert [r.label if isinstance(r, Prediction) else repr(r) for r in results] == [
        "sport", "ValueError(\"cannot take 'poison'\")", "tech"]


def test_predict_each_raises_when_the_probe_fails_too() -> None:
    with pytest.raises(ValueError, match="cannot take"):  # the model's fault, not an input's: the batch fails
        predict.predict_each(fake_bundle("plain"), messages(["plain sport news"]))  # predict.PROBE is plain too


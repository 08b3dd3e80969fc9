"""Temperature scaling, expected calibration error and the reliability table, on synthetic logits
whose true probabilities are known, and on the classifier's own layers."""

from __future__ import annotations

import numpy as np
import pytest

from training import calibration
from training.calibration import expected_calibration_error, fit_temperature, log_softmax, nll, reliability, rescale


def synthetic(n: int = 4000, k: int = 4, sharpen: float = 3.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(z), and a model that reports softmax(sharpen · z): overconfident
    for sharpen > 1, underconfident below 1. The right temperature is `sharpen`."""
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=1.5, size=(n, k))
    p = np.exp(log_softmax(z))
    y = np.array([rng.choice(k, p=row) for row in p])
    return sharpen * z, y


@pytest.mark.parametrize("sharpen", [3.0, 0.5])
def test_the_fitted_temperature_undoes_over_and_underconfidence(sharpen: float) -> None:
    logits, y = synthetic(sharpen=sharpen)
    t = fit_temperature(logits, y)
    assert t == pytest.approx(sharpen, rel=0.1)
    assert nll(logits, y, t) < nll(logits, y) - 0.05
    probs = np.exp(log_softmax(logits))
    calibrated = rescale(probs, t)
    before, after = expected_calibration_error(probs, y), expected_calibration_error(calibrated, y)
    assert after < before / 2 and after < 0.03, (before, after)
    assert np.array_equal(calibrated.argmax(axis=1), probs.argmax(axis=1))  # the labels stay the same


def test_rescaling_probabilities_equals_dividing_the_logits() -> None:
    logits, _ = synthetic(n=50)
    probs = np.exp(log_softmax(logits))
    assert np.allclose(rescale(probs, 2.5), np.exp(log_softmax(logits / 2.5)), atol=1e-9)
    assert np.allclose(rescale(rescale(probs, 2.5), 1 / 2.5), probs, atol=1e-9)  # the report's "before"
    assert rescale(probs, 1.0) is probs


def test_a_calibrated_model_keeps_its_temperature_near_one() -> None:
    logits, y = synthetic(sharpen=1.0)
    assert fit_temperature(logits, y) == pytest.approx(1.0, abs=0.1)


def test_nothing_to_fit_on_leaves_the_model_as_it_is() -> None:
    assert fit_temperature(np.zeros((0, 3)), np.zeros(0, dtype=int)) == 1.0
    assert fit_temperature(np.ones((5, 3)), np.array([0, 1, 2, 0, 1])) == 1.0  # every logit equal


def test_reliability_bins_split_texts_by_confidence_over_0_to_1() -> None:
    probs = np.array([[0.95, 0.05], [0.55, 0.45], [0.52, 0.48], [0.3, 0.7], [1.0, 0.0]])
    y = np.array([0, 1, 0, 1, 0])
    table = reliability(probs, y, bins=10)
    assert len(table) == 10 and sum(b.count for b in table) == 5
    assert (table[0].lower, table[-1].upper) == (0.0, 1.0)
    fifth = table[5]  # (0.5, 0.6]: 0.55 (wrong) and 0.52 (right)
    assert fifth.count == 2 and fifth.accuracy == 0.5 and fifth.confidence == pytest.approx(0.535)
    assert table[9].count == 2 and table[9].accuracy == 1.0  # 0.95 and exactly 1.0
    assert table[6].count == 1 and np.isnan(table[1].confidence)  # 0.7; an empty bin
    # ECE weighs each bin's |accuracy - confidence| by its share of the texts.
    expected = (2 * abs(0.5 - 0.535) + 1 * abs(1.0 - 0.7) + 2 * abs(1.0 - 0.975)) / 5
    assert expected_calibration_error(probs, y, bins=10) == pytest.approx(expected)


def test_summary_records_the_temperature_and_ece_before_and_after() -> None:
    logits, y = synthetic(sharpen=3.0, seed=1)
    t = fit_temperature(logits, y)
    served = rescale(np.exp(log_softmax(logits)), t)
    s = calibration.summary(served, y, t, {"val_nll_before": 1.0, "val_nll_after": 0.8})
    assert s["method"] == "temperature" and s["temperature"] == round(t, 4) and s["bins"] == 15
    ev = s["evaluation"]
    assert ev["texts"] == len(y) and ev["ece_after"] < ev["ece_before"] and ev["nll_after"] < ev["nll_before"]


def test_the_saved_classifier_divides_its_mixed_logits_by_the_temperature() -> None:
    """apply_mix writes the temperature into the model: the classifier then serves
    softmax((a·deep + b·wide) / T), the same labels with softer scores."""
    from training import classifier
    from training.config import ClassifierConfig

    texts = [f"{w} story number {i} about {w}" for i in range(30) for w in ("sport", "money", "films")]
    cfg = ClassifierConfig(vocab_size=200, sequence_length=16, embedding_dim=4, lstm_units=4, bidirectional=False,
                           ngram_vocab=300)
    branches = classifier.build(texts, 3, cfg)
    raw = classifier.predict(branches.classifier, texts)  # softmax(deep + wide), untrained weights
    classifier.apply_mix(branches, {"mix": [{"lstm_weight": 1.0, "ngram_weight": 1.0}],
                                    "calibration": [{"temperature": 2.0}]})
    served = classifier.predict(branches.classifier, texts)
    assert np.allclose(served, rescale(raw, 2.0), atol=1e-5)
    assert np.array_equal(served.argmax(axis=1), raw.argmax(axis=1))
    assert classifier.temperature({}) == 1.0  # a history without calibration: T = 1

"""Skipping the LSTM where it cannot change the label or the route (worker/lstm_skip.py): the labels
and routes are those of running both branches on every text, over the benchmark mix and the bundled
corpora, and a skipped text's confidence is a lower bound of the full model's."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import keras
import numpy as np
import orjson
import pytest

from worker import bundle, lstm_skip

REPO = Path(__file__).resolve().parents[3]
# bench/throughput.py's mix (BBC News + Enron emails) and the SMS test set: news, mail and short texts
CORPORA = ("bbc_news_test", "enron_spam_sample", "sms_spam_test")
PER_CORPUS = 400


@pytest.fixture(scope="module")
def texts() -> list[str]:
    found: list[str] = []
    for name in CORPORA:
        with gzip.open(REPO / "data" / f"{name}.jsonl.gz") as f:
            found += [orjson.loads(line)["text"] for _, line in zip(range(PER_CORPUS), f, strict=False)]
    return found


def models(registry: Path, lstm_scale: float, legacy: bool = False) -> tuple[Any, Any]:
    """The tiny version's classifier, its trained LSTM features read by a seeded random `deep_logits`
    head of standard deviation `lstm_scale`, weighed 2 and bounded at -8 (the tiny mix weighs the
    LSTM 0, and the bound must hold for any head); with `legacy`, rewired as versions before the
    bound layer were: `deep_logits` added to the n-gram margins as they are."""
    folder = registry / "1"
    classifier = keras.saving.load_model(folder / bundle.CLASSIFIER, compile=False, safe_mode=True)
    encoder = keras.saving.load_model(folder / bundle.ENCODER, compile=False, safe_mode=True)
    head = classifier.get_layer("deep_logits")
    rng = np.random.default_rng(7)
    head.set_weights([rng.normal(0, lstm_scale, w.shape).astype(np.float32) for w in head.get_weights()])
    classifier.get_layer("deep_bounded").set_bound(2.0, 8.0)
    if legacy:
        logits = keras.layers.Add(name="logits")([head.output, classifier.get_layer("wide_logits").output])
        classifier = keras.Model(classifier.input, keras.layers.Activation("softmax", name="scores")(logits))
    return classifier, encoder


@pytest.fixture(scope="module", params=["bounded", "legacy"])
def strong(request: pytest.FixtureRequest, tiny_registry: Path) -> tuple[Any, Any]:
    """At 2.5 the LSTM is needed for about a third of the texts and changes the n-gram branch's label
    of a few of them."""
    return models(tiny_registry, 2.5, legacy=request.param == "legacy")


@pytest.fixture(scope="module")
def strong_lstm(strong: tuple[Any, Any]) -> bundle.InferFn:
    return bundle.compile_infer(*strong)


def test_the_bound_layer_gives_each_class_between_minus_scale_times_bound_and_0(tiny_registry: Path) -> None:
    classifier, _ = models(tiny_registry, 2.5)
    layer = classifier.get_layer("deep_bounded")
    layer.set_bound(0.3, 8.0)
    lo = lstm_skip.deep_bounds(classifier)
    n = classifier.output_shape[-1]
    assert lo is not None and np.allclose(lo, -2.4 * (1 - np.eye(n)))
    logits = np.random.default_rng(0).normal(0, 30, (5000, n)).astype(np.float32)
    out = np.asarray(layer(logits))
    assert out.min() >= -2.4 - 1e-5 and out.max() <= 0.0


def test_the_legacy_bound_holds_for_any_lstm_features(tiny_registry: Path) -> None:
    classifier, _ = models(tiny_registry, 2.5, legacy=True)
    lo = lstm_skip.deep_bounds(classifier)
    assert lo is not None and np.allclose(np.diag(lo), 0.0)
    kernel, bias = classifier.get_layer("deep_logits").get_weights()
    rng = np.random.default_rng(0)
    # random features in [-1, 1] and the corners that reach each pair's bound
    features = np.vstack([rng.uniform(-1, 1, (2000, kernel.shape[0])), rng.choice([-1.0, 1.0], (2000, kernel.shape[0]))])
    logits = features @ kernel + bias
    for w in range(kernel.shape[1]):
        for k in range(kernel.shape[1]):
            assert (logits[:, w] - logits[:, k]).min() >= lo[w, k] - 1e-5
            corner = -np.sign(kernel[:, w] - kernel[:, k])  # the features that pull w down against k most
            assert float(corner @ (kernel[:, w] - kernel[:, k]) + bias[w] - bias[k]) == pytest.approx(lo[w, k], abs=1e-4)


def test_labels_are_those_of_both_branches_on_every_text_and_confidence_a_lower_bound(
        strong: tuple[Any, Any], strong_lstm: bundle.InferFn, texts: list[str]) -> None:
    full, fast = strong_lstm(texts, every_text=True), strong_lstm(texts)
    assert full.lstm_ran.all()
    share = fast.lstm_ran.mean()
    assert 0.05 < share < 0.95, share  # both paths taken
    assert (fast.probs.argmax(axis=1) == full.probs.argmax(axis=1)).all()
    changed = (full.probs.argmax(axis=1) != ngram_labels(strong[0], texts)).sum()
    print(f"LSTM needed for {share:.1%}; it changes the n-gram label of {changed} of {len(texts)}")
    assert changed >= 3  # the LSTM matters
    np.testing.assert_allclose(fast.probs[fast.lstm_ran], full.probs[fast.lstm_ran], atol=1e-6)
    np.testing.assert_allclose(fast.embeddings, full.embeddings, atol=1e-6)
    skipped = ~fast.lstm_ran
    assert (fast.probs[skipped].max(axis=1) <= full.probs[skipped].max(axis=1) + 1e-6).all()
    np.testing.assert_allclose(fast.probs.sum(axis=1), 1.0, atol=1e-5)


def ngram_labels(classifier: Any, texts: list[str]) -> np.ndarray:
    """The n-gram branch's labels alone."""
    import tensorflow as tf

    wide = keras.Model(classifier.input, classifier.get_layer("wide_logits").output)
    return np.concatenate([np.asarray(wide(tf.constant(texts[i:i + 256])[:, None])).argmax(axis=1)
                           for i in range(0, len(texts), 256)])


@pytest.mark.parametrize("floors", [0.5, 0.9, 0.99, {"business": 0.95, "sport": 0.6}])
def test_routes_are_those_of_both_branches_at_review_thresholds(
        strong_lstm: bundle.InferFn, tiny_bundle: bundle.Bundle, texts: list[str], floors: Any) -> None:
    floor = np.array([floors.get(label, 0.0) if isinstance(floors, dict) else floors for label in tiny_bundle.labels])
    full, fast = strong_lstm(texts, every_text=True), strong_lstm(texts, floor)
    best = full.probs.argmax(axis=1)
    assert (fast.probs.argmax(axis=1) == best).all()
    under_full = full.probs.max(axis=1) < floor[best]
    under_fast = fast.probs.max(axis=1) < floor[best]
    assert (under_fast == under_full).all()
    assert fast.lstm_ran.mean() >= strong_lstm(texts).lstm_ran.mean()  # a threshold needs the LSTM more often


def test_no_text_needs_an_lstm_that_the_mix_weighs_zero(tiny_registry: Path, texts: list[str]) -> None:
    classifier, encoder = models(tiny_registry, 2.5)
    classifier.get_layer("deep_bounded").set_bound(0.0, 4.0)
    infer = bundle.compile_infer(classifier, encoder)
    fast, full = infer(texts), infer(texts, every_text=True)
    assert not fast.lstm_ran.any()
    np.testing.assert_allclose(fast.probs, full.probs, atol=1e-6)  # the bound is then the model itself


def test_a_model_without_an_ngram_branch_runs_the_lstm_for_every_text() -> None:
    text = keras.Input(shape=(1,), dtype="string")
    out = keras.layers.Dense(2, name="deep_logits")(keras.layers.Lambda(lambda s: keras.ops.ones((keras.ops.shape(s)[0], 3)),
                                                                        output_shape=(3,))(text))
    assert lstm_skip.deep_bounds(keras.Model(text, out)) is None

"""The packed LSTM computes what Keras computes, for every shape of batch the worker sees."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

from training import classifier
from training.config import ClassifierConfig
from worker import bundle, packed_lstm

WORDS = ["market", "shares", "fell", "sharply", "after", "the", "central", "bank", "raised", "interest", "rates", "again", "while", "the", "striker", "scored", "twice", "in", "the", "final", "minutes", "of", "a", "match", "the", "home", "side", "had", "led"]

# Empty and punctuation-only texts (no tokens), one word, texts shorter and longer than the cut, and
# equal lengths (a stable sort must not mix their rows up).
TEXTS = ["", "!!!", "market", *(" ".join(WORDS[i % len(WORDS)] for i in range(k, k + n))
                                  for k, n in ((0, 3), (5, 17), (2, 30), (7, 30), (1, 45), (3, 200)))]


def build(**overrides: Any) -> Any:
    settings: dict[str, Any] = {"vocab_size": 200, "sequence_length": 40, "head_fraction": 0.75, "embedding_dim": 8,
                                "lstm_units": 6, "ngram_vocab": 300, **overrides}
    cfg = ClassifierConfig(**settings)
    model = classifier.build([" ".join(WORDS)] * 3, 4, cfg).classifier
    rng = np.random.default_rng(0)  # weights far from Keras' zero biases, so every gate matters
    model.set_weights([rng.normal(0, 0.5, w.shape).astype(w.dtype) for w in model.get_weights()])
    return model


@pytest.mark.parametrize("overrides", [{}, {"bidirectional": False}, {"ngram_vocab": 0}],
                         ids=["bilstm+ngrams", "lstm+ngrams", "bilstm-only"])
def test_packed_probabilities_equal_keras(overrides: dict[str, Any]) -> None:
    model = build(**overrides)
    packed = packed_lstm.classifier_fn(model)
    assert packed is not None
    for texts in (TEXTS, TEXTS[::-1], TEXTS[3:4]):
        column = tf.constant(texts)[:, None]
        expected = model(column, training=False).numpy()
        np.testing.assert_allclose(packed(column).numpy(), expected, atol=1e-6)
    # Texts without a single token, on their own: Keras' LSTM fails on zero steps (the worker
    # would fail the batch on every restart); the packed one gives what Keras gives them in company.
    expected = model(tf.constant(["", "!!!", "market"])[:, None], training=False).numpy()[:2]
    np.testing.assert_allclose(packed(tf.constant(["", "!!!"])[:, None]).numpy(), expected, atol=1e-6)


def test_the_compiled_call_uses_it_and_agrees_with_keras_over_chunks() -> None:
    model = build()
    encoder = keras.Sequential([keras.Input(shape=(1,), dtype="string"),
                                keras.layers.Lambda(lambda s: tf.ones((tf.shape(s)[0], 3)), output_shape=(3,))])
    texts = TEXTS[2:] * 5  # several length-sorted chunks of 8, each with a token at least (for Keras)
    fast, slow = bundle.compile_infer(model, encoder, chunk=8), bundle.compile_infer(model, encoder, chunk=8, packed=False)
    np.testing.assert_allclose(fast(texts, every_text=True).probs, slow(texts).probs, atol=1e-6)
    assert fast(["!!!"])[0].shape == (1, 4)


def test_models_of_another_shape_run_through_keras() -> None:
    text = keras.Input(shape=(1,), dtype="string")
    ids = keras.layers.TextVectorization(max_tokens=50, output_sequence_length=10, vocabulary=sorted(set(WORDS)))(text)
    x = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(52, 4)(ids))
    other = keras.Model(text, keras.layers.Dense(2, activation="softmax")(x))
    assert packed_lstm.classifier_fn(other) is None
    # An LSTM with another activation is not the one the packed loop computes.
    assert packed_lstm.classifier_fn(build(bidirectional=False)) is not None
    changed = build(bidirectional=False)
    changed.get_layer("lstm").cell.activation = keras.activations.relu
    assert packed_lstm.classifier_fn(changed) is None

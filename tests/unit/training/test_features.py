"""The text-processing layers the saved models run, and the vocabularies built for them."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.feature_extraction.text import TfidfVectorizer

from training import features
from worker import layers


def test_standardize_spaces_out_cjk_and_drops_punctuation() -> None:
    out = layers.standardize(tf.constant(["Hello, World! 北京欢迎你 ÉCOLE don't £5"])).numpy()[0].decode()
    assert out.split() == ["hello", "world", "北", "京", "欢", "迎", "你", "école", "don", "t", "5"]


def test_cjk_text_gets_character_ngrams_and_english_word_ngrams() -> None:
    assert features.unspaced_share(["体育新闻：球队夺冠 NBA", "股市今日大涨"]) > 0.5
    assert features.unspaced_share(["The team won the cup", "北京"]) < 0.5
    toks = next(features.tokens(["球队夺冠"], ngrams=2))
    assert toks == [t.encode() for t in ["球", "队", "夺", "冠", "球 队", "队 夺", "夺 冠"]]
    # character mode keeps punctuation and spaces as characters, like scikit-learn's char analyzer
    chars = next(features.tokens(["《夺冠》 A"], ngrams=1, characters=True))
    assert chars == [t.encode() for t in ["《", "夺", "冠", "》", " ", "a"]]


def test_head_tail_keeps_the_start_and_the_end_of_long_texts() -> None:
    cut = layers.HeadTail(5, 2)
    ids = tf.constant([[1, 2, 3, 4, 5, 6, 7, 0, 0], [1, 2, 3, 0, 0, 0, 0, 0, 0], [1, 2, 3, 4, 5, 0, 0, 0, 0]])
    assert cut(ids).numpy().tolist() == [[1, 2, 5, 6, 7], [1, 2, 3, 0, 0], [1, 2, 3, 4, 5]]
    assert cut(tf.constant([[1, 2, 0]])).numpy().tolist() == [[1, 2, 0]]  # no wider than the batch needs


def test_masked_max_pool_ignores_padding() -> None:
    x = tf.constant(np.arange(12, dtype=np.float32).reshape(2, 3, 2) - 6)
    mask = tf.constant([[True, False, False], [False, False, False]])
    assert layers.MaskedMaxPool()(x, mask=mask).numpy().tolist() == [[-6.0, -5.0], [0.0, 0.0]]


def test_sublinear_tfidf_matches_scikit_learn() -> None:
    texts = ["the cat sat on the mat the end", "dogs bark at the cat", "a mat for dogs and cats"]
    vocab = features.build_vocabulary(texts, 100, ngrams=1, single_letters=False)
    counts, tfidf = features.tfidf_features(vocab, "t")
    ours = tf.sparse.to_dense(tfidf(counts(tf.constant(texts)))).numpy()[:, 1:]
    sk = TfidfVectorizer(sublinear_tf=True, vocabulary=vocab.terms)
    assert np.allclose(ours, sk.fit_transform(texts).toarray(), atol=1e-5)


def test_vocabulary_filters_by_document_frequency_and_stop_words() -> None:
    texts = ["apple banana the", "apple cherry the", "apple banana the", "durian the"]
    vocab = features.build_vocabulary(texts, 10, min_df=2, max_df=0.7, stop_words=features.STOP_WORDS)
    assert vocab.terms == ["banana"]  # apple/the in > 70 %, cherry/durian in one text, 'the' a stop word
    assert vocab.df.tolist() == [2.0]


def test_a_model_with_the_custom_layers_reloads_in_safe_mode(tmp_path: Path) -> None:
    texts = ["short one", "a much longer text with many more words than the others have"]
    vocab = features.build_vocabulary(texts, 50)
    text = keras.Input(shape=(1,), dtype="string")
    ids = layers.HeadTail(4, 2)(features.sequence_vectorizer(vocab)(text))
    pooled = layers.MaskedMaxPool()(keras.layers.Embedding(len(vocab.terms) + 2, 3, mask_zero=True)(ids))
    counts, tfidf = features.tfidf_features(vocab, "w")
    out = keras.layers.Add()([keras.layers.Dense(2)(pooled), keras.layers.Dense(2)(tfidf(counts(text)))])
    model = keras.Model(text, out)
    batch = tf.constant(texts)[:, None]
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", compile=False, safe_mode=True)
    assert np.allclose(loaded(batch).numpy(), model(batch).numpy(), atol=1e-6)
    # batch independence: a text scores the same alone as next to a longer one
    assert np.allclose(loaded(batch[:1]).numpy(), loaded(batch).numpy()[:1], atol=1e-6)


def test_head_tail_refuses_a_head_longer_than_the_length() -> None:
    with pytest.raises(ValueError, match="head=6"):
        layers.HeadTail(5, 6)

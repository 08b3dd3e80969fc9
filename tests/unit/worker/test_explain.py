"""Per-record explanations (worker/explain.py): exact for the n-gram branch, occlusion for the LSTM."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from tests.factories import NEWS
from worker import config, explain
from worker.errors import ConfigError
from worker.pipeline import process
from worker.records import RawRecord, Source

MAIL = [*NEWS, "Free entry! Win a prize now, reply to claim the cash before tomorrow."]


def keras_wide_logits(classifier: Any, texts: list[str]) -> np.ndarray:
    """The n-gram branch's logits as Keras computes them from the saved model's own layers."""
    import keras
    import tensorflow as tf

    wide = keras.Model(classifier.input, classifier.get_layer("wide_logits").output)
    return np.asarray(wide(tf.constant(texts)[:, None], training=False))


def test_linear_contributions_and_bias_sum_to_the_ngram_branch_logit(tiny_bundle: Any) -> None:
    found = explain.explain(tiny_bundle, MAIL)
    probs = tiny_bundle.infer(MAIL).probs
    wide = keras_wide_logits(tiny_bundle.classifier, MAIL)
    for text, why, p, w in zip(MAIL, found, probs, wide, strict=True):
        assert why is not None and why["label"] == tiny_bundle.labels[int(p.argmax())]  # the model's own label
        label = tiny_bundle.labels.index(why["label"])
        shown = [x["weight"] for x in why["linear"]]
        assert 0 < len(shown) <= explain.TOP_NGRAMS
        assert sum(shown) + why["linear_rest"] + why["linear_bias"] == pytest.approx(float(w[label]), rel=2e-6, abs=1e-4)
        assert why["linear_logit"] == pytest.approx(float(w[label]), rel=1e-6, abs=1e-5)  # float32, rounded
        assert [abs(x) for x in shown] == sorted((abs(x) for x in shown), reverse=True)
        words = " ".join(text.lower().replace(",", " ").replace(".", " ").replace("!", " ").split())
        assert all(f" {x['ngram']} " in f" {words} " for x in why["linear"])  # n-grams of this text only


def test_the_setting_off_means_no_field_and_on_adds_it_to_the_published_record(tiny_bundle: Any) -> None:
    records = [RawRecord(orjson.dumps({"id": f"r{i}", "text": t}), None, Source("in", 0, i)) for i, t in enumerate(MAIL)]
    records.append(RawRecord(b"", None, Source("in", 0, 99)))  # dead-lettered: never explained
    assert config.Settings().explain is False
    off = process(tiny_bundle, config.Settings(max_text_bytes=4096), records)
    on = process(tiny_bundle, config.Settings(max_text_bytes=4096, explain=True), records)
    published_off = [orjson.loads(o.value or b"") for o in off.outgoing if o.topic == "texts.labeled"]
    published_on = [orjson.loads(o.value or b"") for o in on.outgoing if o.topic == "texts.labeled"]
    assert len(published_off) == len(published_on) == len(MAIL)
    assert all("explanation" not in r for r in published_off)
    for r in published_on:
        assert r["explanation"]["label"] == r["label"]
        assert {"linear", "linear_bias", "linear_rest", "linear_logit", "lstm_occlusion"} <= r["explanation"].keys()
    assert len(on.rejected) == len(off.rejected) == 1


def test_the_variable_turns_it_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEXTSTREAM_EXPLAIN", "true")
    assert config.load_settings().explain is True
    assert config.load_settings().explain_tokens == explain.OCCLUDED_TOKENS
    monkeypatch.setenv("TEXTSTREAM_EXPLAIN_TOKENS", "65")
    with pytest.raises(ConfigError, match="TEXTSTREAM_EXPLAIN_TOKENS"):
        config.load_settings()
    monkeypatch.setenv("TEXTSTREAM_EXPLAIN_TOKENS", "0")
    monkeypatch.setenv("TEXTSTREAM_EXPLAIN", "perhaps")
    with pytest.raises(ConfigError, match="TEXTSTREAM_EXPLAIN="):
        config.load_settings()


KEYS = ("alpha", "beta", "gamma")


@pytest.fixture(scope="module")
def keyword_lstm() -> Any:
    """An LSTM-only classifier trained on texts whose label is decided by one word ('alpha', 'beta'
    or 'gamma' for labels a, b, c) among filler words that say nothing (~25 s on a busy 2-core machine)."""
    import keras

    from training import classifier
    from training.config import ClassifierConfig

    keras.utils.set_random_seed(7)
    rng = random.Random(7)
    filler = [f"w{i}" for i in range(30)]

    def text(key: str) -> str:
        words = rng.choices(filler, k=rng.randint(4, 10))
        words.insert(rng.randint(0, len(words)), key)
        return " ".join(words)

    y = np.array([i % 3 for i in range(450)])
    texts = [text(KEYS[label]) for label in y]
    cfg = ClassifierConfig(vocab_size=100, sequence_length=20, embedding_dim=8, lstm_units=8, bidirectional=False,
                           ngram_vocab=0, epochs=25, patience=3, batch_size=16, learning_rate=0.01, dropout=0.0)
    branches = classifier.build(texts, 3, cfg)
    classifier.fit(branches, texts[:390], y[:390], texts[390:], y[390:], 3, cfg)
    return branches.classifier


def test_occluding_the_deciding_token_shows_a_large_delta(keyword_lstm: Any) -> None:
    found = explain.build(keyword_lstm, ("a", "b", "c"))
    assert found is not None and found.linear is None  # no n-gram branch in this model
    texts = ["w3 w7 alpha w1 w9 w12", "w5 beta w2 w8 w20", "w5 w2 gamma w8 w20 w11 w4"]
    large = 0
    for why, label, key in zip(found.explain(texts), ("a", "b", "c"), KEYS, strict=True):
        assert why["label"] == label and "linear" not in why
        deltas = {d["token"]: d["delta"] for d in why["lstm_occlusion"]}
        assert deltas.keys() == set(texts[KEYS.index(key)].split())  # every distinct token tried (under the cap)
        assert why["lstm_occlusion"][0]["token"] == key  # sorted by delta, the deciding word first
        assert max(abs(v) for t, v in deltas.items() if t != key) < 0.05  # filler: next to nothing
        large += deltas[key] > 0.5
    assert all(why["lstm_occlusion"] == [] for why in found.explain(texts, tokens_tried=0))  # TEXTSTREAM_EXPLAIN_TOKENS=0
    # A model may learn one label as "none of the other words" (it then needs no word for it): the
    # other two words carry the label's probability from near 1 to near 0.
    assert large >= 2


def test_a_version_that_gives_the_lstm_weight_zero_has_no_occlusion(keyword_lstm: Any, tmp_path: Path) -> None:
    import keras

    path = tmp_path / "c.keras"
    keyword_lstm.save(path)
    muted = keras.saving.load_model(path, compile=False, safe_mode=True)
    head = muted.get_layer("deep_logits")
    head.set_weights([np.zeros_like(w) for w in head.get_weights()])
    found = explain.build(muted, ("a", "b", "c"))
    assert found is not None
    assert found.explain(["w1 alpha w2"])[0]["lstm_occlusion"] == []


def test_candidates_rank_by_the_one_word_ngram_weight_then_text_order() -> None:
    tokens = ["the", "cash", "prize", "the", "now", "win"]
    assert explain.candidates(tokens, {"prize": 0.5, "win": -0.9, "the": 0.01}, limit=4) == ["win", "prize", "the", "cash"]
    assert explain.candidates(tokens, {}, limit=10) == ["the", "cash", "prize", "now", "win"]


def test_a_bundle_without_a_keras_classifier_explains_nothing() -> None:
    from tests.unit.worker.fakes import fake_bundle

    assert explain.explain(fake_bundle(), ["sport", "tech"]) == [None, None]


def test_the_pipeline_passes_the_tokens_setting(tiny_bundle: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[int] = []
    real = explain.explain

    def spy(bundle: Any, texts: Any, tokens_tried: int = explain.OCCLUDED_TOKENS) -> Any:
        asked.append(tokens_tried)
        return real(bundle, texts, tokens_tried)

    monkeypatch.setattr(explain, "explain", spy)
    record = RawRecord(orjson.dumps({"text": NEWS[0]}), None, Source("in", 0, 0))
    process(tiny_bundle, config.Settings(max_text_bytes=4096, explain=True, explain_tokens=3), [record])
    process(tiny_bundle, config.Settings(max_text_bytes=4096, explain=False, explain_tokens=3), [record])
    assert asked == [3]

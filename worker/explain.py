"""Per-record explanations: which n-grams and tokens pushed a text to its label (TEXTSTREAM_EXPLAIN).

The classifier's logits are the sum of two branches (training/classifier.py), each already scaled
by its mix weight: the LSTM's (`deep_logits`, bounded by `deep_bounded`) and a linear SVM's over sublinear TF-IDF n-grams
(`wide_logits`). For the winning label:

- linear: exact. The n-gram branch's logit is bias + Σ tfidf(ngram) · weight(ngram, label) over
  the n-grams of the text; each term is one n-gram's contribution. The largest TOP_NGRAMS by
  magnitude are listed; `linear_rest` is the sum of the others, so
  Σ linear + linear_rest + linear_bias = linear_logit, the branch's logit to the float32 rounding.
- lstm_occlusion: an approximation. Each of up to OCCLUDED_TOKENS tokens (TEXTSTREAM_EXPLAIN_TOKENS) is removed (every
  occurrence) from the LSTM branch's input alone, and `delta` is how much the model's probability of
  the label drops (the n-gram branch keeps the whole text). It says what the LSTM needs, one token at
  a time; tokens that matter only together show small deltas each. The tokens tried are those with
  the largest one-word n-gram contribution, then the others in the order they come. Empty when the
  version gives the LSTM branch weight 0 (`branch_weights` in its manifest): it then decides nothing.

Costs one more LSTM call per token tried (docs/models.md, bench/README.md for the figures).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from worker.bundle import Bundle

TOP_NGRAMS = 10
OCCLUDED_TOKENS = 8
CHUNK = 256  # texts per LSTM call when scoring occluded copies

_cache: weakref.WeakKeyDictionary[Any, Explainer | None] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


@dataclass(frozen=True)
class Linear:
    """The n-gram branch as numbers: its vectoriser, TF-IDF layer, and the SVM's (mix-scaled) weights."""

    counts: Any  # TextVectorization, output_mode="count"
    tfidf: Any  # SublinearTfidf
    terms: np.ndarray  # index -> n-gram (index 0: out of vocabulary, weight 0)
    kernel: np.ndarray  # (terms, labels)
    bias: np.ndarray  # (labels,)
    unigram: np.ndarray  # per index: a one-word n-gram (always False for character n-grams)

    def rows(self, texts: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Each text's (term indices, TF-IDF values) as the model computes them."""
        import tensorflow as tf

        sparse = self.tfidf(self.counts(tf.constant(list(texts), dtype=tf.string)))
        idx, values = sparse.indices.numpy(), sparse.values.numpy()
        order = np.argsort(idx[:, 0], kind="stable")  # row-major already; sorting keeps that sure
        idx, values = idx[order], values[order]
        bounds = np.searchsorted(idx[:, 0], np.arange(1, len(texts)))
        return list(zip(np.split(idx[:, 1], bounds), np.split(values, bounds), strict=True))

    def logits(self, rows: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        """The branch's logits from `rows` (what `wide_logits` outputs)."""
        return np.stack([values @ self.kernel[terms] + self.bias for terms, values in rows]).astype(np.float32)


@dataclass(frozen=True)
class Explainer:
    labels: tuple[str, ...]
    linear: Linear | None
    deep: Callable[[Sequence[str]], np.ndarray]  # texts -> LSTM branch logits
    tokens: Callable[[Sequence[str]], list[list[str]]]  # texts -> the LSTM's tokens
    lstm_weighs: bool = True  # False when the branch mix gave the LSTM weight 0: nothing to occlude

    def explain(self, texts: Sequence[str], tokens_tried: int = OCCLUDED_TOKENS) -> list[dict[str, Any]]:
        """One explanation per text, for the label the whole model gives it; up to `tokens_tried`
        tokens occluded per text (0: no LSTM call beyond the text itself)."""
        if not texts:
            return []
        n_labels = len(self.labels)
        rows = self.linear.rows(texts) if self.linear else [(np.zeros(0, np.int64), np.zeros(0, np.float32))] * len(texts)
        wide = self.linear.logits(rows) if self.linear else np.zeros((len(texts), n_labels), np.float32)
        tokens = self.tokens(texts)
        deep = self.deep([" ".join(t) for t in tokens])
        best = (deep + wide).argmax(axis=1)
        out: list[dict[str, Any]] = []
        tried: list[list[str]] = []
        for i, text_tokens in enumerate(tokens):
            label = int(best[i])
            entry: dict[str, Any] = {"label": self.labels[label]}
            unigram: dict[str, float] = {}
            if self.linear is not None:
                terms, values = rows[i]
                contrib = values * self.linear.kernel[terms, label]
                order = np.argsort(-np.abs(contrib), kind="stable")
                shown = order[:TOP_NGRAMS]
                entry["linear"] = [{"ngram": str(self.linear.terms[terms[j]]), "weight": round(float(contrib[j]), 6)}
                                   for j in shown]
                entry["linear_rest"] = round(float(contrib[order[TOP_NGRAMS:]].sum()), 6)
                entry["linear_bias"] = round(float(self.linear.bias[label]), 6)
                entry["linear_logit"] = round(float(wide[i, label]), 6)
                words = np.flatnonzero(self.linear.unigram[terms])
                top = words[np.argsort(-np.abs(contrib[words]), kind="stable")[:tokens_tried]]
                unigram = {str(self.linear.terms[terms[j]]): float(contrib[j]) for j in top}
            tried.append(candidates(text_tokens, unigram, tokens_tried) if self.lstm_weighs else [])
            out.append(entry)
        variants = [" ".join(t for t in toks if t != c) for toks, cs in zip(tokens, tried, strict=True) for c in cs]
        occluded = self.deep(variants) if variants else np.zeros((0, n_labels), np.float32)
        k = 0
        for i, entry in enumerate(out):
            label = int(best[i])
            base = _softmax(deep[i] + wide[i])[label]
            deltas = []
            for token in tried[i]:
                deltas.append({"token": token, "delta": round(float(base - _softmax(occluded[k] + wide[i])[label]), 6)})
                k += 1
            entry["lstm_occlusion"] = sorted(deltas, key=lambda d: -d["delta"])
        return out


def candidates(tokens: Sequence[str], unigram: dict[str, float], limit: int = OCCLUDED_TOKENS) -> list[str]:
    """The distinct tokens to occlude: largest one-word n-gram contribution first, then in text order."""
    distinct = list(dict.fromkeys(tokens))
    ranked = sorted(distinct, key=lambda t: -abs(unigram.get(t, 0.0)))  # stable: text order otherwise
    return ranked[:limit]


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return np.asarray(e / e.sum())


def build(classifier: Any, labels: Sequence[str]) -> Explainer | None:
    """An explainer for a classifier of the shape training/classifier.py builds; None otherwise."""
    import tensorflow as tf

    from worker import packed_lstm
    from worker.layers import standardize

    names = {x.name for x in classifier.layers}
    deep_fn = packed_lstm.deep_logits_fn(classifier)
    if deep_fn is None:
        return None
    linear = None
    if {"ngram_counts", "ngram_tfidf", "wide_logits"} <= names:
        counts = classifier.get_layer("ngram_counts")
        kernel, bias = (np.asarray(w, dtype=np.float64) for w in classifier.get_layer("wide_logits").get_weights())
        terms = np.asarray(counts.get_vocabulary())
        characters = counts.get_config().get("split") == "character"
        unigram = np.zeros(len(terms), dtype=bool) if characters else np.char.find(terms, " ") < 0
        unigram[0] = False  # out of vocabulary
        linear = Linear(counts, classifier.get_layer("ngram_tfidf"), terms, kernel, bias, unigram)

    @tf.function(input_signature=[tf.TensorSpec(shape=[None], dtype=tf.string)])  # type: ignore[untyped-decorator]
    def graph(texts: Any) -> Any:
        return deep_fn(tf.expand_dims(texts, -1))

    def deep(texts: Sequence[str]) -> np.ndarray:
        out = np.empty((len(texts), len(labels)), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), CHUNK):
            idx = order[start:start + CHUNK]
            out[idx] = graph(tf.constant([texts[i] for i in idx], dtype=tf.string)).numpy()
        return out

    def tokens(texts: Sequence[str]) -> list[list[str]]:
        split = tf.strings.split(standardize(tf.constant(list(texts), dtype=tf.string))).to_list()
        return [[t.decode("utf-8", errors="replace") for t in row] for row in split]

    # the LSTM's weight lives in its bound layer's scale, or (older versions) in its head
    weighted = classifier.get_layer("deep_bounded" if "deep_bounded" in names else "deep_logits")
    return Explainer(tuple(labels), linear, deep, tokens, any(bool(np.any(np.asarray(w))) for w in weighted.get_weights()))


def explainer(bundle: Bundle) -> Explainer | None:
    """The bundle's explainer, built on first use and kept while its classifier lives."""
    if bundle.classifier is None:
        return None
    with _lock:
        if bundle.classifier not in _cache:
            _cache[bundle.classifier] = build(bundle.classifier, bundle.labels)
        return _cache[bundle.classifier]


def explain(bundle: Bundle, texts: Sequence[str], tokens_tried: int = OCCLUDED_TOKENS) -> list[dict[str, Any] | None]:
    """One explanation per text (None for every text when the version cannot be explained)."""
    found = explainer(bundle)
    if found is None:
        return [None] * len(texts)
    return list(found.explain(texts, tokens_tried))

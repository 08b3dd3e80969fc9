"""Vocabularies and the in-model vectorisers built from them.

Tokens come from the same TensorFlow ops the saved models run (`worker.layers.standardize`, split on
whitespace, `tf.strings.ngrams`), so the vocabulary chosen here is exactly what the model sees.
Choosing it in Python (instead of `TextVectorization.adapt`) gives document frequencies, hence
min_df / max_df / stop words and the idf weights of sublinear TF-IDF.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import tensorflow as tf
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

from worker.layers import SublinearTfidf, TextVectorization, lowercase, standardize

logger = logging.getLogger(__name__)

_UNSPACED_CHAR = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff]")
STOP_WORDS = frozenset(ENGLISH_STOP_WORDS)


def unspaced_share(texts: Sequence[str], sample: int = 2000) -> float:
    """Share of letters that belong to scripts written without spaces (Chinese, Japanese, Thai…)."""
    chunk = "".join(texts[:: max(1, len(texts) // sample)])
    letters = sum(ch.isalpha() for ch in chunk)
    return len(_UNSPACED_CHAR.findall(chunk)) / max(letters, 1)


def tokens(texts: Sequence[str], ngrams: int = 1, characters: bool = False, batch: int = 512) -> Iterator[list[bytes]]:
    """Each text's tokens (1..ngrams-grams of words, or of characters), as the saved models compute them."""
    for start in range(0, len(texts), batch):
        chunk = tf.constant(list(texts[start:start + batch]))
        if characters:
            words = tf.strings.unicode_split(lowercase(chunk), "UTF-8")
        else:
            words = tf.strings.split(standardize(chunk))
        if ngrams > 1:
            words = tf.strings.ngrams(words, ngram_width=tuple(range(1, ngrams + 1)), separator=" ")
        yield from words.to_list()


@dataclass(frozen=True)
class Vocabulary:
    terms: list[str]
    df: np.ndarray  # documents containing each term
    n_docs: int
    ngrams: int
    characters: bool = False  # n-grams of characters (punctuation and spaces included), not of words

    def idf(self) -> np.ndarray:
        """Smoothed idf as scikit-learn computes it: ln((1 + n) / (1 + df)) + 1."""
        return np.log((1.0 + self.n_docs) / (1.0 + self.df)) + 1.0


def _keep(term: str, stop_words: frozenset[str], single_letters: bool) -> bool:
    if stop_words and any(part in stop_words for part in term.split(" ")):
        return False
    # For topics (scikit-learn's default token pattern), one-letter tokens carry nothing except CJK
    # characters; for spam they do ("u", "2", "£"): +0.3 points of linear SVM accuracy on SMS.
    return single_letters or len(term) > 1 or bool(_UNSPACED_CHAR.match(term))


def build_vocabulary(texts: Sequence[str], max_terms: int, ngrams: int = 1, min_df: int = 1,
                     max_df: float = 1.0, stop_words: frozenset[str] = frozenset(),
                     single_letters: bool = True, characters: bool = False) -> Vocabulary:
    """The `max_terms` most frequent terms among those in at least `min_df` and at most `max_df` of the texts."""
    tf_counts: Counter[bytes] = Counter()
    df_counts: Counter[bytes] = Counter()
    for toks in tokens(texts, ngrams, characters):
        tf_counts.update(toks)
        df_counts.update(set(toks))
    limit = max_df * len(texts)
    candidates = []
    for raw, count in tf_counts.items():
        df = df_counts[raw]
        if df < min_df or df > limit:
            continue
        term = raw.decode("utf-8", errors="replace")
        if characters or _keep(term, stop_words, single_letters):
            candidates.append((count, term, df))
    candidates.sort(key=lambda c: (-c[0], c[1]))
    chosen = candidates[:max_terms]
    if not chosen:
        raise ValueError("no terms left to build a vocabulary from (texts too short or too few)")
    logger.debug("vocabulary ngrams=%d kept %d of %d terms", ngrams, len(chosen), len(tf_counts))
    return Vocabulary([t for _, t, _ in chosen], np.array([d for _, _, d in chosen], dtype=np.float64), len(texts),
                      ngrams, characters)


def sequence_vectorizer(vocab: Vocabulary, name: str = "tokens") -> Any:
    """Raw strings → token ids (0 = padding, 1 = out of vocabulary), padded to the longest text of the batch."""
    return TextVectorization(standardize=standardize, vocabulary=vocab.terms, output_mode="int", name=name)


def tfidf_features(vocab: Vocabulary, name: str) -> tuple[Any, Any]:
    """(counting vectoriser, sublinear TF-IDF layer) for a vocabulary; index 0 (out of vocabulary) weighs 0."""
    counts = TextVectorization(
        standardize=lowercase if vocab.characters else standardize, split="character" if vocab.characters else "whitespace",
        vocabulary=vocab.terms, ngrams=vocab.ngrams if vocab.ngrams > 1 else None,
        output_mode="count", sparse=True, name=f"{name}_counts",
    )
    weights = SublinearTfidf(len(vocab.terms) + 1, name=f"{name}_tfidf")
    weights.set_idf(np.concatenate([[0.0], vocab.idf()]).astype(np.float32))
    return counts, weights


def tfidf_matrix(counts: Any, tfidf: Any, texts: Sequence[str], batch: int = 1024) -> sp.csr_matrix:
    """The TF-IDF rows the layers compute for `texts`, as one scipy sparse matrix."""
    parts = []
    for start in range(0, len(texts), batch):
        rows = tfidf(counts(tf.constant(list(texts[start:start + batch]))))
        idx = rows.indices.numpy()
        parts.append(sp.csr_matrix((rows.values.numpy(), (idx[:, 0], idx[:, 1])), shape=tuple(rows.dense_shape.numpy())))
    return sp.vstack(parts).tocsr()

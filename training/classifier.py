"""The classifier: raw strings in, class probabilities out, one Keras model with its vectorisers inside.

Deep branch (the seed design): token ids → head+tail cut → Embedding → (Bi)LSTM → max over time.
Wide branch (optional): a linear SVM over sublinear TF-IDF of word 1–2-grams (character 1–3-grams,
punctuation included, for CJK text). The classifier is softmax(a · max(LSTM log-probabilities, -L)
+ b · SVM margins): the weights a, b and the bound L are chosen on validation texts. L bounds what
the LSTM can change, so that the worker runs it only for texts whose label it can change
(worker/lstm_skip.py); the smallest L that costs no validation accuracy is taken.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from training import calibration, features
from training.config import ClassifierConfig, ClassWeight
from worker.layers import BoundedLogProbs, HeadTail, MaskedMaxPool

logger = logging.getLogger(__name__)


def strings(texts: Sequence[str]) -> Any:
    """Keras takes strings as a (batch, 1) tensor (lists and object arrays are refused)."""
    return tf.constant(list(texts), dtype=tf.string)[:, None]


class EpochProgress(keras.callbacks.Callback):  # type: ignore[misc]
    """Logs one line per epoch with the metrics, elapsed time and an ETA (early stopping may end sooner)."""

    def __init__(self, name: str, epochs: int) -> None:
        super().__init__()
        self.name, self.epochs, self.started = name, epochs, 0.0
        self.history: list[dict[str, float]] = []

    def on_train_begin(self, logs: Any = None) -> None:
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        elapsed = time.perf_counter() - self.started
        eta = elapsed / (epoch + 1) * (self.epochs - epoch - 1)
        values = {k: float(v) for k, v in (logs or {}).items()}
        self.history.append(values)
        shown = " ".join(f"{k}={v:.4f}" for k, v in values.items())
        logger.info("%s epoch %d/%d %s elapsed=%.0fs eta<=%.0fs", self.name, epoch + 1, self.epochs, shown, elapsed, eta)


def class_weights(y: np.ndarray, n_labels: int, mode: ClassWeight) -> dict[int, float] | None:
    """Balanced weights (n / (k · count)) when asked, or on `auto` when the classes are imbalanced."""
    counts = np.bincount(y, minlength=n_labels).astype(float)
    if mode == "none" or (mode == "auto" and counts.max() < 3 * max(counts.min(), 1.0)):
        return None
    return {i: float(len(y) / (n_labels * max(c, 1.0))) for i, c in enumerate(counts)}


@dataclass
class Branches:
    """The classifier and the two single-branch models that share its layers (for training them apart)."""

    classifier: Any  # strings → softmax(bounded deep log-probabilities + wide margins)
    deep: Any  # strings → softmax(deep logits)
    wide: Any | None  # strings → SVM margins per class; None without a wide branch
    deep_head: Any  # the Dense layer of the LSTM's logits (rescaled by `apply_mix` without a wide branch)
    wide_head: Any | None  # the SVM's Dense layer, rescaled by `apply_mix`
    wide_features: tuple[Any, Any] | None = None  # (counting vectoriser, TF-IDF layer) of the wide branch
    deep_bound: Any | None = None  # the BoundedLogProbs layer `apply_mix` sets (with a wide branch)


def build(train_texts: Sequence[str], n_labels: int, cfg: ClassifierConfig) -> Branches:
    """Uncompiled models; vocabularies come from `train_texts` only."""
    vocab = features.build_vocabulary(train_texts, cfg.vocab_size)
    text = keras.Input(shape=(1,), dtype="string", name="text")
    ids = features.sequence_vectorizer(vocab)(text)
    ids = HeadTail(cfg.sequence_length, int(cfg.sequence_length * cfg.head_fraction), name="head_tail")(ids)
    x = keras.layers.Embedding(len(vocab.terms) + 2, cfg.embedding_dim, mask_zero=True, name="embedding")(ids)
    lstm = keras.layers.LSTM(cfg.lstm_units, return_sequences=True, name="lstm")
    x = (keras.layers.Bidirectional(lstm, name="bilstm") if cfg.bidirectional else lstm)(x)
    x = MaskedMaxPool(name="max_over_time")(x)
    x = keras.layers.Dropout(cfg.dropout, name="dropout")(x)
    deep_head = keras.layers.Dense(n_labels, name="deep_logits")
    deep_logits = deep_head(x)
    deep = keras.Model(text, keras.layers.Activation("softmax", name="deep_scores")(deep_logits), name="deep")
    if cfg.ngram_vocab <= 0:
        classifier = keras.Model(text, keras.layers.Activation("softmax", name="scores")(deep_logits), name="classifier")
        return Branches(classifier, deep, None, deep_head, None, None)
    characters = features.unspaced_share(train_texts) > 0.5
    ngrams = cfg.ngrams or (3 if characters else 2)
    wide_vocab = features.build_vocabulary(train_texts, cfg.ngram_vocab, ngrams=ngrams, characters=characters)
    counts, tfidf = features.tfidf_features(wide_vocab, "ngram")
    wide_head = keras.layers.Dense(n_labels, name="wide_logits")  # weights come from `fit_svm`
    wide_logits = wide_head(tfidf(counts(text)))
    wide = keras.Model(text, wide_logits, name="wide")
    deep_bound = BoundedLogProbs(name="deep_bounded")
    logits = keras.layers.Add(name="logits")([deep_bound(deep_logits), wide_logits])
    classifier = keras.Model(text, keras.layers.Activation("softmax", name="scores")(logits), name="classifier")
    logger.info("classifier: LSTM vocabulary %d, n-gram branch %d %s 1–%d-grams", len(vocab.terms), len(wide_vocab.terms),
                "character" if characters else "word", ngrams)
    return Branches(classifier, deep, wide, deep_head, wide_head, (counts, tfidf), deep_bound)


def fit_svm(branches: Branches, texts: Sequence[str], y: np.ndarray, n_labels: int, c: float,
            weights: dict[int, float] | None = None) -> None:
    """Fit the wide branch exactly: a linear SVM (liblinear) on the features the model computes.

    Its objective is convex, so an exact solver beats mini-batch Adam on it (SMS: 0.995 vs 0.990
    after 8 epochs); the solution is copied into the model's Dense layer, which computes the same
    margins from raw strings. `weights` are per-class weights of the hinge loss (`class_weights`).
    """
    from sklearn.svm import LinearSVC

    assert branches.wide_features is not None and branches.wide_head is not None
    x = features.tfidf_matrix(*branches.wide_features, texts)
    svm = LinearSVC(C=c, class_weight=weights).fit(x, y)
    coef, intercept = svm.coef_, svm.intercept_
    if coef.shape[0] == 1:  # binary: one margin for classes_[1]; class 0 gets its negative
        coef, intercept = np.vstack([-coef, coef]), np.concatenate([-intercept, intercept])
    kernel = np.zeros((x.shape[1], n_labels), dtype=np.float32)
    bias = np.full(n_labels, -10.0, dtype=np.float32)  # a class absent from the training texts never wins
    for row, label in enumerate(svm.classes_):
        kernel[:, label], bias[label] = coef[row], intercept[row]
    branches.wide_head.set_weights([kernel, bias])


def by_length(texts: Sequence[str], y: np.ndarray, batch_size: int, shuffle: bool, seed: int = 0) -> Any:
    """Batches of texts of similar length (in random order each epoch when `shuffle`).

    A batch runs the LSTM as far as its longest text, so mixing SMS and articles in one batch pads
    the SMS to article length: grouping by length makes the demo corpus train ~3x faster.
    """
    order = np.argsort([len(t) for t in texts], kind="stable")
    data = tf.data.Dataset.from_tensor_slices((strings([texts[i] for i in order]), y[order])).batch(batch_size)
    if shuffle:
        data = data.shuffle(int(data.cardinality()), seed=seed, reshuffle_each_iteration=True)
    return data.prefetch(2)


def _fit_lstm(model: Any, texts: Sequence[str], y: np.ndarray, val_texts: Sequence[str], val_y: np.ndarray,
              weights: dict[int, float] | None, cfg: ClassifierConfig) -> list[dict[str, float]]:
    model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate), loss="sparse_categorical_crossentropy",
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    progress = EpochProgress("classifier[lstm]", cfg.epochs)
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=cfg.patience, restore_best_weights=True)
    model.fit(by_length(texts, y, cfg.batch_size, shuffle=True), validation_data=by_length(val_texts, val_y, 256, False),
              epochs=cfg.epochs, verbose=0, shuffle=False, class_weight=weights, callbacks=[progress, stop])
    return progress.history


def predict(model: Any, texts: Sequence[str]) -> np.ndarray:
    """The model's outputs for `texts`, in chunks (no `model.predict`: it retraces per model)."""
    return np.concatenate([np.asarray(model(strings(texts[i:i + 256]), training=False))
                           for i in range(0, len(texts), 256)])


NO_BOUND = 1e9  # a bound no log-probability reaches
BOUNDS = (1.0, 2.0, 4.0, 8.0, 16.0)  # tried for L, smallest first
# A bound may cost this much validation log-loss (relative, plus absolute), never accuracy.
BOUND_LOSS_TOLERANCE = (0.02, 0.001)


def _score(z: np.ndarray, y: np.ndarray) -> tuple[int, float]:
    """(texts right, mean log-loss) of logits `z`."""
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return int((logp.argmax(axis=1) == y).sum()), float(-logp[np.arange(len(y)), y].mean())


def _mix(deep: np.ndarray, wide: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
    """Branch weights (a, b) for softmax(a·deep + b·wide): most validation texts right, then lowest
    log-loss; then the smallest bound L for softmax(a·max(deep, -L) + b·wide) that gets as many texts
    right with at most BOUND_LOSS_TOLERANCE more log-loss (NO_BOUND if none does).

    `deep` are the LSTM's log-probabilities, `wide` the SVM's margins (about ±1, hence larger weights).
    Returns (a, b, L, validation accuracy).
    """
    best: tuple[int, float, float, float] = (-1, np.inf, 1.0, 1.0)
    for a in (0.0, 0.25, 0.5, 0.75, 1.0):
        for b in (0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0):
            if a == b == 0.0:
                continue
            correct, loss = _score(a * deep + b * wide, y)
            if correct > best[0] or (correct == best[0] and loss < best[1] - 1e-9):
                best = (correct, loss, a, b)
    correct, loss, a, b = best
    relative, absolute = BOUND_LOSS_TOLERANCE
    for bound in BOUNDS:
        c, lo = _score(a * np.maximum(deep, -bound) + b * wide, y)
        if c >= correct and lo <= loss * (1 + relative) + absolute:
            return a, b, bound, c / max(len(y), 1)
    return a, b, NO_BOUND, correct / max(len(y), 1)


def _scale(head: Any, factor: float) -> None:
    kernel, bias = head.get_weights()
    head.set_weights([kernel * factor, bias * factor])


def fit(branches: Branches, texts: Sequence[str], y: np.ndarray, val_texts: Sequence[str], val_y: np.ndarray,
        n_labels: int, cfg: ClassifierConfig) -> dict[str, list[dict[str, float]]]:
    """Train each branch on its own, then choose their weights on the validation texts (see `_mix`).

    Trained together, the wide branch memorises the training set within an epoch and the LSTM
    then learns nothing useful (BBC: 0.95 joint vs 0.98 for the wide branch alone); trained apart,
    each is a complete classifier and the mix keeps what each adds. The wide branch is a linear SVM,
    which beats a softmax regression on the same n-grams (SMS: 0.992 vs 0.987). Both branches get the
    same class weights (`cfg.class_weight`): unweighted, the SVM all but ignores a rare class, such as
    a new label that only a few corrections carry (bench/drift.py).
    Returns per-epoch metrics of the LSTM, the SVM's accuracies, and, under "mix", the weights.
    """
    started = time.perf_counter()
    weights = class_weights(y, n_labels, cfg.class_weight)
    history = {"deep": _fit_lstm(branches.deep, texts, y, val_texts, val_y, weights, cfg)}
    deep_logp = np.log(np.maximum(predict(branches.deep, val_texts), 1e-12))
    if branches.wide is None:
        history["calibration"] = [_calibrate(deep_logp, val_y)]
        return history
    fit_svm(branches, texts, y, n_labels, cfg.wide_c, weights)
    wide_val = predict(branches.wide, val_texts)
    history["wide"] = [{"accuracy": float(np.mean(predict(branches.wide, texts).argmax(axis=1) == y)),
                        "val_accuracy": float(np.mean(wide_val.argmax(axis=1) == val_y))}]
    logger.info("classifier[ngrams] linear SVM accuracy=%.4f val_accuracy=%.4f elapsed=%.0fs",
                history["wide"][0]["accuracy"], history["wide"][0]["val_accuracy"], time.perf_counter() - started)
    a, b, bound, accuracy = _mix(deep_logp, wide_val, val_y)
    logger.info("classifier branch weights on validation: lstm=%.2f ngrams=%.2f, LSTM log-probabilities bounded "
                "at -%s (val_accuracy=%.4f)", a, b, "none" if bound == NO_BOUND else f"{bound:g}", accuracy)
    history["mix"] = [{"lstm_weight": a, "ngram_weight": b, "lstm_bound": bound, "val_accuracy": accuracy}]
    # Calibrated on the mix's validation logits, before the SVM below sees the validation texts.
    history["calibration"] = [_calibrate(a * np.maximum(deep_logp, -bound) + b * wide_val, val_y)]
    # The SVM needs no early stopping, so once the weights are chosen it is refitted on every
    # training text (20 Newsgroups: 0.929 vs 0.924 fitted without the validation tenth).
    every_y = np.concatenate([y, val_y])
    fit_svm(branches, [*texts, *val_texts], every_y, n_labels, cfg.wide_c,
            class_weights(every_y, n_labels, cfg.class_weight))
    return history


def _calibrate(logits: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """The temperature of `training.calibration` fitted on validation logits, with its effect on them."""
    t = calibration.fit_temperature(logits, y)
    fitted = {"temperature": round(t, 4), "val_texts": float(len(y)),
              "val_nll_before": round(calibration.nll(logits, y), 4), "val_nll_after": round(calibration.nll(logits, y, t), 4)}
    logger.info("classifier calibration on validation: temperature=%.3f nll %.4f -> %.4f", t,
                fitted["val_nll_before"], fitted["val_nll_after"])
    return fitted


def temperature(history: dict[str, list[dict[str, float]]]) -> float:
    """The fitted temperature (1.0 when none was fitted)."""
    return float(history.get("calibration", [{}])[0].get("temperature", 1.0))


def apply_mix(branches: Branches, history: dict[str, list[dict[str, float]]]) -> None:
    """Scale each branch's logits by its weight (the LSTM's through its bound layer) and divide both by
    the fitted temperature, so that `branches.classifier` computes the calibrated mix (the saved model
    serves calibrated scores).

    After this the single-branch models no longer predict on their own (a weight may be 0).
    """
    t = temperature(history)
    if "mix" not in history or branches.wide_head is None:
        _scale(branches.deep_head, 1.0 / t)
        return
    mix = history["mix"][0]
    assert branches.deep_bound is not None
    branches.deep_bound.set_bound(mix["lstm_weight"] / t, mix.get("lstm_bound", NO_BOUND))
    _scale(branches.wide_head, mix["ngram_weight"] / t)

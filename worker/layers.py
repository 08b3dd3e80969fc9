"""Custom Keras pieces the saved models use; registered so that safe-mode loading finds them.

`worker.bundle` imports this module before loading a version. Nothing here trains: these are the
text-processing steps that must behave the same at training time and in the worker.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

PACKAGE = "textstream"

# Scripts written without spaces between words: each character becomes a token, so word n-grams
# over the result are character n-grams there, while spaced scripts keep their words.
_UNSPACED = r"[\p{Han}\p{Hiragana}\p{Katakana}\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}]"
# Runs of anything that is not a letter, a digit or a mark separate tokens (punctuation, symbols).
_SEPARATORS = r"[^\p{L}\p{N}\p{M}]+"


@keras.saving.register_keras_serializable(package=PACKAGE)  # type: ignore[untyped-decorator]
def standardize(text: Any) -> Any:
    """Lower-case, space out CJK characters, turn punctuation and symbols into spaces."""
    text = tf.strings.lower(text, encoding="utf-8")
    text = tf.strings.regex_replace(text, _UNSPACED, r" \0 ")
    return tf.strings.regex_replace(text, _SEPARATORS, " ")


@keras.saving.register_keras_serializable(package=PACKAGE)  # type: ignore[untyped-decorator]
def lowercase(text: Any) -> Any:
    """Lower-case and collapse whitespace, keeping punctuation: for character n-grams of CJK text,
    where punctuation carries signal (《title》, ：, ！ in headlines: +0.4 points of accuracy)."""
    text = tf.strings.lower(text, encoding="utf-8")
    return tf.strings.strip(tf.strings.regex_replace(text, r"\s+", " "))


@keras.saving.register_keras_serializable(package=PACKAGE)
class HeadTail(keras.layers.Layer):  # type: ignore[misc]
    """Cut padded token ids (batch, width) to at most `length` per text, keeping head and tail.

    The opening and the closing of an email or article carry most of its topic (subject, greeting,
    signature, sign-off), so a text longer than `length` keeps `head` tokens from its start and the
    rest from its end. Token id 0 is padding. The output is only as wide as the batch needs
    (at most `length`), so a batch of headlines does not run the LSTM over hundreds of pad steps.
    """

    def __init__(self, length: int, head: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not 0 <= head <= length:
            raise ValueError(f"head={head} must be between 0 and length={length}")
        self.length, self.head = length, head

    def call(self, ids: Any) -> Any:
        ids = tf.cast(ids, "int64")
        width = tf.minimum(tf.shape(ids, out_type="int64")[1], self.length)
        n = tf.math.count_nonzero(ids, axis=1, keepdims=True)  # tokens per text
        pos = tf.range(width)[None, :]
        tail_pos = n - width + pos  # the last (width - head) tokens, after the head
        index = tf.where((n > width) & (pos >= self.head), tail_pos, pos + tf.zeros_like(n))
        return tf.gather(ids, index, batch_dims=1)

    def compute_output_shape(self, input_shape: Any) -> tuple[Any, None]:
        return (input_shape[0], None)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "length": self.length, "head": self.head}


@keras.saving.register_keras_serializable(package=PACKAGE)
class MaskedMaxPool(keras.layers.Layer):  # type: ignore[misc]
    """Max over the time steps the mask keeps (0 for a text without tokens).

    Keras' GlobalMaxPooling1D ignores the mask, so padded steps would take part in the max and a
    text's scores would depend on the longest text in its batch (for a backward LSTM).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, x: Any, mask: Any = None) -> Any:
        if mask is None:
            return tf.reduce_max(x, axis=1)
        keep = tf.cast(mask, "bool")[:, :, None]
        pooled = tf.reduce_max(tf.where(keep, x, tf.fill(tf.shape(x), tf.constant(-3.0e38, x.dtype))), axis=1)
        return tf.where(tf.reduce_any(keep, axis=1), pooled, tf.zeros_like(pooled))

    def compute_mask(self, x: Any, mask: Any = None) -> None:
        return None

    def compute_output_shape(self, input_shape: Any) -> tuple[Any, Any]:
        return (input_shape[0], input_shape[2])


@keras.saving.register_keras_serializable(package=PACKAGE)
class BoundedLogProbs(keras.layers.Layer):  # type: ignore[misc]
    """scale · max(log_softmax(logits), -bound): the LSTM branch's part of the classifier's logits.

    Each class gets between -scale·bound and 0 from it, so it can move the difference between two
    labels' logits by at most scale·bound: a text whose n-gram margin is larger keeps its n-gram
    label whatever the LSTM says, and the worker does not run the LSTM for it (worker/lstm_skip.py).
    `scale` (branch weight / temperature) and `bound` are chosen after training on validation texts
    (training/classifier.py) and travel as weights, like the TF-IDF layer's idf.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scale = self.add_weight(shape=(), initializer="ones", trainable=False, name="scale")
        self.bound = self.add_weight(shape=(), initializer=keras.initializers.Constant(1e9), trainable=False,
                                     name="bound")

    def set_bound(self, scale: float, bound: float) -> None:
        self.scale.assign(scale)
        self.bound.assign(bound)

    def call(self, logits: Any) -> Any:
        return self.scale * tf.maximum(tf.nn.log_softmax(logits), -self.bound)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape


@keras.saving.register_keras_serializable(package=PACKAGE)
class SublinearTfidf(keras.layers.Layer):  # type: ignore[misc]
    """Term counts → (1 + log tf) · idf, unit length per row; sparse in, sparse out.

    Keras' own `output_mode="tf_idf"` is linear in the count and broken with sparse output in
    Keras 3.15.1; sublinear weighting is what makes a bag of n-grams competitive on long emails.
    """

    def __init__(self, size: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.size = size
        # The values travel as a weight (set_idf after building, or restored on load).
        self.idf = self.add_weight(shape=(size,), initializer="zeros", trainable=False, name="idf")

    def set_idf(self, values: Any) -> None:
        self.idf.assign(tf.constant(values, dtype="float32"))

    def call(self, counts: Any) -> Any:
        if not isinstance(counts, tf.SparseTensor):
            counts = tf.sparse.from_dense(counts)
        weights = (1.0 + tf.math.log(tf.cast(counts.values, "float32"))) * tf.gather(self.idf, counts.indices[:, 1])
        rows = counts.indices[:, 0]
        norms = tf.math.sqrt(tf.math.unsorted_segment_sum(tf.square(weights), rows, tf.cast(counts.dense_shape[0], "int32")))
        weights = weights / tf.maximum(tf.gather(norms, rows), 1e-12)
        return tf.SparseTensor(counts.indices, weights, counts.dense_shape)

    def compute_output_spec(self, counts: Any) -> Any:
        return keras.KerasTensor((counts.shape[0], self.size), dtype="float32", sparse=True)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "size": self.size}


@keras.saving.register_keras_serializable(package=PACKAGE)
class TextVectorization(keras.layers.TextVectorization):  # type: ignore[misc]
    """keras.layers.TextVectorization that holds its vocabulary as an array, not a list.

    Keras tracks every element of a list assigned to a layer, one Python call per term: with a
    200k-term n-gram vocabulary the benchmark model loaded in 1.05-1.11 s, with an array in 0.83 s,
    and that time is Python holding the GIL beside the serving threads during a hot reload.
    Behaviour and saved config are otherwise Keras' own (the vocabulary is saved as a list).
    """

    def __init__(self, *args: Any, vocabulary: Any = None, **kwargs: Any) -> None:
        if isinstance(vocabulary, (list, tuple)):
            vocabulary = np.array(vocabulary)
        super().__init__(*args, vocabulary=vocabulary, **kwargs)

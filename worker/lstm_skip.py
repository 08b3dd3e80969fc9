"""Run the LSTM only for texts whose label or route it can change.

The classifier's logits are the sum of two branches (training/classifier.py): the n-gram branch's
margins and the LSTM branch's s · max(log-probabilities, -L) (`worker.layers.BoundedLogProbs`;
s = branch weight / temperature, L chosen on validation texts). Each class gets between -s·L and 0
from the LSTM, so whatever the text, the LSTM moves the difference between the logits of labels
w and k by at least lo[w, k] = -s·L. A text whose n-gram label w leads every other label by more
than s·L keeps w whatever the LSTM says: the bound is part of the model, not a heuristic, and exact
up to float error (EPS). The worker then skips the LSTM for it.

A skipped text's scores are those of the worst case for w: logits
z_w - z_k = (n-gram margin) + lo[w, k], so its confidence is the least the full model could give
it, a lower bound of the calibrated confidence. A record is only skipped if that bound also reaches its label's review threshold
(`floor`), so it goes where the full model would send it: same label, same route; only its
`confidence` and `scores` are the bound's. TEXTSTREAM_LSTM=always runs the LSTM for every text.

Versions trained before the bound layer added `deep_logits` = W·f + b directly, f the max over time
of LSTM outputs h = o·tanh(c), each strictly between -1 and 1; their bound is
lo[w, k] = (b_w - b_k) - sum_j |W_jw - W_jk|, exact too but loose (the benchmark model needed the
LSTM for 84 % of its texts with it, 2026-11-30).

With a branch weight of 0 for the LSTM (the demo model) no text needs it; with the benchmark model
bench/throughput.py reports the share that did.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from worker.layers import BoundedLogProbs

# Logit units and probability: float32 sums of ~100 terms differ from exact arithmetic by ~1e-6.
EPS = 1e-4

# (texts (n, 1), floor (labels,), every_text ()) -> (probabilities (n, labels), LSTM ran (n,))
GatedFn = Callable[[Any, Any, Any], tuple[Any, Any]]


def deep_bounds(classifier: Any) -> np.ndarray | None:
    """lo[w, k], the least the LSTM branch adds to logit w minus logit k; None unless the model is the
    one training/classifier.py builds with an n-gram branch."""
    layers = {x.name: x for x in classifier.layers}
    if "wide_logits" in layers and isinstance(layers.get("deep_bounded"), BoundedLogProbs):
        # each class gets between -scale·bound and 0 from the branch
        bounded = layers["deep_bounded"]
        n = classifier.output_shape[-1]
        return -float(bounded.scale.numpy()) * float(bounded.bound.numpy()) * (1 - np.eye(n))
    # Versions trained before the bound layer: the LSTM features lie in [-1, 1] (see the module's doc).
    head = layers.get("deep_logits")
    if head is None or "wide_logits" not in layers or not isinstance(head, keras.layers.Dense) \
            or head.get_config().get("activation") != "linear":
        return None
    kernel = np.asarray(head.kernel, dtype=np.float64)
    bias = np.asarray(head.bias, dtype=np.float64) if head.use_bias else np.zeros(kernel.shape[1])
    spread = np.abs(kernel[:, :, None] - kernel[:, None, :]).sum(axis=0)
    return (bias[:, None] - bias[None, :]) - spread  # type: ignore[no-any-return]


def gated_fn(classifier: Any, deep: Callable[[Any], Any]) -> GatedFn | None:
    """The classifier's probabilities computing `deep` (the LSTM branch's logits, worker.packed_lstm)
    only for the texts that need it; None when `deep_bounds` is."""
    lo = deep_bounds(classifier)
    if lo is None:
        return None
    bounds = tf.constant(lo, dtype=tf.float32)
    layers = {x.name: x for x in classifier.layers}
    wide = keras.Model(classifier.input, layers["wide_logits"].output)

    def probabilities(column: Any, floor: Any, every_text: Any) -> tuple[Any, Any]:
        margins = wide(column, training=False)
        best = tf.argmax(margins, axis=1, output_type=tf.int32)
        # least logit(best) - logit(k) over every possible LSTM output; 0 for k = best
        least = tf.gather(margins, best, batch_dims=1)[:, None] - margins + tf.gather(bounds, best)
        worst = tf.nn.softmax(-least)  # scores when the LSTM goes as far against `best` as it can
        others = tf.one_hot(best, tf.shape(margins)[1], on_value=False, off_value=True)
        label_fixed = tf.reduce_all(tf.logical_or(tf.logical_not(others), least > EPS), axis=1)
        route_fixed = tf.gather(worst, best, batch_dims=1) >= tf.gather(floor, best) + EPS
        ran = tf.logical_or(tf.logical_not(label_fixed & route_fixed), every_text)
        idx = tf.where(ran)[:, 0]
        full = tf.nn.softmax(tf.gather(margins, idx) + deep(tf.gather(column, idx)))
        return tf.tensor_scatter_nd_update(worst, idx[:, None], full), ran

    return probabilities

"""The evaluation slice `textstream trainer` holds out to score a retraining and to gate it on.

Chosen by a hash of each text, not at random, so a text is held out in every training or in none. The
quality gate compares the new version with the served one on this slice; with a random split the served
version had trained on most of the next one's evaluation texts, scored far above it there, and the gate
refused every retraining from corrections (found by bench/drift.py). New texts (corrections) fall in
the slice at the same rate as the rest.
"""

from __future__ import annotations

import collections
import hashlib
from collections.abc import Hashable, Sequence


def held_out(text: str, share: float) -> bool:
    """Whether `text` belongs to the evaluation slice (about `share` of all texts)."""
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < share


def split_rows(texts: Sequence[str], labels: Sequence[Hashable], share: float) -> tuple[list[int], list[int]]:
    """(training rows, evaluation rows) by `held_out`; a label with fewer than two training rows keeps all
    its rows for training (a label the model must learn from a handful of corrections)."""
    train: list[int] = []
    evaluation: list[int] = []
    for i, text in enumerate(texts):
        (evaluation if held_out(text, share) else train).append(i)
    in_train = collections.Counter(labels[i] for i in train)
    scarce = {label for label in set(labels) if in_train[label] < 2}
    return sorted(train + [i for i in evaluation if labels[i] in scarce]), [i for i in evaluation if labels[i] not in scarce]



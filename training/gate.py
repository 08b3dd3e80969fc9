"""The quality gate: a new version is published only if it is not worse than the one being served.

Both versions are scored on the same evaluation split (the new one's held-out texts), so the
comparison is fair even when the training data changed. The current version predicts its own
labels; a label it does not know counts as a wrong answer.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import f1_score

from worker import bundle, registry
from worker.errors import TextstreamError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decision:
    publish: bool
    new_f1: float
    current_f1: float | None  # None: nothing to compare with
    current_version: int | None
    tolerance: float
    forced: bool

    def describe(self) -> str:
        if self.current_f1 is None:
            return f"quality gate: macro-F1 {self.new_f1:.4f}; no current version to compare with: publish"
        verdict = "publish" if self.publish else "REJECTED, not published (--force publishes anyway)"
        if self.forced and self.new_f1 < self.current_f1 - self.tolerance:
            verdict = "worse, published because of --force"
        return (f"quality gate: macro-F1 {self.new_f1:.4f} (new) vs {self.current_f1:.4f} (version "
                f"{self.current_version}) on the same evaluation split, tolerance {self.tolerance:.4f}: {verdict}")


def decide(new_f1: float, current_f1: float | None, tolerance: float, force: bool = False,
           current_version: int | None = None) -> Decision:
    """Publish when forced, when there is nothing to compare with, or when new ≥ current − tolerance."""
    ok = current_f1 is None or new_f1 >= current_f1 - tolerance - 1e-12
    return Decision(ok or force, new_f1, current_f1, current_version, tolerance, force)


def load_current(model_dir: Path) -> tuple[int, bundle.Bundle] | None:
    """(version, bundle) of the version being served; None if there is none.

    A current version that cannot be loaded is logged and treated as absent: replacing it is the fix.
    """
    if not registry.versions(model_dir):
        return None
    try:
        version = registry.serving_version(model_dir)
        return version, bundle.load(model_dir / str(version))
    except TextstreamError as exc:
        logger.warning("cannot load the current version (%s): the quality gate compares with nothing and "
                       "cluster ids start afresh", exc)
        return None


def macro_f1(served_labels: Sequence[str], probs: np.ndarray, y_true: np.ndarray, labels: Sequence[str]) -> float:
    """The served version's macro-F1 from its probabilities `probs` of the evaluation texts (over
    `served_labels`, its own); a label it does not know counts as a wrong answer."""
    predicted = [served_labels[i] for i in probs.argmax(axis=1)]
    truth = [labels[i] for i in y_true]
    f1 = f1_score(truth, predicted, labels=list(labels), average="macro", zero_division=0)
    return round(float(f1), 4)

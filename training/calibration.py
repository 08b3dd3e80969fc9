"""Calibrated confidence: temperature scaling (Guo et al. 2017), expected calibration error, reliability.

One scalar T divides the classifier's logits before the softmax. It is fitted by minimising the
negative log-likelihood of the validation texts, whose logits neither branch was fitted on. T > 1
softens an overconfident model, T < 1 sharpens an underconfident one; dividing every logit by the
same positive number never changes which class is highest, so labels stay the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

BINS = 15
# Fitted on log T: T from 0.05 to 20 covers anything a softmax model produces in practice.
_LOG_T_BOUNDS = (np.log(0.05), np.log(20.0))
_FLOOR = 1e-30  # probabilities of exactly 0 (float32 underflow) get a finite log


def log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return np.asarray(z - np.log(np.exp(z).sum(axis=1, keepdims=True)))


def nll(logits: np.ndarray, y: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of softmax(logits / temperature)."""
    if len(y) == 0:
        return 0.0
    logp = log_softmax(np.asarray(logits, dtype=np.float64) / temperature)
    return float(-logp[np.arange(len(y)), y].mean())


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The T > 0 that minimises nll(logits, y, T); 1.0 when there is nothing to fit on (no texts,
    or every text's logits equal). Convex in 1/T, so a bounded scalar search finds the optimum."""
    from scipy.optimize import minimize_scalar

    z = np.asarray(logits, dtype=np.float64)
    if len(y) == 0 or np.ptp(z, axis=1).max(initial=0.0) == 0.0:
        return 1.0
    found = minimize_scalar(lambda log_t: nll(z, y, float(np.exp(log_t))), bounds=_LOG_T_BOUNDS, method="bounded",
                            options={"xatol": 1e-4})
    best = float(np.exp(found.x))
    # Never worse than leaving the model as it is (the search is bounded and approximate).
    return best if nll(z, y, best) < nll(z, y, 1.0) else 1.0


def rescale(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log(probs) / temperature): probabilities as if the logits had been divided by T.
    log(probs) equals the logits up to a constant per row, which the softmax ignores."""
    if temperature == 1.0:
        return np.asarray(probs)
    logp = np.log(np.maximum(np.asarray(probs, dtype=np.float64), _FLOOR))
    return np.asarray(np.exp(log_softmax(logp / temperature)))


@dataclass(frozen=True)
class Bin:
    """One confidence bin of a reliability diagram."""

    lower: float
    upper: float
    count: int
    confidence: float  # mean confidence of its texts (nan when empty)
    accuracy: float  # share of them labelled right (nan when empty)


def reliability(probs: np.ndarray, y: np.ndarray, bins: int = BINS) -> list[Bin]:
    """Texts binned by confidence (the top probability) into `bins` equal-width bins over [0, 1];
    each bin's mean confidence against its accuracy (a calibrated model has them equal)."""
    p = np.asarray(probs)
    confidence = p.max(axis=1) if len(p) else np.zeros(0)
    correct = p.argmax(axis=1) == y if len(p) else np.zeros(0, dtype=bool)
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Bin i holds (edges[i], edges[i+1]]; a confidence of exactly 0 goes to the first.
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    out = []
    for i in range(bins):
        members = index == i
        n = int(members.sum())
        out.append(Bin(float(edges[i]), float(edges[i + 1]), n,
                       float(confidence[members].mean()) if n else float("nan"),
                       float(correct[members].mean()) if n else float("nan")))
    return out


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, bins: int = BINS) -> float:
    """ECE: the gap |accuracy - confidence| of each bin, weighted by its share of the texts."""
    return ece_of(reliability(probs, y, bins))


def ece_of(table: Sequence[Bin]) -> float:
    """The expected calibration error of a reliability table."""
    total = sum(b.count for b in table)
    return float(sum(b.count * abs(b.accuracy - b.confidence) for b in table if b.count) / total) if total else 0.0


def summary(probs: np.ndarray, y: np.ndarray, temperature: float, validation: dict[str, float]) -> dict[str, Any]:
    """What a version records about its calibration (manifest `calibration`): the temperature, its
    effect on the validation texts it was fitted on, and ECE and NLL on the evaluation texts before
    and after it. `probs` are the served (calibrated) probabilities of the evaluation texts."""
    before = rescale(probs, 1.0 / temperature)
    logp_after, logp_before = (np.log(np.maximum(p, _FLOOR)) for p in (probs, before))
    return {
        "method": "temperature", "temperature": round(temperature, 4), "fitted_on": "validation", "bins": BINS,
        "validation": validation,
        "evaluation": {"texts": len(y),
                       "ece_before": round(expected_calibration_error(before, y), 4),
                       "ece_after": round(expected_calibration_error(probs, y), 4),
                       "nll_before": round(nll(logp_before, y), 4), "nll_after": round(nll(logp_after, y), 4)},
    }

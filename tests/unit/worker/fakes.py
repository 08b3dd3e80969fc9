"""Stand-ins for the worker's unit tests: a model version without TensorFlow."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from worker.bundle import Bundle, Inference


def fake_bundle(fails_on: str = "\0never", version: int = 3) -> Bundle:
    """Labels sport and tech (sport when the text says so), two clusters; the model call raises
    ValueError when any text of the call contains `fails_on`."""

    def infer(texts: Sequence[str], floor: np.ndarray | None = None, every_text: bool = False) -> Inference:
        if any(fails_on in t for t in texts):
            raise ValueError(f"cannot take {fails_on!r}")
        probs = np.array([[0.75, 0.25] if "sport" in t else [0.25, 0.75] for t in texts], dtype=np.float32)
        return Inference(probs.reshape(len(texts), 2), probs.reshape(len(texts), 2).copy(), np.ones(len(texts), bool))

    return Bundle(version=version, labels=("sport", "tech"), centroids=np.eye(2, dtype=np.float32), infer=infer)

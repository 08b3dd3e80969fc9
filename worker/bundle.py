"""A loaded model version: classifier, encoder and centroids behind one compiled call.

The hot path never calls `model.predict` (about 100 ms of fixed cost per call): both models run in
one `tf.function` with a fixed input signature, traced once at load and warmed up before use.
Models load in Keras safe mode, after every file hash matched the manifest; nothing is unpickled.

Importing this module does not import TensorFlow (5-15 s, more on a cold disk): the worker creates
its topics and answers /healthz first, and TensorFlow comes with the first version it loads.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from worker import registry, textfields
from worker.config import Settings
from worker.errors import BundleError

logger = logging.getLogger(__name__)

# Max-pooling over a masked LSTM is exact (padded steps repeat the last state); Keras warns anyway.
warnings.filterwarnings("ignore", message=".*does not support masking.*")

CLASSIFIER = "classifier.keras"
ENCODER = "encoder.keras"
CENTROIDS = "centroids.npy"
BUNDLE_FILES = (CLASSIFIER, ENCODER, CENTROIDS)
CHUNK = 64  # texts per model call after sorting a batch by length (bench/throughput.py)
# Characters per model call at most (a longer text goes alone): TensorFlow's tokenisation keeps about
# 14 bytes per byte of word-rich text while a call runs (64 texts of 1 MB: +1 GB), so calls over
# large texts are cut by size too; 4 M characters cost ~60 MB. Short texts never reach it.
CHUNK_CHARS = 4_000_000

_runtime_prepared = threading.Event()


class Inference(NamedTuple):
    """What one model call returns for n texts."""

    probs: np.ndarray  # (n, labels) class probabilities (a lower bound's where the LSTM did not run, worker/lstm_skip.py)
    embeddings: np.ndarray  # (n, embedding_dim)
    lstm_ran: np.ndarray  # (n,) bool: whether the LSTM branch ran for the text


# texts, review floor per label (None: 0), every_text (TEXTSTREAM_LSTM=always) -> Inference
InferFn = Callable[..., Inference]


@dataclass(frozen=True)
class Bundle:
    """One model version, ready to serve."""

    version: int
    labels: tuple[str, ...]
    centroids: np.ndarray  # (n_clusters, embedding_dim), unit rows
    infer: InferFn = field(repr=False)  # texts -> (class probabilities, embeddings)
    manifest: dict[str, Any] = field(repr=False, default_factory=dict)
    loaded_at: float = 0.0
    text_fields: tuple[str, ...] = textfields.DEFAULT  # the input fields its text is made of (worker/textfields.py)
    classifier: Any = field(repr=False, default=None)  # the Keras classifier, for explanations (worker/explain.py)
    cluster_terms: tuple[tuple[str, ...], ...] = ()  # per cluster id, its name (training/cluster_ids.py); may be ()


def configure_threads(settings: Settings) -> None:
    """TensorFlow's thread pools; must run before the first TensorFlow op of the process."""
    import tensorflow as tf

    try:
        if settings.inter_op_threads:
            tf.config.threading.set_inter_op_parallelism_threads(settings.inter_op_threads)
        if settings.intra_op_threads:
            tf.config.threading.set_intra_op_parallelism_threads(settings.intra_op_threads)
    except RuntimeError as exc:  # already initialised (a second app in one process): keep what is set
        logger.warning("TensorFlow thread settings not applied: %s", exc)


def prepare_runtime(settings: Settings) -> None:
    """Once per process, before the first version loads: import TensorFlow and Keras, set their
    threads, and move everything imported so far out of the collector's sight (gc.freeze: hundreds
    of thousands of objects), so that the full collection that frees a replaced version after a hot
    swap scans only what was created since, which shortens its pause. The versions themselves are
    created after the freeze and stay collectable."""
    if _runtime_prepared.is_set():
        return
    started = time.perf_counter()
    import keras  # noqa: F401

    from worker import layers  # noqa: F401  (registers the custom layers the saved models use)

    configure_threads(settings)
    gc.collect()
    gc.freeze()
    _runtime_prepared.set()
    logger.info("TensorFlow and Keras imported in %.1fs", time.perf_counter() - started)


def length_chunks(texts: Sequence[str], size: int, max_chars: int = CHUNK_CHARS) -> list[list[int]]:
    """Indices of `texts` in chunks of about `size`, shortest texts first.

    Keras runs a call's LSTM as many steps as its longest text (up to the model's cut), so a short
    email batched with news articles pays for their length; sorted chunks pay only for their own.
    The packed LSTM pays per token anyway, but chunks still bound its memory (steps x texts x 4
    units of floats per direction, 17 MB for 64 texts of 256 tokens) and its steps per call.
    Chunks are also cut where they would pass `max_chars` characters (a text longer than that goes alone).
    """
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    n = max(1, round(len(order) / size))
    chunks: list[list[int]] = []
    for chunk in np.array_split(np.array(order, dtype=np.int64), n) if order else []:
        current: list[int] = []
        chars = 0
        for i in chunk.tolist():
            if current and chars + len(texts[i]) > max_chars:
                chunks.append(current)
                current, chars = [], 0
            current.append(i)
            chars += len(texts[i])
        chunks.append(current)
    return chunks


def compile_infer(classifier: Any, encoder: Any, chunk: int = CHUNK, packed: bool = True) -> InferFn:
    """Wrap both models in one graph with a fixed signature: strings in, (probs, embeddings) out.
    With `packed`, the classifier's LSTM runs over packed sequences where the model allows it, and
    only for the texts whose label or route it can change (worker/lstm_skip.py)."""
    import tensorflow as tf

    from worker import layers, lstm_skip, packed_lstm  # noqa: F401  (layers: the custom layers the models use)

    n_labels = classifier.output_shape[-1]
    deep = packed_lstm.deep_logits_fn(classifier) if packed else None
    gated = lstm_skip.gated_fn(classifier, deep) if deep else None
    if gated is None:  # no bound for this model (or not packed): the LSTM runs for every text
        probabilities = (packed and packed_lstm.classifier_fn(classifier)) or (lambda c: classifier(c, training=False))

        def every(column: Any, floor: Any, every_text: Any) -> tuple[Any, Any]:
            return probabilities(column), tf.fill(tf.shape(column)[:1], True)

        gated = every

    @tf.function(input_signature=[tf.TensorSpec(shape=[None], dtype=tf.string),  # type: ignore[untyped-decorator]
                                  tf.TensorSpec(shape=[n_labels], dtype=tf.float32),
                                  tf.TensorSpec(shape=[], dtype=tf.bool)])
    def graph(texts: Any, floor: Any, every_text: Any) -> tuple[Any, Any, Any]:
        column = tf.expand_dims(texts, -1)  # the models take (batch, 1) strings
        probs, ran = gated(column, floor, every_text)
        return probs, encoder(column, training=False), ran

    def infer(texts: Sequence[str], floor: np.ndarray | None = None, every_text: bool = False) -> Inference:
        """`floor`: per label, the confidence under which a record goes to review (0: none)."""
        floors = tf.constant(np.zeros(n_labels) if floor is None else floor, dtype=tf.float32)
        run_all = tf.constant(every_text)
        out = Inference(np.empty((len(texts), n_labels), dtype=np.float32),
                        np.empty((len(texts), encoder.output_shape[-1]), dtype=np.float32),
                        np.empty(len(texts), dtype=bool))
        for idx in length_chunks(texts, chunk):
            p, e, r = graph(tf.constant([texts[i] for i in idx], dtype=tf.string), floors, run_all)
            out.probs[idx], out.embeddings[idx], out.lstm_ran[idx] = p.numpy(), e.numpy(), r.numpy()
        return out

    return infer


def load(folder: Path) -> Bundle:
    """Verify and load one version folder; raise BundleError saying what is wrong."""
    import keras

    from worker import layers  # noqa: F401  (registers the custom layers the saved models use)

    started = time.perf_counter()
    manifest = registry.verify(folder)
    missing = [name for name in BUNDLE_FILES if name not in manifest["files"]]
    if missing:
        raise BundleError(f"{folder}: manifest lacks {', '.join(missing)}")
    labels = manifest.get("labels")
    if not isinstance(labels, list) or len(labels) < 2 or not all(isinstance(x, str) and x for x in labels):
        raise BundleError(f"{folder}: manifest 'labels' must list at least two non-empty strings")
    try:
        text_fields = textfields.of_manifest(manifest)
    except ValueError as exc:
        raise BundleError(f"{folder}: manifest {exc}") from None
    try:
        classifier = keras.saving.load_model(folder / CLASSIFIER, compile=False, safe_mode=True)
        encoder = keras.saving.load_model(folder / ENCODER, compile=False, safe_mode=True)
        centroids = np.load(folder / CENTROIDS, allow_pickle=False)
    except Exception as exc:  # Keras raises many kinds for a corrupt file
        raise BundleError(f"{folder}: cannot load model files: {exc}") from exc

    n_out = classifier.output_shape[-1]
    if n_out != len(labels):
        raise BundleError(f"{folder}: classifier has {n_out} outputs but the manifest lists {len(labels)} labels")
    dim = encoder.output_shape[-1]
    if centroids.ndim != 2 or centroids.shape[1] != dim or centroids.shape[0] < 1:
        raise BundleError(f"{folder}: centroids shape {centroids.shape} does not fit embedding dim {dim}")
    if manifest.get("n_clusters") != centroids.shape[0] or manifest.get("embedding_dim") != dim:
        raise BundleError(f"{folder}: n_clusters/embedding_dim in the manifest do not match the files")

    infer = compile_infer(classifier, encoder)
    # Trace the graph and touch every kernel before the first real batch, so a swap adds no latency.
    probs, emb, _ = infer([" ".join(["warm-up"] * n) for n in (1, 10, 100, 1000)], every_text=True)
    if probs.shape != (4, len(labels)) or emb.shape != (4, dim) or not np.all(np.isfinite(probs)):
        raise BundleError(f"{folder}: warm-up produced shapes {probs.shape}/{emb.shape} or non-finite scores")
    unit = centroids / np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    bundle = Bundle(
        version=int(manifest["version"]),
        labels=tuple(labels),
        centroids=unit.astype(np.float32),
        infer=infer,
        manifest=manifest,
        loaded_at=time.time(),
        text_fields=text_fields,
        classifier=classifier,
        cluster_terms=cluster_names(manifest, unit.shape[0]),
    )
    calibration = manifest.get("calibration") or {}
    logger.info(
        "loaded model version=%d labels=%s clusters=%d text_fields=%s calibration=%s in %.2fs",
        bundle.version, ",".join(bundle.labels), unit.shape[0], ",".join(text_fields),
        # Versions trained before calibration serve their raw softmax: a threshold means less on them.
        f"temperature {calibration['temperature']}" if "temperature" in calibration else "none (T = 1)",
        time.perf_counter() - started,
    )
    return bundle


def cluster_names(manifest: dict[str, Any], n_clusters: int) -> tuple[tuple[str, ...], ...]:
    """Per cluster id, its top terms from the manifest; none for a version trained before clusters had
    names, or a list that is not one list of strings per cluster."""
    terms = manifest.get("cluster_terms")
    if (not isinstance(terms, list) or len(terms) != n_clusters
            or not all(isinstance(t, list) and all(isinstance(w, str) for w in t) for t in terms)):
        return ()
    return tuple(tuple(t) for t in terms)


def load_serving(root: Path) -> Bundle:
    """Load the version the registry says to serve (pinned, else highest)."""
    return load(root / str(registry.serving_version(root)))

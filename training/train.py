"""The training job: load data, train classifier and clusterer, evaluate on a held-out split, publish."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
from sklearn.cluster import KMeans
from sklearn.metrics import accuracy_score, f1_score, normalized_mutual_info_score
from sklearn.model_selection import train_test_split

from training import data
from training.models import EpochProgress, ModelConfig, build_autoencoder, build_classifier, strings
from worker import registry
from worker.bundle import CENTROIDS, CLASSIFIER, ENCODER, compile_infer
from worker.pipeline import assign_clusters

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    epochs: int = 12
    ae_epochs: int = 15
    batch_size: int = 64
    test_size: float = 0.15
    n_clusters: int | None = None  # default: number of labels
    seed: int = 42
    max_rows: int | None = None  # subsample for quick runs (stratified)


@dataclass(frozen=True)
class TrainResult:
    version: int
    metrics: dict[str, float]
    seconds: float


def _evaluate(classifier: Any, encoder: Any, centroids: np.ndarray, texts: list[str], y: np.ndarray) -> dict[str, float]:
    probs, emb = compile_infer(classifier, encoder)(texts)
    pred = probs.argmax(axis=1)
    clusters, _ = assign_clusters(emb, centroids)
    return {
        "accuracy": round(float(accuracy_score(y, pred)), 4),
        "macro_f1": round(float(f1_score(y, pred, average="macro")), 4),
        "nmi": round(float(normalized_mutual_info_score(y, clusters)), 4),
    }


def train(paths: Sequence[Path], model_dir: Path, cfg: TrainConfig = TrainConfig()) -> TrainResult:
    """Train, evaluate and publish one new version; returns its number and held-out metrics."""
    started = time.perf_counter()
    keras.utils.set_random_seed(cfg.seed)
    ds = data.load(paths)
    texts, labels = ds.texts, ds.labels
    if cfg.max_rows and len(texts) > cfg.max_rows:
        texts, _, labels, _ = train_test_split(texts, labels, train_size=cfg.max_rows, stratify=labels, random_state=cfg.seed)
    label_names = sorted(set(labels))
    index = {name: i for i, name in enumerate(label_names)}
    y = np.array([index[label] for label in labels])
    logger.info("data rows=%d skipped=%d classes=%s", len(texts), ds.skipped, ds.counts())

    tr_x, te_x, tr_y, te_y = train_test_split(texts, y, test_size=cfg.test_size, stratify=y, random_state=cfg.seed)

    logger.info("training classifier on %d texts, evaluating on %d", len(tr_x), len(te_x))
    classifier = build_classifier(tr_x, len(label_names), cfg.model)
    # Balanced class weights: SMS "ham" alone outnumbers all the news topics together.
    counts = np.bincount(tr_y, minlength=len(label_names))
    class_weight = {i: len(tr_y) / (len(label_names) * max(int(c), 1)) for i, c in enumerate(counts)}
    classifier.fit(
        strings(tr_x), tr_y, validation_split=0.1, epochs=cfg.epochs, batch_size=cfg.batch_size, verbose=0,
        class_weight=class_weight,
        callbacks=[
            EpochProgress("classifier", cfg.epochs),
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True),
        ],
    )

    logger.info("training autoencoder on the same training texts (labels unused)")
    autoencoder, encoder, vectors = build_autoencoder(tr_x, cfg.model)
    autoencoder.fit(
        vectors, vectors, epochs=cfg.ae_epochs, batch_size=cfg.batch_size, verbose=0,
        callbacks=[EpochProgress("autoencoder", cfg.ae_epochs)],
    )
    n_clusters = cfg.n_clusters or len(label_names)
    latent = np.array(encoder(strings(tr_x)), dtype=np.float32)
    latent /= np.maximum(np.linalg.norm(latent, axis=1, keepdims=True), 1e-12)
    kmeans = KMeans(n_clusters=n_clusters, n_init=10, random_state=cfg.seed).fit(latent)
    centroids = kmeans.cluster_centers_.astype(np.float32)
    centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)

    metrics = _evaluate(classifier, encoder, centroids, te_x, te_y)
    logger.info("held-out metrics %s", " ".join(f"{k}={v}" for k, v in metrics.items()))

    def write(folder: Path) -> dict[str, Any]:
        # No optimizer state: a third of the size, and the worker never trains.
        classifier.save(folder / CLASSIFIER, include_optimizer=False)
        encoder.save(folder / ENCODER, include_optimizer=False)
        np.save(folder / CENTROIDS, centroids, allow_pickle=False)
        return {
            "labels": label_names,
            "n_clusters": n_clusters,
            "embedding_dim": int(centroids.shape[1]),
            "data": {"sources": list(ds.sources), "rows": len(texts), "skipped": ds.skipped,
                     "train_rows": len(tr_x), "eval_rows": len(te_x), "classes": ds.counts()},
            "config": asdict(cfg),
            "metrics": metrics,
        }

    version = registry.publish(model_dir, write)
    seconds = time.perf_counter() - started
    logger.info("published version %d to %s in %.0fs", version, model_dir, seconds)
    return TrainResult(version, metrics, seconds)

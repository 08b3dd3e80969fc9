"""The training job: load data, train classifier and clusterer, evaluate, pass the quality gate, publish."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
from sklearn.model_selection import train_test_split

from training import calibration, classifier, cluster_ids, clusterer, data, evaluate, gate, report
from training.config import TrainConfig
from worker import registry, topics
from worker.bundle import CENTROIDS, CLASSIFIER, ENCODER, InferFn, compile_infer
from worker.config import Settings, load_settings
from worker.errors import DataError
from worker.predict import assign_clusters

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    version: int | None  # None when the quality gate refused to publish
    metrics: dict[str, float]
    seconds: float
    decision: gate.Decision
    timings: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict, repr=False)


def _split(texts: list[str], y: np.ndarray, size: float | int, seed: int) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """Stratified when every class has two texts or more, else plain random."""
    counts = np.bincount(y)
    stratify = y if counts[counts > 0].min() >= 2 else None
    try:
        a, b, ya, yb = train_test_split(texts, y, test_size=size, stratify=stratify, random_state=seed)
    except ValueError:  # too few texts per class for the requested size
        a, b, ya, yb = train_test_split(texts, y, test_size=size, random_state=seed)
    return list(a), list(b), np.asarray(ya), np.asarray(yb)


def _infer(infer: InferFn, texts: Sequence[str], every_text: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """A compiled call of worker/bundle.py (the new model's, or the served version's), in chunks:
    (probabilities, embeddings). For the new model what is evaluated is what will be served, with the
    LSTM on every text, so that the report's confidences are the model's, not worker/lstm_skip.py's bounds."""
    probs, emb = [], []
    for start in range(0, len(texts), 256):
        p, e, _ = infer(list(texts[start:start + 256]), every_text=every_text)
        probs.append(p)
        emb.append(e)
    return np.concatenate(probs), np.concatenate(emb)


def _accuracy(model: Any, texts: Sequence[str], y: np.ndarray) -> float:
    return round(float(np.mean(classifier.predict(model, texts).argmax(axis=1) == y)), 4)


def check_label_topics(names: Sequence[str], settings: Settings) -> None:
    """DataError naming the labels unless each gets its own valid Kafka topic under the worker's
    TEXTSTREAM_LABEL_TOPIC_PREFIX: checked before training, so no such version is ever published."""
    problems = topics.label_topic_problems(settings.label_topic_prefix, names, topics.reserved_topics(settings))
    if problems:
        raise DataError(f"the labels cannot each have their own topic with TEXTSTREAM_LABEL_TOPIC_PREFIX="
                        f"{settings.label_topic_prefix!r} (workers route each label to prefix + label); "
                        "rename them in the data:\n  " + "\n  ".join(problems))


def _prepare(paths: Sequence[Path], eval_paths: Sequence[Path] | None, cfg: TrainConfig,
             settings: Settings) -> dict[str, Any]:
    ds = data.load(paths, cfg.text_fields, cfg.label_field, cfg.bad_rows)
    texts, labels = ds.texts, ds.labels
    names = sorted(set(labels))
    check_label_topics(names, settings)
    index = {name: i for i, name in enumerate(names)}
    y = np.array([index[label] for label in labels])
    if cfg.max_rows and len(texts) > cfg.max_rows:
        texts, _, y, _ = _split(texts, y, len(texts) - cfg.max_rows, cfg.seed)
    if eval_paths:
        ev = data.load(eval_paths, cfg.text_fields, cfg.label_field, cfg.bad_rows, min_classes=1)
        unknown = sorted(set(ev.labels) - set(names))
        if unknown:
            raise DataError(f"evaluation labels {unknown} do not occur in the training data")
        tr_x, tr_y, te_x = texts, y, ev.texts
        te_y = np.array([index[label] for label in ev.labels])
        sources = [*ds.sources, *(f"{s} (evaluation)" for s in ev.sources)]
        skipped = ds.skipped + ev.skipped
    else:
        tr_x, te_x, tr_y, te_y = _split(texts, y, cfg.test_size, cfg.seed)
        sources, skipped = list(ds.sources), ds.skipped
    logger.info("data rows=%d skipped=%d train=%d eval=%d classes=%s", len(tr_x) + len(te_x), skipped, len(tr_x),
                len(te_x), dict(sorted(Counter(names[i] for i in tr_y.tolist()).items())))
    return {"names": names, "tr_x": tr_x, "tr_y": tr_y, "te_x": te_x, "te_y": te_y,
            "summary": {"sources": sources, "rows": len(tr_x) + len(te_x), "skipped": skipped,
                        "train_rows": len(tr_x), "eval_rows": len(te_x),
                        "classes": dict(sorted(Counter(names[i] for i in [*tr_y, *te_y]).items())),
                        "bad_rows": {k: v[:100] for k, v in ds.bad_rows.items()}}}


def check(paths: Sequence[Path], cfg: TrainConfig = TrainConfig(), eval_paths: Sequence[Path] | None = None,
          worker_settings: Settings | None = None) -> dict[str, Any]:
    """What `train` would train on, without training: the data summary (rows, skipped rows, classes)
    and the size of each split, with the texts per label in each. Raises DataError as `train` does."""
    d = _prepare(paths, eval_paths, cfg, worker_settings or load_settings())
    names, tr_y, te_y = d["names"], d["tr_y"], d["te_y"]
    _, _, fit_y, val_y = _split(d["tr_x"], tr_y, cfg.classifier.validation_fraction, cfg.seed)
    splits = {"fit": fit_y, "validation": val_y, "evaluation": te_y}
    summary = {k: v for k, v in d["summary"].items() if k != "bad_rows"}
    return {**summary, "labels": names, "splits": {k: len(v) for k, v in splits.items()},
            "per_label": {name: {k: int(np.sum(v == i)) for k, v in splits.items()} for i, name in enumerate(names)},
            "bad_rows": d["summary"]["bad_rows"]}


def train(paths: Sequence[Path], model_dir: Path, cfg: TrainConfig = TrainConfig(),
          eval_paths: Sequence[Path] | None = None, worker_settings: Settings | None = None) -> TrainResult:
    """Train, evaluate and (if the quality gate agrees) publish one new version. `worker_settings`
    (default: the TEXTSTREAM_* environment) give the label topic prefix the labels are checked against."""
    started = time.perf_counter()
    keras.utils.set_random_seed(cfg.seed)
    settings = worker_settings or load_settings()
    d = _prepare(paths, eval_paths, cfg, settings)
    names, tr_x, tr_y, te_x, te_y = d["names"], d["tr_x"], d["tr_y"], d["te_x"], d["te_y"]
    timings: dict[str, float] = {}

    t = time.perf_counter()
    fit_x, val_x, fit_y, val_y = _split(tr_x, tr_y, cfg.classifier.validation_fraction, cfg.seed)
    branches = classifier.build(fit_x, len(names), cfg.classifier)
    history = classifier.fit(branches, fit_x, fit_y, val_x, val_y, len(names), cfg.classifier)
    # Each branch alone on the evaluation split, before they are weighed into one model.
    branch_accuracy = {"lstm": _accuracy(branches.deep, te_x, te_y)}
    if branches.wide is not None:
        branch_accuracy["ngrams"] = _accuracy(branches.wide, te_x, te_y)
    classifier.apply_mix(branches, history)
    timings["classifier"] = time.perf_counter() - t

    t = time.perf_counter()
    n_clusters = cfg.clusterer.n_clusters or len(names)
    cluster_texts = tr_x + te_x if cfg.cluster_eval_texts else tr_x
    clu = clusterer.fit(cluster_texts, n_clusters, cfg.clusterer, cfg.seed)
    history["clusterer"] = clu.history
    served = gate.load_current(model_dir)
    stability: dict[str, Any] = {"matched_to_version": None}
    if served is not None:  # keep the served version's cluster ids (training/cluster_ids.py)
        # One pass of the served version over every text: its clusters of the clusterer's texts (a
        # prefix of these) and, below, its labels of the evaluation texts for the quality gate. Labels
        # are exact without the LSTM on every text (worker/lstm_skip.py); embeddings do not depend on it.
        served_probs, served_emb = _infer(served[1].infer, tr_x + te_x, every_text=False)
        before = assign_clusters(served_emb[:len(cluster_texts)], served[1].centroids)[0]
        matching = cluster_ids.match(before, clu.assigned, len(served[1].centroids), n_clusters)
        clu = clu.renumbered(matching.ids)
        stability = {"matched_to_version": served[0], "texts": len(cluster_texts),
                     "changed_share": round(matching.changed_share, 4)}
        logger.info("cluster ids matched to version %d: %.1f%% of the %d training texts changed cluster id",
                    served[0], 100 * matching.changed_share, len(cluster_texts))
    timings["clusterer"] = time.perf_counter() - t

    t = time.perf_counter()
    probs, emb = _infer(compile_infer(branches.classifier, clu.encoder), te_x)
    clusters, _ = assign_clusters(emb, clu.centroids)
    cls_eval = evaluate.classification(te_y, probs.argmax(axis=1), names)
    clu_eval = evaluate.clustering(te_y, clusters, emb, seed=cfg.seed)
    metrics = evaluate.headline(cls_eval, clu_eval)
    temperature = classifier.temperature(history)
    calibrated = calibration.summary(probs, te_y, temperature, history.get("calibration", [{}])[0])
    timings["evaluation"] = time.perf_counter() - t
    logger.info("held-out metrics %s", " ".join(f"{k}={v}" for k, v in metrics.items()))
    logger.info("calibration temperature=%.3f on the evaluation split: ECE %s -> %s", temperature,
                calibrated["evaluation"]["ece_before"], calibrated["evaluation"]["ece_after"])

    current = (served[0], gate.macro_f1(served[1].labels, served_probs[len(tr_x):], te_y, names)) if served else None
    decision = gate.decide(metrics["macro_f1"], current[1] if current else None, cfg.gate_tolerance, cfg.force,
                           current[0] if current else None)
    (logger.info if decision.publish else logger.warning)("%s", decision.describe())
    # Each stage of the clusterer on the evaluation texts (the clusterer saw them, without labels), or
    # on the training texts when it did not.
    rows, y_rows = (slice(len(tr_x), None), te_y) if cfg.cluster_eval_texts else (slice(0, len(tr_x)), tr_y)
    ablation = evaluate.cluster_ablation({k: v[rows] for k, v in clu.stages.items()}, y_rows)
    clu_eval = {**clu_eval, "cluster_ids": stability, "ablation_nmi": ablation,
                "ablation_texts": "evaluation" if cfg.cluster_eval_texts else "training"}
    details = {"classification": cls_eval, "clustering": clu_eval, "branch_weights": history.get("mix", [{}])[0],
               "branch_accuracy": branch_accuracy}
    if not decision.publish:
        return TrainResult(None, metrics, time.perf_counter() - started, decision, timings,
                           {**details, "calibration": calibrated})

    def write(folder: Path) -> dict[str, Any]:
        # No optimizer state: a third of the size, and the worker never trains.
        branches.classifier.save(folder / CLASSIFIER, include_optimizer=False)
        clu.encoder.save(folder / ENCODER, include_optimizer=False)
        np.save(folder / CENTROIDS, clu.centroids, allow_pickle=False)
        timings["total"] = time.perf_counter() - started
        report.write(folder, report.ReportInput(
            labels=names, classification=cls_eval, clustering=clu_eval, history=history, embeddings=emb,
            clusters=clusters, y_true=te_y, data=d["summary"], settings=_flat(cfg.model_dump()), timings=timings,
            branches={"accuracy": branch_accuracy, "weights": details["branch_weights"]},
            probs=probs, calibration=calibrated, cluster_terms=clu.terms,
        ))
        return {
            "labels": names,
            # The prefix the labels were checked against; a worker checks again with its own.
            "label_topic_prefix": settings.label_topic_prefix,
            # The input fields the text is made of, joined as worker/textfields.py joins them.
            "text_fields": list(cfg.text_fields),
            "n_clusters": n_clusters,
            # Per cluster id, its top terms: the cluster's name (training/cluster_ids.py).
            "cluster_terms": clu.terms,
            "embedding_dim": int(clu.centroids.shape[1]),
            "data": d["summary"],
            "config": cfg.model_dump(),
            "metrics": metrics,
            # The temperature is already in classifier.keras (its logits are divided by it): recorded
            # here for readers; a version without this key serves its uncalibrated softmax (T = 1).
            "calibration": calibrated,
            "evaluation": details,
            "gate": asdict(decision),
            "timings_s": {k: round(v, 1) for k, v in timings.items()},
        }

    version = registry.publish(model_dir, write)
    seconds = time.perf_counter() - started
    logger.info("published version %d to %s in %.0fs", version, model_dir, seconds)
    return TrainResult(version, metrics, seconds, decision, timings, {**details, "calibration": calibrated})


def _flat(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out

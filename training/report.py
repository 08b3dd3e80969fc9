"""The evaluation report written into every version: report.md plus PNG plots, under `report/`."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from training import calibration as cal
from worker import registry

logger = logging.getLogger(__name__)

REPORT_DIR = "report"
REPORT_MD = "report.md"
CONFUSION_PNG = "confusion.png"
CURVES_PNG = "training_curves.png"
EMBEDDINGS_PNG = "embeddings.png"
RELIABILITY_PNG = "reliability.png"


@dataclass(frozen=True)
class ReportInput:
    labels: Sequence[str]
    classification: dict[str, Any]
    clustering: dict[str, Any]
    history: dict[str, list[dict[str, float]]]  # stage → per-epoch figures
    embeddings: np.ndarray  # evaluation texts' embeddings
    clusters: np.ndarray  # their clusters
    y_true: np.ndarray  # their labels (indices into labels)
    data: dict[str, Any]
    settings: dict[str, Any]
    timings: dict[str, float]
    branches: dict[str, Any] = field(default_factory=dict)  # {"accuracy": {...}, "weights": {...}}
    probs: np.ndarray | None = None  # served (calibrated) probabilities of the evaluation texts
    calibration: dict[str, Any] = field(default_factory=dict)  # training.calibration.summary
    cluster_terms: Sequence[Sequence[str]] = ()  # per cluster id, its top terms (training/cluster_ids.py)


def _tick(label: str, i: int) -> str:
    # The default font has no CJK glyphs: such labels are shown by index (report.md maps them).
    return label if label.isascii() else str(i)


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(path: Path, labels: Sequence[str], confusion: list[list[int]]) -> None:
    plt = _plt()
    m = np.asarray(confusion)
    size = max(4.0, 0.5 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(m, cmap="Blues")
    ticks = [_tick(label, i) for i, label in enumerate(labels)]
    ax.set_xticks(range(len(labels)), ticks, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), ticks)
    if len(labels) <= 20:
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if m[i, j] > m.max() / 2 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusion matrix (evaluation split)")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_curves(path: Path, history: dict[str, list[dict[str, float]]]) -> None:
    plt = _plt()
    stages = [s for s in ("deep", "wide", "clusterer") if history.get(s)]
    fig, axes = plt.subplots(1, max(len(stages), 1), figsize=(4.5 * max(len(stages), 1), 3.5), squeeze=False)
    titles = {"deep": "classifier: LSTM branch", "wide": "classifier: n-gram branch (linear SVM)", "clusterer": "clusterer"}
    for ax, stage in zip(axes[0], stages, strict=False):
        rows = history[stage]
        keys = list(dict.fromkeys(k for r in rows for k in r if k not in ("stage", "epoch", "changed")))
        if len(rows) == 1:  # fitted in one go (the SVM): its figures as bars
            ax.bar(keys, [rows[0][k] for k in keys], color="tab:blue")
            for i, key in enumerate(keys):
                ax.text(i, rows[0][key], f"{rows[0][key]:.4f}", ha="center", va="bottom", fontsize=8)
            ax.set_ylim(0, 1.1)
            ax.set_title(titles[stage])
            continue
        for key in keys:
            ax.plot(range(1, len(rows) + 1), [r.get(key, np.nan) for r in rows], marker="o", markersize=3, label=key)
        ax.set_title(titles[stage])
        ax.set_xlabel("epoch" if stage != "clusterer" else "epoch (autoencoder, then DEC)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_embeddings(path: Path, embeddings: np.ndarray, clusters: np.ndarray, seed: int = 0, sample: int = 3000) -> None:
    """2-D PCA projection of the evaluation texts' embeddings, coloured by cluster."""
    from sklearn.decomposition import PCA

    plt = _plt()
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(embeddings))[:sample]
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    if len(idx) >= 2 and embeddings.shape[1] >= 2:
        xy = PCA(2, random_state=seed).fit_transform(embeddings[idx])
        scatter = ax.scatter(xy[:, 0], xy[:, 1], c=clusters[idx], cmap="tab20", s=6)
        ax.legend(*scatter.legend_elements(num=None), title="cluster", fontsize=6, loc="best", markerscale=0.7)
    ax.set_title("Embeddings (PCA), coloured by cluster")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_reliability(path: Path, before: Sequence[cal.Bin], after: Sequence[cal.Bin], temperature: float) -> None:
    """Reliability diagram: accuracy against mean confidence per bin, before and after calibration."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfectly calibrated")
    for bins, name, colour in ((before, "before (T = 1)", "tab:orange"), (after, f"after (T = {temperature:.2f})", "tab:blue")):
        filled = [b for b in bins if b.count]
        ax.plot([b.confidence for b in filled], [b.accuracy for b in filled], marker="o", markersize=4, color=colour,
                label=f"{name}, ECE {cal.ece_of(bins):.4f}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("confidence (mean of the bin)")
    ax.set_ylabel("accuracy of the bin")
    ax.set_title(f"Reliability on the evaluation split ({len(after)} bins)")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _reliability_tables(r: ReportInput) -> tuple[list[cal.Bin], list[cal.Bin]] | None:
    if r.probs is None or not r.calibration:
        return None
    t = float(r.calibration["temperature"])
    return cal.reliability(cal.rescale(r.probs, 1.0 / t), r.y_true), cal.reliability(r.probs, r.y_true)


def _calibration_section(r: ReportInput) -> str:
    tables = _reliability_tables(r)
    if tables is None:
        return ""
    c, ev = r.calibration, r.calibration["evaluation"]
    before, after = tables
    rows = [[f"{a.lower:.3f}–{a.upper:.3f}", b.count, "–" if not b.count else f"{b.confidence:.3f}",
             "–" if not b.count else f"{b.accuracy:.3f}", a.count, "–" if not a.count else f"{a.confidence:.3f}",
             "–" if not a.count else f"{a.accuracy:.3f}"]
            for b, a in zip(before, after, strict=True) if a.count or b.count]
    val = c.get("validation") or {}
    fitted = (f" (validation NLL {val['val_nll_before']:.4f} → {val['val_nll_after']:.4f})"
              if "val_nll_before" in val else "")
    table = _table(["confidence", "texts before", "confidence before", "accuracy before",
                    "texts after", "confidence after", "accuracy after"], rows)
    return f"""## Confidence calibration

The served confidence is the top probability after temperature scaling: the classifier's logits are
divided by T = {c['temperature']:.4f}, fitted on the validation texts by minimising their negative
log-likelihood{fitted}. The labels do not change. On the evaluation split, expected calibration error
({c['bins']} equal-width bins) {ev['ece_before']:.4f} before, {ev['ece_after']:.4f} after; negative
log-likelihood {ev['nll_before']:.4f} before, {ev['nll_after']:.4f} after.

Reliability (bins with texts only; a calibrated model has accuracy ≈ confidence in every bin):

{table}

![reliability diagram]({RELIABILITY_PNG})
"""


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown(r: ReportInput) -> str:
    cls, clu = r.classification, r.clustering
    labels = list(r.labels)
    per_class = [[i, name, f"{v['precision']:.4f}", f"{v['recall']:.4f}", f"{v['f1']:.4f}", v["support"]]
                 for i, (name, v) in enumerate(cls["per_class"].items())]
    confusion = [[f"{i} {labels[i]}", *row] for i, row in enumerate(cls["confusion"])]
    k = len(clu["sizes"])
    composition = []
    for c in range(k):
        members = r.y_true[r.clusters == c]
        if len(members):
            top = np.bincount(members, minlength=len(labels))
            best = int(top.argmax())
            composition.append([c, len(members), labels[best], f"{top[best] / len(members):.2f}"])
        else:
            composition.append([c, 0, "–", "–"])
        composition[-1].append(", ".join(r.cluster_terms[c]) if c < len(r.cluster_terms) else "")
    timing = ", ".join(f"{k} {v:.0f} s" for k, v in r.timings.items())
    acc, w = r.branches.get("accuracy") or {}, r.branches.get("weights") or {}
    branch_line = ""
    if "ngrams" in acc and "lstm_weight" in w:
        branch_line = (f"What each branch adds, accuracy on this split: the n-gram branch alone {acc['ngrams']:.4f}, "
                       f"the LSTM alone {acc['lstm']:.4f}, the mix (served) {cls['accuracy']:.4f}. Their weights in "
                       f"the served model (chosen on the validation texts): {registry.describe_mix(w)}.\n")
    ids = clu.get("cluster_ids") or {}
    if ids.get("matched_to_version") is not None:
        ids_line = (f"Cluster ids were matched to version {ids['matched_to_version']}'s by the {ids['texts']} training "
                    f"texts they share: {ids['changed_share']:.1%} of those texts changed cluster id.\n")
    else:
        ids_line = "No version was serving: cluster ids start here.\n"
    stage_names = {"lsa_kmeans": "LSA + k-means (the SVD start alone)",
                   "autoencoder_kmeans": "the autoencoder's embedding + k-means", "dec": "+ DEC (served)"}
    ablation = clu.get("ablation_nmi") or {}
    ablation_line = ""
    if ablation:
        ablation_line = (f"What each stage adds, NMI on the {clu.get('ablation_texts', 'evaluation')} texts: "
                         + "; ".join(f"{stage_names.get(k, k)} {v:.4f}" for k, v in ablation.items()) + ".\n")
    settings = "\n".join(f"- `{k}`: {v}" for k, v in r.settings.items())
    corner = "true \\ predicted"
    return f"""# Model version report

Data: {', '.join(r.data['sources'])}; {r.data['rows']} rows ({r.data['skipped']} skipped), \
{r.data['train_rows']} for training, {r.data['eval_rows']} held out for evaluation.
Training time: {timing}.

## Classifier on the evaluation split

| accuracy | macro-F1 |
|---|---|
| {cls['accuracy']:.4f} | {cls['macro_f1']:.4f} |

{branch_line}
{_table(['#', 'class', 'precision', 'recall', 'F1', 'support'], per_class)}

Confusion matrix (rows: true class, columns: predicted class, in the order above):

{_table([corner, *[str(i) for i in range(len(labels))]], confusion)}

![confusion matrix]({CONFUSION_PNG})

![training curves]({CURVES_PNG})

## Clusters of the evaluation split

Fitted without labels; the labels only score them.

| NMI | ARI | purity | silhouette (cosine) | clusters |
|---|---|---|---|---|
| {clu['nmi']:.4f} | {clu['ari']:.4f} | {clu['purity']:.4f} | {clu['silhouette']:.4f} | {k} |

{ablation_line}{ids_line}
{_table(['cluster', 'texts', 'most common label', 'share', 'top terms (its name)'], composition)}

![embeddings coloured by cluster]({EMBEDDINGS_PNG})

{_calibration_section(r)}
## Settings

{settings}
"""


def write(folder: Path, r: ReportInput) -> list[str]:
    """Write report.md and the plots into folder/report/; returns their paths relative to `folder`."""
    out = folder / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # matplotlib font fallbacks
        plot_confusion(out / CONFUSION_PNG, r.labels, r.classification["confusion"])
        plot_curves(out / CURVES_PNG, r.history)
        plot_embeddings(out / EMBEDDINGS_PNG, r.embeddings, r.clusters)
        tables = _reliability_tables(r)
        if tables is not None:
            plot_reliability(out / RELIABILITY_PNG, *tables, float(r.calibration["temperature"]))
    (out / REPORT_MD).write_text(markdown(r), encoding="utf-8")
    names = [REPORT_MD, CONFUSION_PNG, CURVES_PNG, EMBEDDINGS_PNG, *([RELIABILITY_PNG] if tables is not None else [])]
    return [f"{REPORT_DIR}/{name}" for name in names]

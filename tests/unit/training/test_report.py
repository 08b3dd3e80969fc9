"""The version report: report.md with the figures it is given, and the plots it links to, written into tmp_path."""

from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from training import report
from training.report import ReportInput

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

LABELS = ["sport", "体育", "tech"]
Y_TRUE = np.array([0, 0, 1, 1, 2, 2])
CLUSTERS = np.array([0, 0, 0, 2, 2, 2])  # cluster 1 is empty

CLASSIFICATION: dict[str, Any] = {
    "accuracy": 0.8125,
    "macro_f1": 0.79,
    "per_class": {
        "sport": {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2},
        "体育": {"precision": 0.6667, "recall": 1.0, "f1": 0.8, "support": 2},
        "tech": {"precision": 1.0, "recall": 0.5, "f1": 0.6667, "support": 2},
    },
    "confusion": [[1, 1, 0], [0, 2, 0], [1, 0, 1]],
}
CLUSTERING: dict[str, Any] = {"nmi": 0.4321, "ari": 0.25, "purity": 0.6667, "silhouette": 0.12, "sizes": [3, 0, 3]}
HISTORY: dict[str, list[dict[str, float]]] = {
    "deep": [{"loss": 1.1, "accuracy": 0.5, "val_accuracy": 0.45}, {"loss": 0.7, "accuracy": 0.7, "val_accuracy": 0.6}],
    "wide": [{"accuracy": 0.9, "val_accuracy": 0.8}],
    "clusterer": [{"stage": 0.0, "epoch": 1.0, "reconstruction_loss": 0.5},
                  {"stage": 1.0, "epoch": 1.0, "kl_loss": 0.1, "changed": 0.2}],
    "mix": [{"lstm_weight": 0.4, "ngram_weight": 0.6, "val_accuracy": 0.8}],
}
BRANCHES: dict[str, Any] = {"accuracy": {"lstm": 0.75, "ngrams": 0.8},
                            "weights": {"lstm_weight": 0.4, "ngram_weight": 0.6}}


def make_input(**changes: Any) -> ReportInput:
    fields: dict[str, Any] = {
        "labels": LABELS, "classification": CLASSIFICATION, "clustering": CLUSTERING, "history": HISTORY,
        "embeddings": np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32), "clusters": CLUSTERS,
        "y_true": Y_TRUE,
        "data": {"sources": ["ag_news", "local.csv"], "rows": 1000, "skipped": 3, "train_rows": 800, "eval_rows": 197},
        "settings": {"seed": 0, "epochs": 3}, "timings": {"classifier": 12.4, "clusterer": 3.6}, "branches": BRANCHES,
    }
    fields.update(changes)
    return ReportInput(**fields)


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == PNG_MAGIC, f"{path.name} is not a PNG"
    width, height = struct.unpack(">II", head[16:24])  # the IHDR chunk
    return width, height


# --- report.md ----------------------------------------------------------------------------------


def test_markdown_carries_the_classifier_figures() -> None:
    md = report.markdown(make_input())
    assert "| 0.8125 | 0.7900 |" in md
    assert "| 0 | sport | 0.5000 | 0.5000 | 0.5000 | 2 |" in md
    assert "| 1 | 体育 | 0.6667 | 1.0000 | 0.8000 | 2 |" in md
    assert "| 2 | tech | 1.0000 | 0.5000 | 0.6667 | 2 |" in md
    # confusion rows carry index and name (the plot shows a CJK label by its index only)
    assert "| 0 sport | 1 | 1 | 0 |" in md
    assert "| 1 体育 | 0 | 2 | 0 |" in md
    assert "| 2 tech | 1 | 0 | 1 |" in md
    assert "| true \\ predicted | 0 | 1 | 2 |" in md


def test_markdown_carries_the_cluster_figures_and_composition() -> None:
    md = report.markdown(make_input())
    assert "| 0.4321 | 0.2500 | 0.6667 | 0.1200 | 3 |" in md  # NMI, ARI, purity, silhouette, clusters
    # cluster 0 holds sport, sport, 体育; cluster 1 nothing; cluster 2 体育, tech, tech
    assert "| 0 | 3 | sport | 0.67 |  |" in md
    assert "| 1 | 0 | – | – |  |" in md
    assert "| 2 | 3 | tech | 0.67 |  |" in md
    assert "No version was serving: cluster ids start here." in md


def test_markdown_names_the_clusters_and_says_how_their_ids_were_kept() -> None:
    clustering = {**make_input().clustering, "cluster_ids": {"matched_to_version": 4, "texts": 800, "changed_share": 0.021},
                  "ablation_nmi": {"lsa_kmeans": 0.41, "autoencoder_kmeans": 0.42, "dec": 0.4321},
                  "ablation_texts": "evaluation"}
    md = report.markdown(make_input(clustering=clustering, cluster_terms=[["goal", "match"], [], ["chip", "phone"]]))
    assert "| 0 | 3 | sport | 0.67 | goal, match |" in md and "| 2 | 3 | tech | 0.67 | chip, phone |" in md
    assert "matched to version 4's by the 800 training texts they share: 2.1% of those texts changed cluster id" in md
    assert ("NMI on the evaluation texts: LSA + k-means (the SVD start alone) 0.4100; the autoencoder's embedding + "
            "k-means 0.4200; + DEC (served) 0.4321.") in md


def test_markdown_carries_data_timings_settings_and_branches() -> None:
    md = report.markdown(make_input())
    assert ("Data: ag_news, local.csv; 1000 rows (3 skipped), 800 for training, 197 held out for evaluation."
            in md)
    assert "Training time: classifier 12 s, clusterer 4 s." in md
    assert "- `seed`: 0\n- `epochs`: 3" in md
    assert ("What each branch adds, accuracy on this split: the n-gram branch alone 0.8000, the LSTM alone 0.7500, "
            "the mix (served) 0.8125.") in md
    assert "LSTM weight 0.4, n-gram weight 0.6." in md


@pytest.mark.parametrize(
    "branches",
    [{}, {"accuracy": {"lstm": 0.75}, "weights": {}}],  # not given; an LSTM-only model (no n-gram branch)
)
def test_markdown_without_a_second_branch_has_no_branch_line(branches: dict[str, Any]) -> None:
    md = report.markdown(make_input(branches=branches))
    assert "What each branch adds" not in md
    assert "| 0.8125 | 0.7900 |" in md


# Served (calibrated) probabilities of the six evaluation texts; T = 2 was fitted on validation texts.
PROBS = np.array([[0.9, 0.05, 0.05], [0.5, 0.3, 0.2], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.6, 0.1, 0.3],
                  [0.1, 0.1, 0.8]])
CALIBRATION: dict[str, Any] = {
    "method": "temperature", "temperature": 2.0, "fitted_on": "validation", "bins": 15,
    "validation": {"temperature": 2.0, "val_nll_before": 0.9, "val_nll_after": 0.6},
    "evaluation": {"texts": 6, "ece_before": 0.2512, "ece_after": 0.1234, "nll_before": 1.1, "nll_after": 0.7},
}


def test_markdown_carries_the_calibration_and_a_reliability_table() -> None:
    from training.calibration import reliability, rescale

    md = report.markdown(make_input(probs=PROBS, calibration=CALIBRATION))
    assert "divided by T = 2.0000" in md and "(validation NLL 0.9000 → 0.6000)" in md
    assert "(15 equal-width bins) 0.2512 before, 0.1234 after" in md and "log-likelihood 1.1000 before, 0.7000 after" in md
    after = [b for b in reliability(PROBS, Y_TRUE) if b.count]
    before = reliability(rescale(PROBS, 0.5), Y_TRUE)
    # One row per bin holding texts before or after; e.g. the texts at 0.8 (both right) after calibration.
    assert sum(b.count for b in after) == 6
    row = next(b for b in after if b.lower < 0.8 <= b.upper)
    assert f"| {row.count} | {row.confidence:.3f} | {row.accuracy:.3f} |" in md and row.accuracy == 1.0
    assert sum(1 for line in md.splitlines() if re.match(r"\| \d\.\d{3}–\d\.\d{3} \|", line)) == len(
        [1 for b, a in zip(before, reliability(PROBS, Y_TRUE), strict=True) if a.count or b.count])


def test_markdown_without_calibration_has_no_calibration_section() -> None:
    assert "Confidence calibration" not in report.markdown(make_input())


# --- files --------------------------------------------------------------------------------------


def test_write_creates_the_files_it_lists(tmp_path: Path) -> None:
    written = report.write(tmp_path, make_input())
    assert written == ["report/report.md", "report/confusion.png", "report/training_curves.png",
                       "report/embeddings.png"]
    for name in written:
        assert (tmp_path / name).is_file() and (tmp_path / name).stat().st_size > 0
    for name in written[1:]:
        width, height = png_size(tmp_path / name)
        assert width > 100 and height > 100
    md = (tmp_path / "report" / "report.md").read_text(encoding="utf-8")
    assert md == report.markdown(make_input())
    # every image the markdown shows is there, next to it
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert sorted(links) == sorted(Path(n).name for n in written[1:])
    assert all((tmp_path / "report" / link).is_file() for link in links)


def test_write_adds_the_reliability_diagram_with_calibration(tmp_path: Path) -> None:
    written = report.write(tmp_path, make_input(probs=PROBS, calibration=CALIBRATION))
    assert written[-1] == "report/reliability.png"
    width, height = png_size(tmp_path / written[-1])
    assert width > 100 and height > 100
    assert "![reliability diagram](reliability.png)" in (tmp_path / written[0]).read_text(encoding="utf-8")


def test_training_curves_have_one_panel_per_stage(tmp_path: Path) -> None:
    report.plot_curves(tmp_path / "all.png", HISTORY)
    report.plot_curves(tmp_path / "wide.png", {"wide": HISTORY["wide"]})
    (w_all, h_all), (w_one, h_one) = png_size(tmp_path / "all.png"), png_size(tmp_path / "wide.png")
    assert h_all == h_one
    assert w_all == pytest.approx(3 * w_one, abs=3)  # deep, wide, clusterer side by side; "mix" is no stage


def test_write_copes_with_missing_history_and_flat_embeddings(tmp_path: Path) -> None:
    """A report is written even with nothing to plot: no training history, one-dimensional embeddings."""
    r = make_input(history={}, embeddings=np.zeros((6, 1), dtype=np.float32), branches={})
    written = report.write(tmp_path / "v7", r)
    for name in written[1:]:
        png_size(tmp_path / "v7" / name)
    assert "| 0.4321 | 0.2500 | 0.6667 | 0.1200 | 3 |" in (tmp_path / "v7" / written[0]).read_text(encoding="utf-8")


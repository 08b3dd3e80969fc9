from __future__ import annotations

from pathlib import Path

from worker import registry


def test_training_publishes_a_verified_version_that_learned(tiny_registry: Path) -> None:
    manifest = registry.verify(tiny_registry / "1")
    assert manifest["labels"] == ["business", "entertainment", "politics", "sport", "tech"]
    assert manifest["n_clusters"] == 5
    assert set(manifest["files"]) == {"classifier.keras", "encoder.keras", "centroids.npy"}
    assert manifest["data"]["rows"] == 400 and manifest["data"]["eval_rows"] == 60
    metrics = manifest["metrics"]
    # Chance is 0.2 for five balanced classes; even the tiny model must clearly beat it.
    assert metrics["accuracy"] > 0.35
    assert 0.0 < metrics["nmi"] <= 1.0
    assert 0.0 < metrics["macro_f1"] <= 1.0

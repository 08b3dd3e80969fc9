from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np
import orjson
import pytest

from tests.factories import TINY, copy_registry
from training.train import train
from worker import bundle, registry
from worker.config import load_settings
from worker.errors import DataError
from worker.predict import assign_clusters

BBC_TEST = Path(__file__).resolve().parents[3] / "data" / "bbc_news_test.jsonl.gz"


def test_training_publishes_a_verified_version_that_learned(tiny_registry: Path) -> None:
    manifest = registry.verify(tiny_registry / "1")
    assert manifest["labels"] == ["business", "entertainment", "politics", "sport", "tech"]
    assert manifest["n_clusters"] == 5
    assert manifest["text_fields"] == ["text"]
    assert {"classifier.keras", "encoder.keras", "centroids.npy"} <= set(manifest["files"])
    assert manifest["data"]["rows"] == 400 and manifest["data"]["eval_rows"] == 60
    metrics = manifest["metrics"]
    # Chance is 0.2 for five balanced classes; even the tiny model must clearly beat it.
    assert metrics["accuracy"] > 0.6
    assert 0.2 < metrics["nmi"] <= 1.0
    assert 0.0 < metrics["macro_f1"] <= 1.0
    assert set(metrics) == {"accuracy", "macro_f1", "nmi", "ari", "purity", "silhouette"}
    assert manifest["gate"]["publish"] is True and manifest["gate"]["current_f1"] is None
    # The clusterer's ablation: each stage on the evaluation texts; the last is the served partition.
    ablation = manifest["evaluation"]["clustering"]["ablation_nmi"]
    assert list(ablation) == ["lsa_kmeans", "autoencoder_kmeans", "dec"]
    assert abs(ablation["dec"] - metrics["nmi"]) < 0.02 and all(0 <= v <= 1 for v in ablation.values())
    report = (tiny_registry / "1" / "report" / "report.md").read_text()
    assert "LSA + k-means (the SVD start alone)" in report and "the n-gram branch alone" in report


def test_report_files_are_hashed_and_agree_with_the_manifest(tiny_registry: Path) -> None:
    folder = tiny_registry / "1"
    manifest = registry.verify(folder)
    for name in ["report/report.md", "report/confusion.png", "report/training_curves.png", "report/embeddings.png"]:
        assert name in manifest["files"]
        if name.endswith(".png"):
            assert (folder / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (folder / "report" / "report.md").read_text(encoding="utf-8")
    m = manifest["metrics"]
    assert f"| {m['accuracy']:.4f} | {m['macro_f1']:.4f} |" in report
    assert f"| {m['nmi']:.4f} | {m['ari']:.4f} | {m['purity']:.4f} | {m['silhouette']:.4f} | 5 |" in report
    evaluation = manifest["evaluation"]["classification"]
    assert sum(map(sum, evaluation["confusion"])) == manifest["data"]["eval_rows"]
    for name, figures in evaluation["per_class"].items():
        assert re.search(rf"\| {name} \| {figures['precision']:.4f} \| {figures['recall']:.4f} \|", report)
    assert sum(manifest["evaluation"]["clustering"]["sizes"]) == manifest["data"]["eval_rows"]


def test_the_version_records_its_calibration_and_reports_it(tiny_registry: Path) -> None:
    folder = tiny_registry / "1"
    manifest = registry.verify(folder)
    cal = manifest["calibration"]
    assert cal["method"] == "temperature" and cal["fitted_on"] == "validation" and cal["temperature"] > 0
    assert cal["validation"]["val_nll_after"] <= cal["validation"]["val_nll_before"]
    ev = cal["evaluation"]
    assert ev["texts"] == manifest["data"]["eval_rows"]
    assert all(0 <= ev[k] <= 1 for k in ("ece_before", "ece_after"))
    assert "report/reliability.png" in manifest["files"]
    report = (folder / "report" / "report.md").read_text(encoding="utf-8")
    assert f"{ev['ece_before']:.4f} before, {ev['ece_after']:.4f} after" in report


def test_served_predictions_match_the_evaluation(tiny_registry: Path) -> None:
    """What the manifest reports is what the worker computes: same compiled call, same files."""
    served = bundle.load_serving(tiny_registry)
    probs, emb, _ = served.infer(["The striker scored twice in the cup final.", "Shares fell as profits slumped."])
    assert probs.shape == (2, 5) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)  # the encoder returns unit vectors


def test_the_quality_gate_refuses_a_worse_model_unless_forced(tiny_registry: Path, tmp_path: Path) -> None:
    reg = copy_registry(tiny_registry, tmp_path / "r")
    # No n-gram branch, one epoch of a tiny LSTM: clearly worse than version 1 on the same texts.
    worse = TINY.model_copy(update={"classifier": TINY.classifier.model_copy(update={"ngram_vocab": 0, "epochs": 1}),
                                    "gate_tolerance": 0.0})
    refused = train([Path(p) for p in registry.read_manifest(reg / "1")["data"]["sources"]], reg, worse)
    assert refused.version is None and not refused.decision.publish
    assert refused.decision.current_version == 1
    assert refused.decision.current_f1 is not None and refused.decision.current_f1 > refused.decision.new_f1
    assert "REJECTED" in refused.decision.describe() and registry.versions(reg) == [1]

    forced = train([Path(p) for p in registry.read_manifest(reg / "1")["data"]["sources"]], reg,
                   worse.model_copy(update={"force": True}))
    assert forced.version == 2 and registry.versions(reg) == [1, 2]
    gate = registry.read_manifest(reg / "2")["gate"]
    assert gate["forced"] is True and gate["current_version"] == 1 and gate["publish"] is True


def test_chinese_text_without_spaces_trains(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    topics = {"体育": "球队比赛冠军足球篮球进球联赛", "财经": "股市银行利率基金投资上涨市场"}
    rows = []
    for label, chars in topics.items():
        for _ in range(60):
            rows.append({"text": "".join(rng.choice(list(chars), size=12)), "label": label})
    data = tmp_path / "zh.jsonl"
    data.write_bytes(b"\n".join(orjson.dumps(r) for r in rows))
    result = train([data], tmp_path / "m", TINY.model_copy(update={"max_rows": None}))
    assert result.version == 1 and result.metrics["accuracy"] >= 0.9
    served = bundle.load_serving(tmp_path / "m")
    probs, _, _ = served.infer(["足球联赛冠军", "银行利率上涨"])
    assert [served.labels[i] for i in probs.argmax(axis=1)] == ["体育", "财经"]


def test_evaluation_data_replaces_the_held_out_split(tmp_path: Path) -> None:
    def write(name: str, n: int) -> Path:
        path = tmp_path / name
        rows = [{"text": f"{w} {w} match {i}", "label": w} for i in range(n) for w in ("goal", "stock")]
        path.write_bytes(b"\n".join(orjson.dumps(r) for r in rows))
        return path

    result = train([write("train.jsonl", 40)], tmp_path / "m", TINY, eval_paths=[write("eval.jsonl", 5)])
    manifest = registry.read_manifest(tmp_path / "m" / "1")
    assert manifest["data"]["train_rows"] == 80 and manifest["data"]["eval_rows"] == 10
    assert result.metrics["accuracy"] == 1.0
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "x", "label": "other"}\n')
    with pytest.raises(Exception, match="do not occur in the training data"):
        train([write("train.jsonl", 40)], tmp_path / "m", TINY, eval_paths=[bad])


def _rows(path: Path, labels: list[str], n: int = 20) -> Path:
    path.write_bytes(b"\n".join(orjson.dumps({"text": f"words about {x} number {i}", "label": x})
                                for x in labels for i in range(n)))
    return path


def test_labels_sharing_a_topic_refuse_the_training_before_it_starts(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """'a b', 'a_b' and 'a/b' would all be routed to texts.label.a_b: no such version may be published."""
    from training import classifier

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("the classifier was built")
    monkeypatch.setattr(classifier, "build", never)  # refused before the expensive part
    data = _rows(tmp_path / "d.jsonl", ["a b", "a_b", "a/b", "c"])
    with pytest.raises(DataError) as err:
        train([data], tmp_path / "m", TINY, worker_settings=load_settings())
    assert "labels 'a b', 'a/b', 'a_b' all map to topic texts.label.a_b" in str(err.value)
    assert "TEXTSTREAM_LABEL_TOPIC_PREFIX='texts.label.'" in str(err.value)
    assert not (tmp_path / "m").exists() or registry.versions(tmp_path / "m") == []


def test_a_label_too_long_for_a_topic_name_with_the_prefix_refuses_the_training(tmp_path: Path,
                                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEXTSTREAM_LABEL_TOPIC_PREFIX", "company.team.texts.by-label.")
    long = "l" * 230  # 230 + 28 characters of prefix > 249
    data = _rows(tmp_path / "d.jsonl", [long, "short"])
    with pytest.raises(DataError, match=r"258 characters; Kafka allows 249") as err:
        train([data], tmp_path / "m", TINY)  # the prefix comes from the environment, as the worker reads it
    assert "'company.team.texts.by-label.'" in str(err.value) and repr("l" * 60) in str(err.value)


def test_the_manifest_records_the_prefix_the_labels_were_checked_against(tiny_registry: Path) -> None:
    assert registry.read_manifest(tiny_registry / "1")["label_topic_prefix"] == "texts.label."


def test_a_second_version_on_the_same_data_keeps_the_cluster_ids(tiny_registry: Path, tmp_path: Path) -> None:
    """Two versions trained on the same data (another seed, so k-means and DEC number the clusters
    their own way): the second takes the first's ids, and the texts whose id changed are few. The
    report's figure is checked against both versions assigning held-out texts."""
    reg = copy_registry(tiny_registry, tmp_path / "r")
    sources = [Path(p) for p in registry.read_manifest(reg / "1")["data"]["sources"]]
    second = train(sources, reg, TINY.model_copy(update={"seed": 7, "force": True}))
    assert second.version == 2
    manifest = registry.read_manifest(reg / "2")
    ids = manifest["evaluation"]["clustering"]["cluster_ids"]
    assert ids["matched_to_version"] == 1 and ids["texts"] == 400

    first_b, second_b = bundle.load(reg / "1"), bundle.load(reg / "2")
    with gzip.open(BBC_TEST, "rt") as fh:
        texts = [orjson.loads(line)["text"] for line in fh][:300]

    def clusters(b: bundle.Bundle) -> np.ndarray:
        return assign_clusters(b.infer(texts).embeddings, b.centroids)[0]

    changed = float(np.mean(clusters(first_b) != clusters(second_b)))
    print(f"cluster ids changed: {ids['changed_share']:.1%} of the training texts, {changed:.1%} of 300 held-out")
    assert ids["changed_share"] < 0.05 and changed < 0.05
    terms = manifest["cluster_terms"]
    assert len(terms) == manifest["n_clusters"] and all(len(t) == 5 for t in terms)
    assert "cluster ids were matched to version 1" in (reg / "2" / "report" / "report.md").read_text().lower()

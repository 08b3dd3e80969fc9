from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import orjson
import pytest

from tests.factories import copy_registry
from worker import bundle, registry
from worker.errors import BundleError, RegistryError


def rewrite_manifest(folder: Path, **changes: object) -> None:
    manifest = orjson.loads((folder / "manifest.json").read_bytes())
    manifest.update(changes)
    (folder / "manifest.json").write_bytes(orjson.dumps(manifest))


def rehash(folder: Path, name: str) -> None:
    manifest = orjson.loads((folder / "manifest.json").read_bytes())
    manifest["files"][name] = registry.sha256_file(folder / name)
    (folder / "manifest.json").write_bytes(orjson.dumps(manifest))


def test_loads_the_highest_version_with_its_manifest(tiny_registry: Path, tmp_path: Path) -> None:
    reg = copy_registry(tiny_registry, tmp_path / "r")
    shutil.copytree(reg / "1", reg / "2")
    rewrite_manifest(reg / "2", version=2)
    b = bundle.load_serving(reg)
    assert b.version == 2
    assert list(b.labels) == sorted(b.labels) and len(b.labels) == 5
    probs, emb, _ = b.infer(["a test sentence", "another one"])
    assert probs.shape == (2, 5) and emb.shape == (2, b.centroids.shape[1])
    assert np.allclose(np.linalg.norm(b.centroids, axis=1), 1.0, atol=1e-5)


def test_empty_registry_fails_fast(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="no model version"):
        bundle.load_serving(tmp_path)


def test_truncated_model_is_refused_even_with_a_matching_hash(tiny_registry: Path, tmp_path: Path) -> None:
    folder = copy_registry(tiny_registry, tmp_path / "r") / "1"
    data = (folder / "classifier.keras").read_bytes()
    (folder / "classifier.keras").write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError, match="sha256 of classifier.keras"):
        bundle.load(folder)
    rehash(folder, "classifier.keras")
    with pytest.raises(BundleError, match="cannot load model files"):
        bundle.load(folder)


def test_labels_that_do_not_fit_the_model_are_refused(tiny_registry: Path, tmp_path: Path) -> None:
    folder = copy_registry(tiny_registry, tmp_path / "r") / "1"
    rewrite_manifest(folder, labels=["a", "b", "c"])
    with pytest.raises(BundleError, match="5 outputs but the manifest lists 3 labels"):
        bundle.load(folder)
    rewrite_manifest(folder, labels=["only-one"])
    with pytest.raises(BundleError, match="at least two"):
        bundle.load(folder)


def test_a_version_serves_with_the_text_fields_of_its_manifest(tiny_registry: Path, tmp_path: Path) -> None:
    folder = copy_registry(tiny_registry, tmp_path / "r") / "1"
    manifest = orjson.loads((folder / "manifest.json").read_bytes())
    del manifest["text_fields"]  # written before text fields existed: the field `text`
    (folder / "manifest.json").write_bytes(orjson.dumps(manifest))
    assert bundle.load(folder).text_fields == ("text",)
    rewrite_manifest(folder, text_fields=["subject", "body"])
    assert bundle.load(folder).text_fields == ("subject", "body")
    rewrite_manifest(folder, text_fields=["subject", "subject"])
    with pytest.raises(BundleError, match="text_fields"):
        bundle.load(folder)


def test_centroids_of_the_wrong_shape_are_refused(tiny_registry: Path, tmp_path: Path) -> None:
    folder = copy_registry(tiny_registry, tmp_path / "r") / "1"
    np.save(folder / "centroids.npy", np.ones((5, 3), dtype=np.float32))
    rehash(folder, "centroids.npy")
    with pytest.raises(BundleError, match="centroids shape"):
        bundle.load(folder)


def test_length_chunks_cover_every_text_once_shortest_first() -> None:
    texts = ["x" * n for n in (50, 3, 700, 1, 20, 9, 300)]
    chunks = bundle.length_chunks(texts, 3)
    assert sorted(i for c in chunks for i in c) == list(range(7))
    lengths = [len(texts[i]) for c in chunks for i in c]
    assert lengths == sorted(lengths) and len(chunks) == 2
    assert bundle.length_chunks([], 64) == []


def test_length_chunks_are_cut_by_characters_and_a_huge_text_goes_alone() -> None:
    texts = ["x" * n for n in (10, 400, 30, 2000, 390, 20)]
    chunks = bundle.length_chunks(texts, 64, max_chars=800)
    assert sorted(i for c in chunks for i in c) == list(range(6))
    assert [[len(texts[i]) for i in c] for c in chunks] == [[10, 20, 30, 390], [400], [2000]]


def test_chunked_inference_returns_each_text_its_own_scores(tiny_registry: Path) -> None:
    """Sorting a batch by length must not shuffle results between texts."""
    import keras

    folder = tiny_registry / "1"
    classifier = keras.saving.load_model(folder / bundle.CLASSIFIER, compile=False, safe_mode=True)
    encoder = keras.saving.load_model(folder / bundle.ENCODER, compile=False, safe_mode=True)
    texts = [" ".join(["football match goal"] * n) if n % 2 else " ".join(["shares profit bank"] * n)
             for n in (40, 1, 7, 120, 3, 60, 2, 15, 90)]
    whole_probs, whole_emb, _ = bundle.compile_infer(classifier, encoder, chunk=1000)(texts)
    probs, emb, _ = bundle.compile_infer(classifier, encoder, chunk=2)(texts)
    assert np.allclose(probs, whole_probs, atol=1e-5) and np.allclose(emb, whole_emb, atol=1e-5)
    one_by_one = np.vstack([bundle.compile_infer(classifier, encoder, chunk=1)([t])[0] for t in texts])
    assert np.allclose(probs, one_by_one, atol=1e-5)


def test_vectoriser_keeps_its_vocabulary_as_an_array_and_loads_like_keras_own(tmp_path: Path) -> None:
    """Our TextVectorization (an array vocabulary: no per-term tracking on load) gives the same ids
    as Keras' own, and a model saved with Keras' own layer (versions trained before) still loads."""
    import keras
    import tensorflow as tf

    from worker.layers import TextVectorization, standardize

    terms = [f"term{i}" for i in range(500)]
    texts = tf.constant([["term1 term7 unknown term499"], ["Term3, term3!"]])
    ours, theirs = (cls(standardize=standardize, vocabulary=terms, output_mode="int") for cls in
                    (TextVectorization, keras.layers.TextVectorization))
    assert type(ours._lookup_layer.input_vocabulary) is np.ndarray
    assert np.array_equal(ours(texts), theirs(texts))
    assert ours.get_config()["vocabulary"] == terms  # saved as Keras saves it
    for layer, name in ((ours, "ours"), (theirs, "keras")):
        text = keras.Input(shape=(1,), dtype="string")
        keras.Model(text, layer(text)).save(tmp_path / f"{name}.keras")
        loaded = keras.saving.load_model(tmp_path / f"{name}.keras", compile=False, safe_mode=True)
        assert type(loaded.layers[1]) is type(layer)
        assert np.array_equal(loaded(texts), theirs(texts))

"""What docs/operations.md's security section promises about model loading stays true: Keras safe mode,
the manifest's sha256 checked first, nothing unpickled (in the source and in behaviour)."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from tests.factories import copy_registry
from tests.unit.worker.test_bundle import rehash
from worker import bundle
from worker.errors import BundleError

ROOT = Path(__file__).resolve().parents[3]
PICKLERS = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve"}


def _calls(path: Path) -> list[ast.Call]:
    return [n for n in ast.walk(ast.parse(path.read_text(encoding="utf-8"))) if isinstance(n, ast.Call)]


def _name(call: ast.Call) -> str:
    return call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", "")


def _keyword(call: ast.Call, name: str) -> object:
    for kw in call.keywords:
        if kw.arg == name and isinstance(kw.value, ast.Constant):
            return kw.value.value
    return None


def test_no_module_imports_a_pickler() -> None:
    for path in [*ROOT.joinpath("worker").glob("*.py"), *ROOT.joinpath("training").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not {n.split(".")[0] for n in names} & PICKLERS, f"{path.name} imports {names}"


def test_every_model_load_in_the_worker_is_safe() -> None:
    loads = [(p.name, c) for p in ROOT.joinpath("worker").glob("*.py") for c in _calls(p)
             if _name(c) in {"load_model", "load"}]
    keras_loads = [c for _, c in loads if _name(c) == "load_model"]
    assert keras_loads, "the worker loads its Keras models somewhere"
    assert all(_keyword(c, "safe_mode") is True for c in keras_loads)
    np_loads = [c for _, c in loads if isinstance(c.func, ast.Attribute) and getattr(c.func.value, "id", "") == "np"]
    assert np_loads and all(_keyword(c, "allow_pickle") is False for c in np_loads)


def test_pickled_centroids_with_a_matching_hash_are_refused(tiny_registry: Path, tmp_path: Path) -> None:
    folder = copy_registry(tiny_registry, tmp_path / "r") / "1"
    payload = np.empty(1, dtype=object)
    payload[0] = {"would be": "unpickled"}
    with (folder / "centroids.npy").open("wb") as fh:
        np.save(fh, payload, allow_pickle=True)
    with pytest.raises(BundleError, match="sha256 of centroids.npy"):
        bundle.load(folder)
    rehash(folder, "centroids.npy")
    with pytest.raises(BundleError, match="cannot load model files.*allow_pickle"):
        bundle.load(folder)


def test_lambda_layer_with_a_matching_hash_is_refused(tiny_registry: Path, tmp_path: Path) -> None:
    import keras

    folder = copy_registry(tiny_registry, tmp_path / "r") / "1"
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs))
    model.save(folder / "encoder.keras")
    rehash(folder, "encoder.keras")
    with pytest.raises(BundleError, match="cannot load model files.*[Ll]ambda"):
        bundle.load(folder)

from __future__ import annotations

import shutil
from pathlib import Path

import orjson
import pytest

from tests.factories import copy_registry
from worker import registry
from worker.errors import BundleError
from worker.serving import Serving


def add_copy(reg: Path, corrupt: bool = False) -> int:
    version = registry.versions(reg)[-1] + 1
    tmp = reg / ".tmp"
    shutil.copytree(reg / "1", tmp)
    manifest = orjson.loads((tmp / "manifest.json").read_bytes())
    manifest["version"] = version
    (tmp / "manifest.json").write_bytes(orjson.dumps(manifest))
    if corrupt:
        (tmp / "centroids.npy").write_bytes(b"garbage")
    tmp.rename(reg / str(version))
    return version


def test_poll_loads_swaps_and_then_has_nothing_to_do(tiny_registry: Path, tmp_path: Path) -> None:
    reg = copy_registry(tiny_registry, tmp_path / "r")
    serving = Serving(reg)
    first = serving.poll()
    assert first is not None and first.version == 1 and serving.version is None  # loaded, not yet serving
    assert serving.swap(first) is None and serving.version == 1
    assert serving.poll() is None
    v2 = add_copy(reg)
    second = serving.poll()
    assert second is not None and second.version == v2
    assert serving.swap(second) is first
    status = serving.status()
    assert status["model_version"] == v2 and status["reloads"] == {"success": 2, "failure": 0}


def test_a_broken_version_is_not_retried_until_the_registry_changes(tiny_registry: Path, tmp_path: Path) -> None:
    reg = copy_registry(tiny_registry, tmp_path / "r")
    serving = Serving(reg)
    serving.swap(serving.poll())  # type: ignore[arg-type]
    bad = add_copy(reg, corrupt=True)
    with pytest.raises(BundleError, match="sha256 of centroids.npy") as err:
        serving.poll()
    serving.fail(err.value)
    assert serving.poll() is None  # same registry: no second attempt
    assert serving.version == 1
    status = serving.status()
    assert status["reloads"]["failure"] == 1 and f"{reg / str(bad)}" in str(status["last_error"])
    registry.pin(reg, 1)  # the registry changed: decide again (and version 1 is already serving)
    assert serving.poll() is None
    registry.unpin(reg)
    good = add_copy(reg)
    assert serving.poll().version == good  # type: ignore[union-attr]

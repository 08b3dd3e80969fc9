from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import orjson
import pytest

from worker import registry
from worker.errors import BundleError, RegistryError


def write_files(content: bytes = b"weights") -> Any:
    def build(folder: Path) -> dict[str, Any]:
        (folder / "classifier.keras").write_bytes(content)
        (folder / "sub").mkdir()
        (folder / "sub" / "vocab.txt").write_text("a\nb\n")
        return {"labels": ["a", "b"]}

    return build


def test_publish_numbers_versions_and_hashes_every_file(tmp_path: Path) -> None:
    assert registry.publish(tmp_path, write_files()) == 1
    assert registry.publish(tmp_path, write_files(b"other")) == 2
    manifest = registry.verify(tmp_path / "2")
    assert manifest["version"] == 2
    assert manifest["labels"] == ["a", "b"]
    assert set(manifest["files"]) == {"classifier.keras", "sub/vocab.txt"}
    assert manifest["files"]["classifier.keras"] == registry.sha256_file(tmp_path / "2" / "classifier.keras")


def test_highest_integer_wins_and_other_entries_are_ignored(tmp_path: Path) -> None:
    for _ in range(3):
        registry.publish(tmp_path, write_files())
    (tmp_path / "10").mkdir()  # no manifest: not a version
    (tmp_path / "notes").mkdir()
    (tmp_path / ".staging-abc").mkdir()
    (tmp_path / "README").write_text("x")
    assert registry.versions(tmp_path) == [1, 2, 3]
    assert registry.latest_version(tmp_path) == 3


def test_empty_registry_says_how_to_fill_it(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="textstream train"):
        registry.latest_version(tmp_path / "missing")


def test_staging_is_never_visible_and_removed_on_failure(tmp_path: Path) -> None:
    seen_during_build: list[list[int]] = []

    def failing(folder: Path) -> dict[str, Any]:
        (folder / "classifier.keras").write_bytes(b"half written")
        seen_during_build.append(registry.versions(tmp_path))
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        registry.publish(tmp_path, failing)
    assert seen_during_build == [[]]
    assert registry.versions(tmp_path) == []
    assert list(tmp_path.iterdir()) == []


def test_hash_mismatch_is_refused(tmp_path: Path) -> None:
    registry.publish(tmp_path, write_files())
    (tmp_path / "1" / "classifier.keras").write_bytes(b"tampered")
    with pytest.raises(BundleError, match="sha256 of classifier.keras"):
        registry.verify(tmp_path / "1")


def test_missing_file_and_renamed_version_are_refused(tmp_path: Path) -> None:
    registry.publish(tmp_path, write_files())
    registry.publish(tmp_path, write_files())
    (tmp_path / "1" / "sub" / "vocab.txt").unlink()
    with pytest.raises(BundleError, match="missing"):
        registry.verify(tmp_path / "1")
    (tmp_path / "2").rename(tmp_path / "7")
    with pytest.raises(BundleError, match="manifest says version 2"):
        registry.verify(tmp_path / "7")


def test_broken_manifest_is_refused(tmp_path: Path) -> None:
    registry.publish(tmp_path, write_files())
    (tmp_path / "1" / "manifest.json").write_bytes(b"{broken")
    with pytest.raises(BundleError, match="not valid JSON"):
        registry.verify(tmp_path / "1")
    (tmp_path / "1" / "manifest.json").write_bytes(orjson.dumps({"format": 99}))
    with pytest.raises(BundleError, match="unknown manifest format"):
        registry.verify(tmp_path / "1")


def test_concurrent_publishers_get_distinct_versions(tmp_path: Path) -> None:
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(registry.publish(tmp_path, write_files())))
               for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [1, 2, 3, 4, 5, 6]
    for v in results:
        registry.verify(tmp_path / str(v))


def test_pin_overrides_highest_and_unpin_restores_it(tmp_path: Path) -> None:
    for _ in range(3):
        registry.publish(tmp_path, write_files())
    assert registry.pinned(tmp_path) is None and registry.serving_version(tmp_path) == 3
    registry.pin(tmp_path, 1)
    assert registry.pinned(tmp_path) == 1 and registry.serving_version(tmp_path) == 1
    assert registry.versions(tmp_path) == [1, 2, 3]  # the pin file is not a version
    assert registry.unpin(tmp_path) is True
    assert registry.serving_version(tmp_path) == 3
    assert registry.unpin(tmp_path) is False


def test_pin_to_a_missing_version_is_refused(tmp_path: Path) -> None:
    registry.publish(tmp_path, write_files())
    with pytest.raises(RegistryError, match="does not exist"):
        registry.pin(tmp_path, 5)
    (tmp_path / registry.PIN_FILE).write_text("5\n")  # e.g. its folder was deleted afterwards
    with pytest.raises(RegistryError, match="pinned to version 5, which does not exist"):
        registry.serving_version(tmp_path)
    (tmp_path / registry.PIN_FILE).write_text("latest\n")
    with pytest.raises(RegistryError, match="must hold a version number"):
        registry.pinned(tmp_path)

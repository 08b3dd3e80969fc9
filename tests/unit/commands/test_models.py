from __future__ import annotations

import shutil
from pathlib import Path

import orjson
import pytest

from commands.main import main
from tests.factories import copy_registry
from worker import registry


def three_versions(tiny_registry: Path, dst: Path) -> Path:
    """Versions 1..3 (copies of the tiny one, manifests renumbered; hashes stay valid)."""
    reg = copy_registry(tiny_registry, dst)
    for version in (2, 3):
        shutil.copytree(reg / "1", reg / str(version))
        manifest = orjson.loads((reg / str(version) / "manifest.json").read_bytes())
        manifest["version"] = version
        (reg / str(version) / "manifest.json").write_bytes(orjson.dumps(manifest))
    return reg


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_list_shows_a_readable_table_and_json(tiny_registry: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    reg = three_versions(tiny_registry, tmp_path / "r")
    code, out, _ = run(capsys, "models", "list", "--model-dir", str(reg))
    assert code == 0
    lines = out.splitlines()
    assert "serving version 3 (highest)" in lines[0]
    assert lines[2].split()[:3] == ["version", "created", "state"]
    accuracy = registry.read_manifest(reg / "1")["metrics"]["accuracy"]
    assert lines[-1].split()[0] == "3" and "serving" in lines[-1] and f"{accuracy:.4f}" in lines[-1]
    code, out, _ = run(capsys, "models", "list", "--json", "--model-dir", str(reg))
    entries = orjson.loads(out)
    assert [e["version"] for e in entries] == [1, 2, 3]
    assert [e["serving"] for e in entries] == [False, False, True]
    assert entries[0]["metrics"]["accuracy"] == accuracy and entries[0]["size_bytes"] > 0


def test_show_describes_one_version(tiny_registry: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reg = three_versions(tiny_registry, tmp_path / "r")
    code, out, _ = run(capsys, "models", "show", "--model-dir", str(reg))
    assert code == 0 and out.startswith("version 3 (serving)")
    assert "labels:     business, entertainment, politics, sport, tech" in out
    assert str(reg / "3" / "report" / "report.md") in out
    code, out, _ = run(capsys, "models", "show", "2", "--json", "--model-dir", str(reg))
    assert orjson.loads(out)["version"] == 2
    code, _, err = run(capsys, "models", "show", "9", "--model-dir", str(reg))
    assert code == 2 and "no version 9" in err


def test_pin_rollback_unpin(tiny_registry: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reg = three_versions(tiny_registry, tmp_path / "r")
    code, out, _ = run(capsys, "models", "rollback", "--model-dir", str(reg))
    assert code == 0 and "from version 3 to 2" in out
    assert registry.pinned(reg) == 2 and registry.serving_version(reg) == 2
    code, out, _ = run(capsys, "models", "rollback", "--json", "--model-dir", str(reg))
    assert orjson.loads(out) == {"from": 2, "pinned": 1}
    code, _, err = run(capsys, "models", "rollback", "--model-dir", str(reg))
    assert code == 2 and "oldest" in err and registry.serving_version(reg) == 1
    code, out, _ = run(capsys, "models", "list", "--model-dir", str(reg))
    assert "serving version 1 (pinned)" in out and "pinned" in out.splitlines()[3]
    code, out, _ = run(capsys, "models", "pin", "3", "--model-dir", str(reg))
    assert code == 0 and registry.serving_version(reg) == 3 and registry.pinned(reg) == 3
    code, _, err = run(capsys, "models", "pin", "7", "--model-dir", str(reg))
    assert code == 2 and "does not exist" in err
    code, out, _ = run(capsys, "models", "unpin", "--model-dir", str(reg))
    assert code == 0 and "highest version (3)" in out and registry.pinned(reg) is None


def test_prune_keeps_the_newest_and_the_served_version(tiny_registry: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    reg = three_versions(tiny_registry, tmp_path / "r")
    registry.pin(reg, 1)
    code, out, _ = run(capsys, "models", "prune", "--keep", "1", "--dry-run", "--model-dir", str(reg))
    assert "would remove versions [2]" in out and registry.versions(reg) == [1, 2, 3]
    code, out, _ = run(capsys, "models", "prune", "--keep", "1", "--json", "--model-dir", str(reg))
    assert orjson.loads(out)["removed"] == [2]
    assert registry.versions(reg) == [1, 3]
    assert sorted(p.name for p in reg.iterdir()) == ["1", "3", "PINNED"]  # nothing half-deleted left
    code, _, err = run(capsys, "models", "prune", "--keep", "0", "--model-dir", str(reg))
    assert code == 2 and "at least 1" in err


def test_an_empty_registry_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "models", "list", "--model-dir", str(tmp_path))
    assert code == 0 and "no model version" in out
    code, _, err = run(capsys, "models", "rollback", "--model-dir", str(tmp_path))
    assert code == 2 and "textstream train" in err


def test_train_command_prints_figures_and_the_gate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "d.jsonl"
    rows = [{"text": f"{w} {w} {w} number {i}", "label": w} for i in range(30) for w in ("goal", "stock", "chip")]
    data.write_bytes(b"\n".join(orjson.dumps(r) for r in rows))
    small = ["--epochs", "2", "--vocab-size", "200", "--sequence-length", "10", "--embedding-dim", "4",
             "--lstm-units", "4", "--no-bidirectional", "--ngram-vocab", "300", "--latent-dim", "3",
             "--dec-iterations", "2", "--model-dir", str(tmp_path / "m"), "--data", str(data)]
    code, out, _ = run(capsys, "train", *small)
    assert code == 0
    assert "classifier: accuracy" in out and "clusters:   NMI" in out
    assert "no current version to compare with: publish" in out
    assert f"published version 1 to {tmp_path / 'm'}" in out
    manifest = registry.read_manifest(tmp_path / "m" / "1")
    assert manifest["config"]["classifier"]["bidirectional"] is False
    assert manifest["config"]["clusterer"]["latent_dim"] == 3
    code, out, _ = run(capsys, "train", *small)
    assert code == 0 and "vs" in out and "(version 1)" in out and "published version 2" in out

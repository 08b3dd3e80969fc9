from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from commands.main import main
from worker.config import describe

# The complete table of TEXTSTREAM_* variables (the README keeps a short one and links to it).
CONFIGURATION_DOC = Path(__file__).resolve().parents[3] / "docs" / "configuration.md"


def test_help_lists_commands_and_every_variable(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for command in ["worker", "kafka", "send", "tail", "train", "demo", "predict", "dlq", "models"]:
        assert command in out
    for name, _, _ in describe():
        assert name in out


def test_worker_fails_fast_on_an_empty_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TEXTSTREAM_MODEL_DIR", str(tmp_path))
    assert main(["worker"]) == 2
    err = capsys.readouterr().err
    assert "no model version in" in err and "textstream train" in err


def test_worker_fails_fast_on_bad_config(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TEXTSTREAM_BATCH_MAX_WAIT", "soon")
    assert main(["worker"]) == 2
    assert "TEXTSTREAM_BATCH_MAX_WAIT='soon'" in capsys.readouterr().err


def test_train_reports_bad_data_clearly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "one-class.jsonl"
    data.write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": "x"}\n')
    assert main(["train", "--data", str(data), "--model-dir", str(tmp_path / "m")]) == 2
    assert "at least two classes" in capsys.readouterr().err
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").iterdir())


def test_train_without_the_train_extra_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The worker image has no scikit-learn: `textstream train` there names the extra, not a traceback.
    for name in ["sklearn", *(m for m in sys.modules if m.startswith("sklearn."))]:
        monkeypatch.setitem(sys.modules, name, None)  # None: importing it fails
    monkeypatch.delitem(sys.modules, "training.train", raising=False)
    with pytest.raises(SystemExit, match=r"sklearn is missing: .*pip install 'textstream\[train\]'"):
        main(["train", "--data", str(tmp_path / "x.jsonl"), "--model-dir", str(tmp_path / "m")])


def test_readme_documents_every_variable() -> None:
    """docs/configuration.md, the complete table the README links to, names every setting."""
    text = CONFIGURATION_DOC.read_text(encoding="utf-8")
    documented = set(re.findall(r"`(TEXTSTREAM_[A-Z_]+)`", text))
    assert {name for name, _, _ in describe()} <= documented

"""The house rules of the architecture, checked on the source: worker never imports training, only
worker/app.py imports faust (everything else is plain Python a unit test can call), and importing the
app does not import TensorFlow."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

WORKER = Path(__file__).resolve().parents[2] / "worker"


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_worker_never_imports_training() -> None:
    offenders = {p.name for p in WORKER.glob("*.py") if any(m.split(".")[0] == "training" for m in imported_modules(p))}
    assert offenders == set()


def test_only_the_app_module_imports_faust() -> None:
    importers = {p.name for p in WORKER.glob("*.py") if any(m.split(".")[0] == "faust" for m in imported_modules(p))}
    assert importers == {"app.py"}


def test_importing_the_app_does_not_import_tensorflow() -> None:
    """The worker creates its topics and answers /healthz before TensorFlow loads (5-15 s, minutes on a
    cold disk): TensorFlow and Keras come with the first model version, in the loading thread."""
    check = 'import sys, worker.app; print(sorted(m for m in ("tensorflow", "keras") if m in sys.modules))'
    out = subprocess.run([sys.executable, "-c", check], cwd=WORKER.parent, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stderr

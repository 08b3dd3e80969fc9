"""The house rules of the architecture, checked on the source: worker never imports training, and
only worker/app.py imports faust (everything else is plain Python a unit test can call)."""

from __future__ import annotations

import ast
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

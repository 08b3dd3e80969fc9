"""The house rules of the architecture, checked on the source: worker never imports training; neither
imports the command line (commands/) or the development tools (devkit/), and commands/ imports devkit/
only inside the development commands (the image has no devkit/); only worker/app.py imports faust
(everything else is plain Python a unit test can call); importing the app does not import TensorFlow."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORKER = ROOT / "worker"


def imported_modules(path: Path, top_level_only: bool = False) -> set[str]:
    """Modules `path` imports; with `top_level_only`, only those imported at module level."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in tree.body if top_level_only else ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_worker_never_imports_training() -> None:
    offenders = {p.name for p in WORKER.glob("*.py") if any(m.split(".")[0] == "training" for m in imported_modules(p))}
    assert offenders == set()


def test_the_core_packages_never_import_the_command_line_or_the_dev_tools() -> None:
    offenders = {str(p.relative_to(ROOT)) for package in ("worker", "training") for p in (ROOT / package).glob("*.py")
                 if any(m.split(".")[0] in ("commands", "devkit") for m in imported_modules(p))}
    assert offenders == set()


def test_commands_import_the_dev_tools_only_inside_the_dev_commands() -> None:
    offenders = {p.name for p in (ROOT / "commands").glob("*.py")
                 if any(m.split(".")[0] == "devkit" for m in imported_modules(p, top_level_only=True))}
    assert offenders == set()
    assert "devkit" in (ROOT / "commands" / "dev.py").read_text()  # the dev commands do use it, lazily


def test_only_the_app_module_imports_faust() -> None:
    importers = {p.name for p in WORKER.glob("*.py") if any(m.split(".")[0] == "faust" for m in imported_modules(p))}
    assert importers == {"app.py"}


def test_importing_the_app_does_not_import_tensorflow() -> None:
    """The worker creates its topics and answers /healthz before TensorFlow loads (5-15 s, minutes on a
    cold disk): TensorFlow and Keras come with the first model version, in the loading thread."""
    check = 'import sys, worker.app; print(sorted(m for m in ("tensorflow", "keras") if m in sys.modules))'
    out = subprocess.run([sys.executable, "-c", check], cwd=WORKER.parent, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stderr

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def tiny_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry holding one really trained (tiny) version; copy it before changing it."""
    from tests.factories import train_tiny

    root = tmp_path_factory.mktemp("registry")
    train_tiny(root)
    return root


@pytest.fixture(scope="session")
def tiny_bundle(tiny_registry: Path):  # type: ignore[no-untyped-def]
    from worker import bundle

    return bundle.load_serving(tiny_registry)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One real Kafka broker for the session (fresh data, free ports), shared by tests/integration and
    tests/faults; if it cannot start, the tests error out: a missing broker is a failure, never a skip."""
    from devkit.stack import local_broker

    with local_broker(tmp_path_factory.mktemp("kafka")) as running:
        yield running.bootstrap


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Commands configure logging for the process; undo it so pytest's capture keeps working."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)

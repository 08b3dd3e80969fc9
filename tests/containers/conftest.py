"""The container suite (`-m containers`, or its path): builds deploy/Dockerfile's two images and runs
them with Docker on host networking against the session broker (tests/conftest.py `broker`).

Collected only when asked for (`pytest -m containers`, `pytest tests/containers`): a plain `pytest`
leaves it out. Once asked for, a Docker engine that does not answer or a missing base image is a
failure, never a skip. deploy/container-check.sh prepares everything from nothing and runs it.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from devkit.stack import REPO

HERE = Path(__file__).resolve().parent
BASE_IMAGE_VAR = "TEXTSTREAM_PYTHON_IMAGE"
DEFAULT_BASE = "textstream-base:bookworm"  # made by deploy/base-image.sh


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if "containers" in (config.option.markexpr or ""):
        return None
    for arg in config.args:
        target = Path(arg.split("::")[0]).resolve()
        if target == HERE or HERE in target.parents:
            return None
    return True


def docker(*args: str, timeout: float = 120, check: bool = True) -> str:
    """`docker args...`; its stdout. A failure raises AssertionError with Docker's own message."""
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()[-3000:]}")
    return done.stdout.strip()


@dataclass(frozen=True)
class Images:
    worker: str
    trainer: str
    seconds: float


@pytest.fixture(scope="session")
def images() -> Images:
    """Both targets built from this tree (Docker's layer cache makes a rebuild take seconds)."""
    import os

    try:
        docker("info", timeout=30)
    except (OSError, AssertionError) as exc:
        pytest.fail(f"Docker is not usable here ({exc}); deploy/container-check.sh installs and starts it")
    base = os.environ.get(BASE_IMAGE_VAR, DEFAULT_BASE)
    if subprocess.run(["docker", "image", "inspect", base], capture_output=True).returncode != 0:
        pytest.fail(f"no base image {base}: run deploy/base-image.sh (or set {BASE_IMAGE_VAR} to a python:3.11 image)")
    started = time.monotonic()
    names = Images("textstream-worker:test", "textstream:test", 0)
    for target, tag in (("worker", names.worker), ("trainer", names.trainer)):
        docker("build", "--network", "host", "-f", "deploy/Dockerfile", "--build-arg", f"PYTHON_IMAGE={base}",
               "--target", target, "-t", tag, str(REPO), timeout=3600)
    return Images(names.worker, names.trainer, time.monotonic() - started)


@pytest.fixture(scope="module")
def containers() -> Iterator[list[str]]:
    """Names of the containers a module starts; removed afterwards."""
    started: list[str] = []
    yield started
    for name in started:
        docker("rm", "-f", name, check=False)


@pytest.fixture(scope="module")
def models_volume() -> Iterator[str]:
    name = f"textstream-test-models-{uuid.uuid4().hex[:8]}"
    docker("volume", "create", name)
    yield name
    docker("volume", "rm", "-f", name, check=False)

"""Fault 5: a disk that fills or a registry directory that vanishes during a publish never leaves a
partial version visible; a worker keeps serving while its registry (even its own version's folder)
disappears, and reports the error.

The full disk is simulated: an `OSError(ENOSPC)` raised at each step of `registry.publish` (a real
tiny tmpfs needs root to mount, which a test cannot count on).
"""

from __future__ import annotations

import errno
import shutil
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.faults import accounting
from tests.integration.conftest import LOAD_S, Stack, wait_until
from worker import events, registry

pytestmark = [pytest.mark.faults]

TEXT = b'{"id": "%s", "text": "The striker scored twice in the cup final as the club won again."}'


def copy_of(src: Path, fail_after: int | None = None) -> Any:
    """A build() that copies version `src` (a republish); with `fail_after`, the disk fills after that
    many files (the next write raises ENOSPC half-way through)."""

    def build(folder: Path) -> dict[str, Any]:
        manifest = registry.read_manifest(src)
        for i, name in enumerate(manifest["files"]):
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            if fail_after is not None and i == fail_after:
                (folder / name).write_bytes((src / name).read_bytes()[:100])
                raise OSError(errno.ENOSPC, "No space left on device", str(folder / name))
            shutil.copy2(src / name, folder / name)
        return {k: v for k, v in manifest.items() if k not in ("format", "version", "created_at", "files")}

    return build


def nothing_partial(root: Path, versions: list[int]) -> None:
    assert registry.versions(root) == versions
    assert registry.latest_version(root) == versions[-1]
    assert not [p.name for p in root.iterdir() if p.name.startswith(registry.STAGING_PREFIX)]
    assert sorted(p.name for p in root.iterdir()) == [str(v) for v in versions]
    for v in versions:
        registry.verify(root / str(v))  # every visible version is whole


@pytest.fixture
def reg(tiny_registry: Path, tmp_path: Path) -> Path:
    return shutil.copytree(tiny_registry, tmp_path / "registry")


@pytest.mark.parametrize("where", ["model file", "manifest", "fsync of the version folder"])
def test_disk_full_during_publish_leaves_no_partial_version(reg: Path, where: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    build = copy_of(reg / "1")
    if where == "model file":
        build = copy_of(reg / "1", fail_after=1)
    elif where == "manifest":
        def half_manifest(folder: Path, manifest: dict[str, Any]) -> None:
            (folder / registry.MANIFEST).write_bytes(orjson.dumps(manifest)[:50])
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(registry, "_write_manifest", half_manifest)
    else:
        real_fsync = registry._fsync

        def fsync(path: Path) -> None:
            if path.is_dir() and path.name.startswith(registry.STAGING_PREFIX):
                raise OSError(errno.ENOSPC, "No space left on device")
            real_fsync(path)

        monkeypatch.setattr(registry, "_fsync", fsync)
    with pytest.raises(OSError) as err:
        registry.publish(reg, build)
    assert err.value.errno == errno.ENOSPC
    nothing_partial(reg, [1])
    monkeypatch.undo()
    assert registry.publish(reg, copy_of(reg / "1")) == 2  # once there is room again, it publishes
    nothing_partial(reg, [1, 2])


@pytest.mark.parametrize("recreated", [False, True], ids=["removed", "removed and recreated empty"])
def test_registry_directory_vanishing_during_publish_leaves_no_partial_version(reg: Path, recreated: bool) -> None:
    src = reg.parent / "source-version"
    shutil.copytree(reg / "1", src)

    def build(folder: Path) -> dict[str, Any]:
        fields = copy_of(src)(folder)
        shutil.rmtree(reg)  # someone wipes the registry while the version is being written
        if recreated:
            reg.mkdir()
        return dict(fields)

    with pytest.raises(OSError):
        registry.publish(reg, build)
    if recreated:
        assert list(reg.iterdir()) == []  # no version, no staging leftovers
    else:
        assert not reg.exists()
    assert registry.versions(reg) == []


@pytest.mark.integration
def test_worker_keeps_serving_through_failed_publishes_and_a_vanished_registry(stack: Stack, reg: Path,
                                                                               tmp_path: Path) -> None:
    started = time.monotonic()
    pristine = shutil.copytree(reg, tmp_path / "pristine")
    stack.model_dir = reg
    worker = stack.start_worker(TEXTSTREAM_RELOAD_INTERVAL="0.5")
    stack.wait_ready(worker)
    collector = accounting.Collector(stack.bootstrap, stack.labeled, stack.dlq)
    sent = 0

    def send_and_check(n: int, version: int) -> None:
        nonlocal sent
        stack.send([TEXT % f"p{sent + i}".encode() for i in range(n)])
        sent += n
        collector.wait_count(sent, timeout=120)
        assert {orjson.loads(r.value or b"")["model_version"] for r in collector.records[-n:]} == {version}

    try:
        send_and_check(100, 1)
        # 1. A publish that fills the disk, and a publisher killed half-way (staging left behind).
        with pytest.raises(OSError):
            registry.publish(reg, copy_of(reg / "1", fail_after=1))
        (reg / f"{registry.STAGING_PREFIX}killed-publisher").mkdir()
        (reg / f"{registry.STAGING_PREFIX}killed-publisher" / "classifier.keras").write_bytes(b"partial")
        assert events.notify(stack.bootstrap, f"{stack.ns}.models", {"event": "published", "version": 2})
        time.sleep(2)  # several polls and the event
        status = worker.status()
        assert status["model_version"] == 1 and status["reloads"]["failure"] == 0, status  # type: ignore[index]
        send_and_check(100, 1)

        # 2. The folder of the version being served vanishes: it keeps serving from memory, reports it.
        vanished = time.monotonic()
        shutil.rmtree(reg / "1")
        wait_until(lambda: worker.status()["last_error"] is not None, LOAD_S, "the vanished version reported")
        reported_s = time.monotonic() - vanished
        assert "no model version" in str(worker.status()["last_error"])
        send_and_check(100, 1)

        # 3. The whole registry vanishes.
        shutil.rmtree(reg)
        time.sleep(2)
        send_and_check(100, 1)
        assert worker.proc.poll() is None and worker.get("/readyz")[0] == 200, stack.logs()

        # 4. The registry comes back, then a new version is published: the worker loads it by itself.
        shutil.copytree(pristine, reg)
        assert registry.publish(reg, copy_of(reg / "1")) == 2
        wait_until(lambda: worker.status()["model_version"] == 2, LOAD_S, "version 2 served")
        send_and_check(100, 2)
    finally:
        collector.stop()
    result = accounting.tally("model dir vanishes / disk full during publish", collector.records,
                              accounting.input_keys(stack.bootstrap, stack.raw), stack.dlq,
                              error_reported_after_s=round(reported_s, 1), wall_s=round(time.monotonic() - started, 1))
    assert result.inputs == result.outputs == sent == 500 and result.lost == 0 and result.duplicates == 0
    assert worker.proc.poll() is None, stack.logs()

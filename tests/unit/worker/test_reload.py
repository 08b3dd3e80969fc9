"""Hot reload: which version serves (Serving), and how the Reloader loads, swaps and fails."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.factories import copy_registry
from tests.unit.worker.fakes import fake_bundle
from worker import registry
from worker.bundle import Bundle
from worker.errors import BundleError, TextstreamError
from worker.reload import LOADING_NICE, LOADING_SWITCH_INTERVAL_S, Reloader, Serving, lower_priority, short_gil_slices


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


def test_short_gil_slices_only_while_a_version_loads() -> None:
    before = sys.getswitchinterval()
    with short_gil_slices(0.0005):
        assert sys.getswitchinterval() == pytest.approx(0.0005)
    assert sys.getswitchinterval() == before
    with pytest.raises(RuntimeError), short_gil_slices(0.0005):
        raise RuntimeError("a load failed")
    assert sys.getswitchinterval() == before  # restored after a failed load too


def test_lower_priority_applies_to_the_calling_thread_only() -> None:
    def nice_of_this_thread() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    before = nice_of_this_thread()
    with ThreadPoolExecutor(1, initializer=lower_priority, initargs=(19,)) as pool:
        assert pool.submit(nice_of_this_thread).result() == 19
    assert nice_of_this_thread() == before  # the serving threads keep theirs


def nice_of_this_thread() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


class Fixture:
    """A Reloader over a Serving whose `poll` answers from a script (a bundle, None, or an
    exception to raise), recording what the Reloader does around it."""

    def __init__(self, tmp_path: Path, *script: Bundle | Exception | None, serving: Bundle | None = None) -> None:
        self.script = list(script)
        self.serving = Serving(tmp_path, bundle=serving)
        self.serving.poll = self.poll  # type: ignore[method-assign]
        self.polls: list[dict[str, Any]] = []
        self.created: list[tuple[str, ...]] = []
        self.crashed: list[BaseException] = []
        self.prepared = 0
        self.topics_take = 0.0  # seconds create_topics takes
        self.loading = threading.Event()  # set while a poll runs
        self.release = threading.Event()  # a poll returns once set
        self.release.set()
        self.reloader = Reloader(self.serving, prepare=self.prepare, create_topics=self.create_topics,
                                 crash=self.crash)

    def prepare(self) -> None:
        self.prepared += 1

    def poll(self) -> Bundle | None:
        self.polls.append({"thread": threading.current_thread().name, "nice": nice_of_this_thread(),
                           "switch_interval": sys.getswitchinterval(), "serving": self.serving.version,
                           "overlapping": self.loading.is_set()})
        self.loading.set()
        try:
            self.release.wait(10)
            answer = self.script.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer
        finally:
            self.loading.clear()

    async def create_topics(self, labels: Any) -> None:
        await asyncio.sleep(self.topics_take)
        self.created.append(tuple(labels))

    async def crash(self, exc: BaseException) -> None:
        self.crashed.append(exc)


async def test_a_first_load_serves_creates_the_topics_of_its_labels_and_sets_ready(tmp_path: Path) -> None:
    f = Fixture(tmp_path, fake_bundle(version=1))
    assert not f.reloader.ready.is_set()
    await f.reloader.reload("start")
    assert f.reloader.ready.is_set() and f.serving.version == 1
    assert f.created == [("sport", "tech")] and f.prepared == 1 and f.crashed == []
    assert f.serving.reloads == {"success": 1, "failure": 0}
    (poll,) = f.polls  # loaded in the loading thread, at low priority, with short GIL slices
    assert poll["thread"].startswith("model-load") and poll["nice"] == LOADING_NICE
    assert poll["switch_interval"] == pytest.approx(LOADING_SWITCH_INTERVAL_S)
    assert sys.getswitchinterval() != pytest.approx(LOADING_SWITCH_INTERVAL_S)  # restored after the load


async def test_handed_a_loaded_version_it_is_ready_at_once_and_nothing_new_changes_nothing(tmp_path: Path) -> None:
    f = Fixture(tmp_path, None, serving=fake_bundle(version=1))
    assert f.reloader.ready.is_set()
    await f.reloader.reload("registry poll")
    assert f.serving.version == 1 and f.created == [] and f.serving.reloads == {"success": 0, "failure": 0}


async def test_a_new_version_replaces_the_old_one_which_is_released(tmp_path: Path) -> None:
    f = Fixture(tmp_path, fake_bundle(version=2), serving=fake_bundle(version=1))
    old = weakref.ref(f.serving.bundle)  # type: ignore[arg-type]
    await f.reloader.reload("models topic event")
    assert f.serving.version == 2 and f.created == [("sport", "tech")]
    assert old() is None  # nothing keeps the replaced version alive


@pytest.mark.parametrize("where", ["load", "topics"])
async def test_a_failed_load_keeps_the_old_version_serving_and_is_reported(tmp_path: Path, where: str) -> None:
    f = Fixture(tmp_path, BundleError("v2: sha256 of centroids.npy differs") if where == "load" else fake_bundle(version=2),
                serving=fake_bundle(version=1))
    if where == "topics":
        async def refuse(labels: Any) -> None:
            raise TextstreamError("cannot create topics")
        f.reloader._create_topics = refuse
    await f.reloader.reload("registry poll")
    assert f.serving.version == 1 and f.crashed == []
    assert f.serving.reloads == {"success": 0, "failure": 1}
    assert f.serving.last_error is not None and ("sha256" in f.serving.last_error or "topics" in f.serving.last_error)


async def test_a_failed_first_load_crashes_the_worker(tmp_path: Path) -> None:
    error = BundleError("v1: cannot load model files")
    f = Fixture(tmp_path, error)
    await f.reloader.reload("start")
    assert f.crashed == [error] and f.serving.version is None and not f.reloader.ready.is_set()
    assert f.serving.reloads == {"success": 0, "failure": 1}


@pytest.mark.parametrize("error", [OSError(5, "Input/output error"), MemoryError(), RuntimeError("a bug")],
                         ids=["OSError", "MemoryError", "any Exception"])
async def test_any_error_of_a_load_is_a_failed_load(tmp_path: Path, error: Exception) -> None:
    f = Fixture(tmp_path, error, fake_bundle(version=3), serving=fake_bundle(version=1))
    await f.reloader.reload("registry poll")  # does not raise: the timer and the worker keep running
    assert f.serving.version == 1 and f.crashed == [] and f.serving.reloads == {"success": 0, "failure": 1}
    assert f.serving.last_error is not None and f.serving.last_error.startswith(type(error).__name__)
    await f.reloader.reload("registry poll")
    assert f.serving.version == 3 and f.serving.reloads == {"success": 1, "failure": 1}


async def test_an_oserror_of_a_first_load_crashes_the_worker_with_its_message(tmp_path: Path) -> None:
    error = FileNotFoundError(2, "No such file or directory", "/models/1/classifier.keras")
    f = Fixture(tmp_path, error)
    await f.reloader.reload("start")
    assert f.crashed == [error] and not f.reloader.ready.is_set()
    assert "classifier.keras" in str(f.serving.last_error)


async def test_a_keyboard_interrupt_in_a_load_is_not_a_load_failure(tmp_path: Path) -> None:
    f = Fixture(tmp_path, serving=fake_bundle(version=1))

    def interrupted() -> Bundle | None:
        raise KeyboardInterrupt
    f.reloader._load_next = interrupted  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        await f.reloader.reload("registry poll")
    assert f.serving.reloads == {"success": 0, "failure": 0} and f.serving.version == 1


async def test_a_reload_cancelled_mid_load_is_not_a_load_failure(tmp_path: Path) -> None:
    """The worker shutting down cancels a timer that is loading: that is no failure to report."""
    f = Fixture(tmp_path, fake_bundle(version=2), serving=fake_bundle(version=1))
    f.release.clear()
    task = asyncio.create_task(f.reloader.reload("registry poll"))
    deadline = time.monotonic() + 10
    while not f.loading.is_set():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    f.release.set()
    assert f.serving.reloads == {"success": 0, "failure": 0} and f.serving.version == 1


async def test_concurrent_reloads_are_serialised(tmp_path: Path) -> None:
    """A poll and an event at once: the second load starts after the first version was swapped in."""
    f = Fixture(tmp_path, fake_bundle(version=2), None, serving=fake_bundle(version=1))
    f.release.clear()
    f.topics_take = 0.3  # time enough for a second load to start, were it not serialised
    first = asyncio.create_task(f.reloader.reload("registry poll"))
    second = asyncio.create_task(f.reloader.reload("models topic event"))
    deadline = time.monotonic() + 10
    while not f.loading.is_set():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    assert len(f.polls) == 1  # the second waits for the first, not for the loading thread
    f.release.set()
    await asyncio.gather(first, second)
    assert [p["serving"] for p in f.polls] == [1, 2] and not any(p["overlapping"] for p in f.polls)
    assert f.serving.version == 2 and f.serving.reloads == {"success": 1, "failure": 0}



class RealReload:
    """A Reloader over the real Serving of a copy of the tiny registry (real loads), serving version 1."""

    def __init__(self, reg: Path) -> None:
        self.reg = reg
        self.serving = Serving(reg)
        self.crashed: list[BaseException] = []

        async def create_topics(labels: Any) -> None:
            return None

        async def crash(exc: BaseException) -> None:
            self.crashed.append(exc)
        self.reloader = Reloader(self.serving, prepare=lambda: None, create_topics=create_topics, crash=crash)

    async def start(self) -> None:
        await self.reloader.reload("start")
        assert self.serving.version == 1 and not self.crashed

    def failures(self) -> int:
        return self.serving.reloads["failure"]


def fail_warm_up(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> list[int]:
    """Make the warm-up call of the next load raise `error` (its model calls after that work);
    returns the list of warm-ups that failed (one entry each)."""
    from worker import bundle

    compile_infer, failed = bundle.compile_infer, []

    def compiled(*args: Any, **kwargs: Any) -> Any:
        infer = compile_infer(*args, **kwargs)
        calls = [0]

        def warm_up_fails(*args: Any, **kwargs: Any) -> Any:
            calls[0] += 1
            if calls[0] == 1 and not failed:
                failed.append(1)
                raise error
            return infer(*args, **kwargs)
        return warm_up_fails
    monkeypatch.setattr(bundle, "compile_infer", compiled)
    return failed


def tf_error(kind: str) -> Exception:
    import tensorflow as tf

    if kind == "ResourceExhaustedError":
        return tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor with shape[64,256,512]")
    return tf.errors.InternalError(None, None, "Failed to launch kernel")


@pytest.mark.parametrize("kind", ["OSError", "MemoryError", "ResourceExhaustedError", "InternalError"])
async def test_a_real_load_that_fails_keeps_version_1_and_the_next_good_version_loads(
    tiny_registry: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """OSError: the registry's disk fails while the version's files are hashed (NFS hiccup).
    The others: raised by the warm-up model call of `bundle.load`, as TensorFlow raises them."""
    r = RealReload(copy_registry(tiny_registry, tmp_path / "r"))
    await r.start()
    attempts: list[Path] = []
    if kind == "OSError":
        sha256_file = registry.sha256_file

        def flaky(path: Path) -> str:
            if path.parent.name == "2":
                attempts.append(path)
                raise OSError(5, "Input/output error", str(path))
            return sha256_file(path)
        monkeypatch.setattr(registry, "sha256_file", flaky)
        expected = "OSError: [Errno 5] Input/output error"
    else:
        error = MemoryError() if kind == "MemoryError" else tf_error(kind)
        failed = fail_warm_up(monkeypatch, error)
        expected = kind
    v2 = add_copy(r.reg)
    await r.reloader.reload("registry poll")  # raises nothing: the timer and the worker go on
    assert r.serving.version == 1 and r.failures() == 1 and not r.crashed
    assert str(r.serving.status()["last_error"]).startswith(expected), r.serving.last_error
    tried = len(attempts) if kind == "OSError" else len(failed)
    assert tried == 1
    await r.reloader.reload("registry poll")  # the registry did not change: version 2 is not tried again
    assert (len(attempts) if kind == "OSError" else len(failed)) == tried and r.failures() == 1
    assert r.serving.version == 1
    monkeypatch.undo()
    v3 = add_copy(r.reg)
    await r.reloader.reload("registry poll")
    assert r.serving.version == v3 == v2 + 1 and r.serving.reloads == {"success": 2, "failure": 1}
    probs = r.serving.bundle.infer(["the striker scored twice"]).probs  # type: ignore[union-attr]
    assert probs.shape == (1, len(r.serving.bundle.labels))  # type: ignore[union-attr]


@pytest.mark.parametrize("when", ["while its files are hashed", "between verify and load"])
async def test_a_prune_racing_a_load_keeps_version_1_and_the_next_version_loads(
    tiny_registry: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    """The trainer publishes version 3 and prunes to one version (`textstream models prune`) while
    the worker loads version 2: version 2's folder vanishes under the load."""
    r = RealReload(copy_registry(tiny_registry, tmp_path / "r"))
    await r.start()
    pruned: list[list[int]] = []

    def prune_once() -> None:
        if not pruned:
            add_copy(r.reg)
            pruned.append(registry.prune(r.reg, keep=1))

    if when == "while its files are hashed":
        sha256_file = registry.sha256_file

        def hashing(path: Path) -> str:
            if path.parent.name == "2":
                prune_once()
            return sha256_file(path)
        monkeypatch.setattr(registry, "sha256_file", hashing)
    else:
        verify = registry.verify

        def verified(folder: Path) -> dict[str, Any]:
            manifest = verify(folder)
            if folder.name == "2":
                prune_once()
            return manifest
        monkeypatch.setattr(registry, "verify", verified)
    add_copy(r.reg)
    await r.reloader.reload("registry poll")
    assert pruned == [[1, 2]] and not (r.reg / "2").exists()
    assert r.serving.version == 1 and r.failures() == 1 and not r.crashed
    assert re.search(r"no such file|not found", str(r.serving.last_error), re.IGNORECASE), r.serving.last_error
    await r.reloader.reload("registry poll")  # the registry changed (2 gone, 3 there): version 3 loads
    assert r.serving.version == 3 and r.serving.reloads == {"success": 2, "failure": 1}

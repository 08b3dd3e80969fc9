"""Hot reload on a real broker: new versions go live between batches, broken ones never do."""

from __future__ import annotations

import itertools
import os
import shutil
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from devkit.stack import free_ports
from tests.factories import copy_registry
from tests.integration.conftest import LOAD_S, Stack, Worker, wait_until
from tests.integration.test_startup import SLOW_START
from worker import events, registry

pytestmark = pytest.mark.integration

TEXT = b'{"id": "%s", "text": "The striker scored twice in the cup final as the club won again."}'


def stage_version(reg: Path, mutate: Callable[[Path], None] = lambda folder: None) -> int:
    """Make version N+1 appear at once: a copy of version 1, changed by `mutate` before the rename
    (so a worker never sees the good copy first)."""
    version = registry.versions(reg)[-1] + 1
    tmp = reg / f".tmp-{uuid.uuid4().hex}"  # not a number: invisible to workers
    shutil.copytree(reg / "1", tmp)
    manifest = orjson.loads((tmp / "manifest.json").read_bytes())
    manifest["version"] = version
    (tmp / "manifest.json").write_bytes(orjson.dumps(manifest))
    mutate(tmp)
    tmp.rename(reg / str(version))
    return version


def set_manifest(folder: Path, **changes: object) -> None:
    manifest = orjson.loads((folder / "manifest.json").read_bytes())
    manifest.update(changes)
    (folder / "manifest.json").write_bytes(orjson.dumps(manifest))


def truncate_keeping_hash(folder: Path) -> None:
    data = (folder / "classifier.keras").read_bytes()
    (folder / "classifier.keras").write_bytes(data[: len(data) // 3])
    files = orjson.loads((folder / "manifest.json").read_bytes())["files"]
    set_manifest(folder, files={**files, "classifier.keras": registry.sha256_file(folder / "classifier.keras")})


def failures(worker: Worker) -> int:
    return int(worker.status()["reloads"]["failure"])  # type: ignore[index]


def serves(worker: Worker, version: int) -> Callable[[], bool]:
    return lambda: worker.status()["model_version"] == version


@pytest.fixture
def reg(stack: Stack, tiny_registry: Path, tmp_path: Path) -> Path:
    stack.model_dir = copy_registry(tiny_registry, tmp_path / "registry")
    return stack.model_dir


def test_new_version_midway_through_a_stream(stack: Stack, reg: Path) -> None:
    worker = stack.start_worker(TEXTSTREAM_RELOAD_INTERVAL="3600")  # only the event can trigger it
    stack.wait_ready(worker)
    stack.send([TEXT % f"a{i}".encode() for i in range(3000)])
    stack.read([stack.labeled], 1500, settle=0.0)
    v2 = stage_version(reg)
    assert events.notify(stack.bootstrap, f"{stack.ns}.models", {"event": "published", "version": v2})
    for chunk in range(10):
        stack.send([TEXT % f"b{chunk}-{i}".encode() for i in range(300)])
        if chunk == 4:  # the worker may label faster than it loads v2: the rest must come after the swap
            wait_until(lambda: worker.status()["model_version"] == v2, LOAD_S, "version 2 served")

    labeled = stack.read([stack.labeled], 6000, timeout=180)
    outputs = [orjson.loads(r.value or b"") for r in labeled]
    ids = [o["id"] for o in outputs]
    assert len(ids) == 6000 and len(set(ids)) == 6000, f"{len(ids)} outputs, {len(set(ids))} distinct"
    by_partition: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for o in outputs:
        by_partition[o["source"]["partition"]].append((o["source"]["offset"], o["model_version"]))
    assert {o["model_version"] for o in outputs} == {1, v2}
    for partition, seq in by_partition.items():
        versions = [v for _, v in sorted(seq)]
        changes = sum(a != b for a, b in itertools.pairwise(versions))
        assert versions[0] == 1 and versions[-1] == v2 and changes == 1, f"partition {partition}: {changes} changes"
    assert worker.status()["model_version"] == v2


def test_broken_versions_never_serve_and_pins_roll_back(stack: Stack, reg: Path) -> None:
    worker = stack.start_worker(TEXTSTREAM_RELOAD_INTERVAL="0.3")
    stack.wait_ready(worker)
    assert worker.status()["model_version"] == 1

    broken = {
        "truncated classifier.keras": truncate_keeping_hash,
        "hash mismatch": lambda f: (f / "encoder.keras").write_bytes(b"not the file the manifest hashed"),
        "labels that do not fit": lambda f: set_manifest(f, labels=["a", "b", "c"]),
        "empty directory": lambda f: (shutil.rmtree(f), f.mkdir()),
    }
    expected_errors = ["cannot load model files", "sha256 of encoder.keras", "outputs but the manifest", None]
    for (what, mutate), error in zip(broken.items(), expected_errors, strict=True):
        before = failures(worker)
        stage_version(reg, mutate)
        if error is None:  # a folder without manifest is not a version: nothing to load, nothing fails
            time.sleep(2)  # several polls
            assert failures(worker) == before
        else:
            wait_until(lambda n=before: failures(worker) == n + 1, LOAD_S, f"failure reported for {what}")
            assert error in str(worker.status()["last_error"]), worker.status()
        assert worker.status()["model_version"] == 1, what
    (reg / ".staging-half-written").mkdir()
    (reg / ".staging-half-written" / "classifier.keras").write_bytes(b"partial")

    # still serving version 1, and a failed version is not retried while the registry is unchanged
    settled = failures(worker)
    stack.send([TEXT % f"s{i}".encode() for i in range(50)])
    out = [orjson.loads(r.value or b"") for r in stack.read([stack.labeled], 50)]
    assert len(out) == 50 and {o["model_version"] for o in out} == {1}
    assert failures(worker) == settled
    code, ready = worker.get("/readyz")
    assert code == 200 and ready["ready"] is True

    good = stage_version(reg)
    wait_until(serves(worker, good), LOAD_S, f"version {good} served")
    registry.pin(reg, 1)
    wait_until(serves(worker, 1), LOAD_S, "pinned version 1 served")
    registry.unpin(reg)
    wait_until(serves(worker, good), LOAD_S, "unpinned: highest version served again")


def test_twenty_reloads_keep_memory_flat(stack: Stack, reg: Path) -> None:
    good = stage_version(reg)
    worker = stack.start_worker(TEXTSTREAM_RELOAD_INTERVAL="0.2")
    stack.wait_ready(worker)
    wait_until(serves(worker, good), LOAD_S)
    baseline = 0
    for i in range(20):
        if i % 2 == 0:
            registry.pin(reg, 1)
        else:
            registry.unpin(reg)
        wait_until(serves(worker, 1 if i % 2 == 0 else good), LOAD_S, f"reload {i + 1}")
        if i == 0:
            baseline = worker.rss_bytes()
    growth = worker.rss_bytes() / baseline - 1
    assert growth < 0.10, f"RSS grew {growth:.1%} over 20 reloads"
    assert worker.status()["reloads"]["success"] >= 21  # type: ignore[index]


def test_one_event_switches_every_worker_of_the_group(stack: Stack, reg: Path) -> None:
    workers = [stack.start_worker(TEXTSTREAM_RELOAD_INTERVAL="3600") for _ in range(2)]
    for w in workers:
        stack.wait_ready(w)
    v2 = stage_version(reg)
    assert events.notify(stack.bootstrap, f"{stack.ns}.models", {"event": "published", "version": v2})
    for w in workers:
        wait_until(serves(w, v2), LOAD_S, f"worker :{w.port} on version {v2}")


def test_models_commands_announce_and_status_shows_the_workers(
    stack: Stack, reg: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from commands.main import main

    worker = stack.start_worker(TEXTSTREAM_RELOAD_INTERVAL="3600")  # only announcements can switch it
    stack.wait_ready(worker)
    v2 = stage_version(reg)
    monkeypatch.setenv("TEXTSTREAM_BROKER", stack.bootstrap)
    monkeypatch.setenv("TEXTSTREAM_MODELS_TOPIC", f"{stack.ns}.models")
    url = f"http://127.0.0.1:{worker.port}"

    assert main(["models", "pin", str(v2), "--model-dir", str(reg)]) == 0
    wait_until(serves(worker, v2), LOAD_S, "pinned version served after the announcement")
    assert main(["models", "rollback", "--model-dir", str(reg)]) == 0
    wait_until(serves(worker, 1), LOAD_S, "rolled-back version served after the announcement")
    capsys.readouterr()

    assert main(["models", "status", "--worker", url, "--json"]) == 0
    (row,) = orjson.loads(capsys.readouterr().out)
    assert row["worker"] == url and row["model_version"] == 1 and row["reloads"]["success"] == 3
    assert row["last_error"] is None and row["loaded_at"] > 0

    dead = f"http://127.0.0.1:{free_ports(1)[0]}"
    assert main(["models", "status", "--worker", url, "--worker", dead]) == 1
    table = capsys.readouterr().out
    assert url in table and f"{dead}" in table and "unreachable" in table


def test_a_version_folder_pruned_mid_load_keeps_the_worker_serving(stack: Stack, reg: Path, tmp_path: Path) -> None:
    """The trainer publishes version 3 and prunes to one version while the worker hashes version
    2's files: the folder vanishes mid-load (a FileNotFoundError, which used to escape the reload
    and stop the worker). The worker keeps serving version 1, reports the failure, loads version 3."""
    gate = tmp_path / "hash-gate"
    gate.mkdir()
    worker = stack.start_worker(PYTHONPATH=os.pathsep.join([str(SLOW_START), os.environ.get("PYTHONPATH", "")]),
                                TEXTSTREAM_TEST_HASH_GATE=str(gate), TEXTSTREAM_TEST_HASH_GATE_VERSION="2",
                                TEXTSTREAM_RELOAD_INTERVAL="0.3")
    stack.wait_ready(worker)
    assert worker.status()["model_version"] == 1
    stage_version(reg)
    wait_until((gate / "holding").exists, 60, "the worker hashing version 2's files")
    v3 = stage_version(reg)
    assert registry.prune(reg, keep=1) == [1, 2]
    (gate / "go").touch()
    wait_until(lambda: failures(worker) == 1, LOAD_S, "the failed load reported")
    status = worker.status()
    assert worker.alive and "FileNotFoundError" in str(status["last_error"]), status
    wait_until(serves(worker, v3), LOAD_S, f"version {v3} served")
    stack.send([TEXT % f"p{i}".encode() for i in range(20)])
    out = [orjson.loads(r.value or b"") for r in stack.read([stack.labeled], 20, settle=0.0)]
    assert len(out) == 20 and {o["model_version"] for o in out} == {v3}
    assert worker.alive and failures(worker) == 1

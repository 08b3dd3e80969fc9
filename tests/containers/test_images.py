"""The images really run: the trainer publishes into a named volume, workers label end to end on
host networking, a second worker splits the partitions, `docker stop` ends them cleanly."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from commands.train import setting_flags
from devkit.stack import Namespace, free_port, http_get, read_until, wait_until
from tests.containers.conftest import Images, docker
from tests.factories import NEWS, TINY
from training.config import TrainConfig
from worker import client, topics

pytestmark = [pytest.mark.containers, pytest.mark.timeout(3600)]

UID = "10001"
NS = Namespace.fresh("ct")
REGISTRY = Path("/models")  # in the containers


def tiny_flags(config: TrainConfig = TINY) -> list[str]:
    """`textstream train` flags for tests.factories.TINY (those of its settings that differ from the defaults)."""
    flags: list[str] = []
    for _, flag, dest, kwargs in setting_flags():
        part, _, name = dest.rpartition(".")
        value = getattr(getattr(config, part) if part else config, name)
        if value == kwargs["default"]:
            continue
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + flag.removeprefix("--"))
        else:
            flags += [flag, str(value)]
    return flags


def env_args(bootstrap: str, **extra: str) -> list[str]:
    """`-e NAME=value` for a command in this module's namespace (the TEXTSTREAM_* of devkit's Namespace)."""
    env = {k: v for k, v in NS.env(bootstrap, REGISTRY).items() if k.startswith("TEXTSTREAM_")}
    env.update(TEXTSTREAM_TOPIC_PARTITIONS="4", TEXTSTREAM_LOG_FORMAT="json", **extra)
    return [arg for k, v in sorted(env.items()) for arg in ("-e", f"{k}={v}")]


def run_args(name: str, volume: str, mode: str) -> list[str]:
    return ["--name", name, "--network", "host", "-v", f"{volume}:/models{mode}"]


@dataclass
class Container:
    name: str
    port: int

    def get(self, path: str) -> tuple[int, Any]:
        return http_get(self.port, path)

    def running(self) -> bool:
        return docker("inspect", "-f", "{{.State.Running}}", self.name) == "true"

    def logs(self) -> str:
        return docker("logs", "--tail", "40", self.name, check=False)

    def wait_ready(self, timeout: float = 600) -> None:
        def ready() -> bool:
            if not self.running():
                raise AssertionError(f"{self.name} exited:\n{self.logs()}")
            return bool(self.get("/readyz")[0] == 200)

        try:
            wait_until(ready, timeout, f"{self.name} ready")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.logs()}") from None


def start_worker(images: Images, broker: str, volume: str, containers: list[str]) -> Container:
    name = f"{NS.name}-worker-{len(containers)}"
    port = free_port()
    containers.append(name)
    # The registry read-only: a worker only reads it.
    docker("run", "-d", *run_args(name, volume, ":ro"), *env_args(broker, TEXTSTREAM_WEB_HOST="127.0.0.1",
                                                                   TEXTSTREAM_WEB_PORT=str(port)),
           images.worker, "worker")
    return Container(name, port)


def send(broker: str, values: list[bytes]) -> int:
    asyncio.run(topics.ensure_topics(broker, [NS.raw], 4))
    return asyncio.run(client.send_values(broker, NS.raw, values))


def read_labeled(broker: str, expected: int) -> list[dict[str, Any]]:
    records = asyncio.run(read_until(broker, [NS.labeled], expected, timeout=180, settle=2.0))
    return [orjson.loads(r.value or b"") for r in records]


def records(start: int, n: int) -> list[bytes]:
    return [orjson.dumps({"id": f"c-{i}", "text": f"{NEWS[i % len(NEWS)]} Item {i}."}) for i in range(start, start + n)]


@dataclass
class Published:
    exit_code: int
    output: str
    seconds: float


@pytest.fixture(scope="module")
def published(images: Images, broker: str, models_volume: str, containers: list[str]) -> Published:
    """The trainer image's `textstream train` (tiny settings, bundled BBC corpus) into a new named volume."""
    name = f"{NS.name}-trainer"
    containers.append(name)
    started = time.monotonic()
    docker("run", *run_args(name, models_volume, ""), *env_args(broker), images.trainer,
           "train", "--data", "/app/data/bbc_news_train.jsonl.gz", *tiny_flags(), timeout=1200, check=False)
    code = int(docker("inspect", "-f", "{{.State.ExitCode}}", name))
    return Published(code, docker("logs", name, check=False), time.monotonic() - started)


def in_volume(images: Images, volume: str, *command: str) -> str:
    return docker("run", "--rm", "--network", "none", "-v", f"{volume}:/models:ro", "--entrypoint", command[0],
                  images.worker, *command[1:])


def test_the_trainer_publishes_a_version_into_the_volume_as_the_image_user(
        images: Images, published: Published, models_volume: str) -> None:
    assert published.exit_code == 0, published.output[-4000:]
    assert "published version 1" in published.output
    print(f"images built (or reused) in {images.seconds:.0f} s; trainer ran in {published.seconds:.0f} s")
    # A new named volume takes the image's /models (owned by uid 10001): the non-root trainer could
    # write there, and everything it wrote is its own.
    owners = in_volume(images, models_volume, "find", "/models", "-printf", "%U:%G %p\n").splitlines()
    assert owners and all(line.startswith(f"{UID}:{UID} ") for line in owners), owners
    assert any(line.endswith(" /models/1") for line in owners), owners


@pytest.fixture(scope="module")
def first_worker(images: Images, broker: str, models_volume: str, containers: list[str],
                 published: Published) -> Iterator[Container]:
    assert published.exit_code == 0, published.output[-4000:]
    worker = start_worker(images, broker, models_volume, containers)
    worker.wait_ready()
    yield worker


def test_the_worker_image_runs_non_root_without_the_training_dependencies(
        images: Images, first_worker: Container) -> None:
    assert docker("exec", first_worker.name, "id", "-u") == UID
    assert docker("inspect", "-f", "{{.Config.User}}", images.worker) == f"{UID}:{UID}"
    missing = docker("exec", first_worker.name, "python3", "-c",
                     "import importlib.util as u; print([m for m in ('sklearn', 'scipy', 'matplotlib') if u.find_spec(m)])")
    assert missing == "[]"


def test_a_worker_labels_end_to_end_and_answers_readyz_and_metrics(broker: str, first_worker: Container) -> None:
    assert send(broker, records(0, 50)) == 50
    out = read_labeled(broker, 50)
    assert sorted(o["id"] for o in out) == sorted(f"c-{i}" for i in range(50)), first_worker.logs()
    assert {o["model_version"] for o in out} == {1}
    status, body = first_worker.get("/readyz")
    assert status == 200 and body["model_version"] == 1
    assert sorted(body["assigned"]) == sorted(f"{NS.raw}/{p}" for p in range(4))
    status, metrics = first_worker.get("/metrics")
    assert status == 200
    assert any(line.startswith("textstream_") and not line.startswith("#") for line in metrics.splitlines())


def test_a_second_worker_joins_the_group_and_the_partitions_split(
        images: Images, broker: str, models_volume: str, containers: list[str], first_worker: Container) -> None:
    second = start_worker(images, broker, models_volume, containers)
    second.wait_ready()

    def split() -> bool:
        a, b = (set(w.get("/readyz")[1]["assigned"]) for w in (first_worker, second))
        return len(a) == 2 and len(b) == 2 and a | b == {f"{NS.raw}/{p}" for p in range(4)}

    wait_until(split, 120, "the 4 partitions split 2 and 2")
    assert send(broker, records(50, 40)) == 40
    out = read_labeled(broker, 90)
    assert sorted(o["id"] for o in out) == sorted(f"c-{i}" for i in range(90)), second.logs()


def test_docker_stop_ends_every_worker_cleanly(containers: list[str], first_worker: Container) -> None:
    workers = [name for name in containers if "-worker-" in name]
    assert workers
    for name in workers:
        docker("stop", "-t", "60", name, timeout=120)  # SIGTERM, then SIGKILL after 60 s
        state = docker("inspect", "-f", "{{.State.ExitCode}} {{.State.OOMKilled}}", name)
        assert state == "0 false", f"{name}: {state}\n{docker('logs', '--tail', '40', name, check=False)}"

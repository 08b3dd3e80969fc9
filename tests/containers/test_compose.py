"""docker-compose.yml brought up for real: its own services, volumes, network, commands and health
checks, with images made on this machine (tests/containers/compose.local.yml). The one-shot trainer
publishes the bundled model into the `models` volume, a worker labels the demo's texts, Prometheus
scrapes the worker and the feedback trainer through Docker's DNS, `--scale worker=2` splits the
partitions, `docker-compose stop` ends every worker cleanly. Grafana is not started: no image or
Debian package of it is reachable here.

Status (2026-12-01, first real run): the stack came up and the first test passed (trainer published,
the worker labelled the demo texts through the compose network and the published Kafka port); the
Prometheus test then timed out waiting for both scrape targets to be up, cause not yet found (issue
20 is open); the scale and stop tests did not run (-x)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from devkit.demo import sample_texts
from devkit.stack import REPO, free_port, read_until, wait_until
from tests.containers.conftest import DEFAULT_BASE, HERE, Images, docker
from worker import client

pytestmark = [pytest.mark.containers, pytest.mark.timeout(3600)]

SERVICES = ["kafka", "trainer", "feedback-trainer", "worker", "prometheus"]  # all but grafana
RAW, LABELED = "texts.raw", "texts.labeled"  # the compose file's topics (the defaults)


def compose_command() -> list[str]:
    """Debian's `docker-compose` (v1), else the `docker compose` plugin."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    pytest.fail("neither docker-compose nor `docker compose` is installed (apt-get install docker-compose)")


@dataclass
class Stack:
    project: str
    kafka_port: int  # the HOST listener, published on the host's loopback

    @property
    def bootstrap(self) -> str:
        return f"localhost:{self.kafka_port}"

    def compose(self, *args: str, timeout: float = 600, check: bool = True) -> str:
        cmd = [*compose_command(), "-p", self.project, "-f", str(REPO / "docker-compose.yml"),
               "-f", str(HERE / "compose.local.yml"), *args]
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "KAFKA_HOST_PORT": str(self.kafka_port)})
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(cmd[1:])} failed ({done.returncode}):\n{done.stderr[-4000:]}")
        return done.stdout

    def containers(self, service: str) -> list[str]:
        return self.compose("ps", "-q", service).split()

    def logs(self, service: str) -> str:
        return self.compose("logs", "--tail", "40", service, check=False)

    def get(self, container: str, url: str) -> Any:
        """GET `url` from inside `container` (no service port is published but Kafka's); its JSON."""
        out = docker("exec", container, "python3", "-c",
                     f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=5).read().decode())")
        return json.loads(out)

    def targets(self) -> list[dict[str, Any]]:
        """Prometheus's active scrape targets."""
        prometheus = self.containers("prometheus")[0]
        return list(self.get(prometheus, "http://localhost:9090/api/v1/targets")["data"]["activeTargets"])

    def up_targets(self, job: str) -> int:
        return sum(1 for t in self.targets() if t["labels"]["job"] == job and t["health"] == "up")


@pytest.fixture(scope="module")
def stack(images: Images) -> Iterator[Stack]:
    """The stack, up; `down -v` afterwards (its containers, network and volumes go)."""
    base = os.environ.get("TEXTSTREAM_PYTHON_IMAGE", DEFAULT_BASE)
    for tag, folder in (("textstream-kafka:local", "deploy/kafka"), ("textstream-prometheus:local", "deploy/prometheus")):
        docker("build", "-q", "--network", "host", "--build-arg", f"BASE_IMAGE={base}", "-t", tag, str(REPO / folder),
               timeout=1800)
    s = Stack(f"tsc{uuid.uuid4().hex[:8]}", free_port())
    try:
        # Blocks until the trainer has finished (the workers depend on its success): one full training.
        s.compose("up", "-d", *SERVICES, timeout=1800)
        yield s
    finally:
        s.compose("down", "-v", "--remove-orphans", "-t", "60", timeout=300, check=False)


def ready(s: Stack, container: str) -> dict[str, Any]:
    try:
        body: dict[str, Any] = s.get(container, "http://127.0.0.1:6066/readyz")
    except (AssertionError, json.JSONDecodeError):
        return {}
    return body


def labelled(s: Stack, values: list[bytes], expected: int) -> list[dict[str, Any]]:
    asyncio.run(client.send_values(s.bootstrap, RAW, values))
    got = asyncio.run(read_until(s.bootstrap, [LABELED], expected, timeout=300, settle=2.0))
    return [orjson.loads(r.value or b"") for r in got]


def test_the_trainer_publishes_and_a_worker_labels_the_demo_texts(stack: Stack) -> None:
    trainer = docker("ps", "-a", "-q", "--filter", f"label=com.docker.compose.project={stack.project}",
                     "--filter", "label=com.docker.compose.service=trainer")
    assert docker("inspect", "-f", "{{.State.ExitCode}}", trainer) == "0", stack.logs("trainer")
    (worker,) = stack.containers("worker")
    wait_until(lambda: ready(stack, worker).get("model_version") == 1, 600, "the worker serving version 1")
    values = sample_texts(REPO / "data")
    out = labelled(stack, values, len(values))
    assert sorted(o["id"] for o in out) == sorted(orjson.loads(v)["id"] for v in values), stack.logs("worker")
    assert {o["model_version"] for o in out} == {1}
    right = sum(o["label"] == o["expected"] for o in out)
    assert right >= len(values) - 3, [(o["expected"], o["label"]) for o in out]


def test_prometheus_scrapes_the_worker_and_the_feedback_trainer(stack: Stack) -> None:
    wait_until(lambda: stack.up_targets("textstream-worker") == 1 and stack.up_targets("textstream-trainer") == 1,
               180, "Prometheus scraping the worker and the trainer")
    prometheus = stack.containers("prometheus")[0]
    result = stack.get(prometheus, "http://localhost:9090/api/v1/query?query=textstream_model_version")
    assert [float(r["value"][1]) for r in result["data"]["result"]] == [1.0]


def test_scale_worker_2_splits_the_partitions_and_both_are_scraped(stack: Stack) -> None:
    stack.compose("up", "-d", "--no-deps", "--scale", "worker=2", "worker", timeout=600)
    workers = stack.containers("worker")
    assert len(workers) == 2

    def split() -> bool:
        a, b = (set(ready(stack, w).get("assigned") or ()) for w in workers)
        return len(a) == 2 and len(b) == 2 and a | b == {f"{RAW}/{p}" for p in range(4)}

    wait_until(split, 600, "the 4 partitions split 2 and 2")
    wait_until(lambda: stack.up_targets("textstream-worker") == 2, 180, "Prometheus scraping both workers")
    values = [orjson.dumps({"id": f"s-{i}", "text": f"Shares rose {i} percent after strong profits."})
              for i in range(40)]
    out = labelled(stack, values, 16 + 40)
    assert {f"s-{i}" for i in range(40)} <= {o["id"] for o in out}


def test_stop_ends_every_worker_cleanly(stack: Stack) -> None:
    workers = stack.containers("worker")
    stack.compose("stop", "-t", "60", "worker", timeout=300)
    for w in workers:
        assert docker("inspect", "-f", "{{.State.ExitCode}}", w) == "0", docker("logs", "--tail", "40", w, check=False)

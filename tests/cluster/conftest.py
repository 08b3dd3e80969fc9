"""The three-node cluster (devkit/cluster.py), started once per test session, and one worker on it
logged in as `User:worker` (SCRAM-SHA-512, ACLs: read/write/describe its topics and group, no
CREATE) with every topic pre-created by the admin and TEXTSTREAM_CREATE_TOPICS=false. A cluster that
cannot start is a failure, never a skip."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from devkit import cluster as kcluster
from devkit.stack import Namespace, WorkerProcess
from tests.factories import NEWS
from worker import registry, topics
from worker.security import ClientSecurity

USER, PASSWORD = "worker", "worker-scram-pw-4711"
PRINCIPAL = f"User:{USER}"
WORKER_SECURITY = ClientSecurity("SASL_PLAINTEXT", "SCRAM-SHA-512", USER, PASSWORD)
PARTITIONS = 4



def records(prefix: str, n: int) -> list[bytes]:
    return [orjson.dumps({"id": f"{prefix}-{i}", "text": f"{NEWS[i % len(NEWS)]} Item {i}."}) for i in range(n)]


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[kcluster.ClusterConfig]:
    cfg = kcluster.ClusterConfig(run_dir=tmp_path_factory.mktemp("cluster"), users=((USER, PASSWORD),))
    started = time.monotonic()
    kcluster.start_cluster(cfg)
    print(f"cluster of {cfg.nodes} nodes ready in {time.monotonic() - started:.1f} s: {cfg.bootstrap}")
    try:
        yield cfg
    finally:
        kcluster.stop_cluster(cfg)


def labels_of(model_dir: Path) -> list[str]:
    manifest = registry.read_manifest(model_dir / str(registry.serving_version(model_dir)))
    return [str(x) for x in manifest["labels"]]


@dataclass
class ClusterStack:
    cluster: kcluster.ClusterConfig
    namespace: Namespace
    model_dir: Path
    log_dir: Path
    worker: WorkerProcess
    topics: list[str]  # every topic the admin pre-created for the worker

    @property
    def bootstrap(self) -> str:
        """The admin's listeners (the tests' producers and readers are admin clients)."""
        return self.cluster.bootstrap

    def env(self) -> dict[str, str]:
        return worker_env(self.cluster, self.namespace, self.model_dir)


def worker_env(cluster: kcluster.ClusterConfig, ns: Namespace, model_dir: Path) -> dict[str, str]:
    return ns.env(cluster.sasl_bootstrap, model_dir, TEXTSTREAM_TOPIC_PARTITIONS=str(PARTITIONS),
                  TEXTSTREAM_MAX_TEXT_BYTES="2000", TEXTSTREAM_SECURITY_PROTOCOL="SASL_PLAINTEXT",
                  TEXTSTREAM_SASL_MECHANISM="SCRAM-SHA-512", TEXTSTREAM_SASL_USERNAME=USER,
                  TEXTSTREAM_SASL_PASSWORD=PASSWORD, TEXTSTREAM_CREATE_TOPICS="false")


def worker_topics(ns: Namespace, labels: list[str]) -> list[str]:
    """Every topic today's worker reads, writes or declares: input, output, dead letters, models, one
    per label of the model, and Faust's leader-assignor topic."""
    return [ns.raw, ns.labeled, ns.dlq, ns.models, *(topics.label_topic(ns.label_prefix, x) for x in labels),
            assignor_topic(ns)]


def assignor_topic(ns: Namespace) -> str:
    return f"{ns.name}-__assignor-__leader"


@pytest.fixture(scope="module")
def cluster_stack(cluster: kcluster.ClusterConfig, tiny_registry: Path,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterStack]:
    """One worker for the module's tests (each counts only the inputs it sent), on topics the admin
    created with replication factor 3 and min.insync.replicas 2; its principal may not create any."""
    ns = Namespace.fresh("cl")
    names = worker_topics(ns, labels_of(tiny_registry))
    # Faust's assignor topic has one partition (Faust declares it so); the models topic one too.
    single = {ns.models, assignor_topic(ns)}
    asyncio.run(kcluster.create_topics(cluster, [n for n in names if n not in single], PARTITIONS))
    asyncio.run(kcluster.create_topics(cluster, sorted(single), 1))
    asyncio.run(kcluster.create_acls(cluster, kcluster.worker_acls(PRINCIPAL, f"{ns.name}.", ns.name,
                                                                    [assignor_topic(ns)])))
    log_dir = tmp_path_factory.mktemp("cluster-worker")
    worker = WorkerProcess(worker_env(cluster, ns, tiny_registry), log_dir / "worker.log")
    try:
        worker.wait_ready(timeout=300)
        yield ClusterStack(cluster, ns, tiny_registry, log_dir, worker, names)
    finally:
        worker.stop()

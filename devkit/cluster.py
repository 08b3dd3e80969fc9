"""A local three-node Kafka (KRaft) cluster from the same jars as devkit/kafka_local.py's single broker,
for the tests of tests/cluster: replication factor 3, min.insync.replicas 2, no topic auto-creation,
ACLs on, a SCRAM-SHA-512 listener for the worker's principal.

Layout: three combined broker+controller nodes forming one static controller quorum
(`controller.quorum.voters`, formatted without `--standalone`, one cluster id). Any one node may be
down: the two others still elect a controller and hold min.insync.replicas. Each node is a
kafka_local.BrokerConfig of its own (run_dir/node<i>: data, logs, pid file, ports), so
kafka_local.stop/kill work on it unchanged; its server.properties is the single broker's template
with the cluster's settings put over it.

Listeners per node: PLAINTEXT (inter-broker and the admin clients of the tests: principal
User:ANONYMOUS, the super user), SASL_PLAINTEXT/SCRAM-SHA-512 (the worker: User:<name>, ACLs only),
CONTROLLER (PLAINTEXT). Everything binds 127.0.0.1.

Every wait is for a condition (a port that answers, a broker registered, an ISR full again) with a
deadline, cut short when the node's process exits.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaClient
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import for_code
from aiokafka.protocol.admin import CreateAclsRequest

from devkit import kafka_local
from devkit.kafka_local import BrokerConfig, KafkaLocalError, free_ports

__all__ = ["AclBinding", "ClusterConfig", "create_acls", "create_topics", "describe", "isr_full",
           "start_cluster", "start_node", "stop_cluster", "stop_node", "wait_isr_full", "worker_acls"]

# The PLAINTEXT listener's principal: the brokers talk to each other there, and so do the tests'
# admin clients. Only 127.0.0.1 can reach it.
ADMIN_PRINCIPAL = "User:ANONYMOUS"
AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"


@dataclass(frozen=True)
class ClusterConfig:
    """`nodes` combined broker+controller nodes under run_dir/node<i>, on free ports unless given."""

    run_dir: Path
    users: tuple[tuple[str, str], ...]  # SCRAM-SHA-512 users (name, password), created at format time
    nodes: int = 3
    min_insync: int = 2
    host: str = "127.0.0.1"
    home: Path = field(default_factory=kafka_local.local_kafka_home)
    ports: tuple[int, ...] = ()  # PLAINTEXT per node
    controller_ports: tuple[int, ...] = ()
    sasl_ports: tuple[int, ...] = ()
    node_configs: tuple[BrokerConfig, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.nodes < 1 or not 1 <= self.min_insync <= self.nodes:
            raise KafkaLocalError(f"{self.nodes} nodes with min.insync.replicas {self.min_insync}")
        if not self.users:
            raise KafkaLocalError("a cluster needs at least one SCRAM user (the worker's principal)")
        given = (self.ports, self.controller_ports, self.sasl_ports)
        if not any(given):
            free = free_ports(3 * self.nodes)
            given = (tuple(free[0::3]), tuple(free[1::3]), tuple(free[2::3]))
        if any(len(p) != self.nodes for p in given):
            raise KafkaLocalError(f"ports, controller_ports and sasl_ports need {self.nodes} entries each")
        object.__setattr__(self, "ports", given[0])
        object.__setattr__(self, "controller_ports", given[1])
        object.__setattr__(self, "sasl_ports", given[2])
        run = Path(self.run_dir).expanduser().resolve()
        object.__setattr__(self, "run_dir", run)
        object.__setattr__(self, "node_configs", tuple(
            BrokerConfig(home=self.home, run_dir=run / f"node{i}", host=self.host, port=self.ports[i],
                         controller_port=self.controller_ports[i], sasl_port=self.sasl_ports[i],
                         scram_users=self.users)
            for i in range(self.nodes)))

    def node(self, i: int) -> BrokerConfig:
        return self.node_configs[i]

    @property
    def bootstrap(self) -> str:
        """Every node's PLAINTEXT listener (admin principal): clients survive any one node down."""
        return ",".join(f"{self.host}:{p}" for p in self.ports)

    @property
    def sasl_bootstrap(self) -> str:
        """Every node's SCRAM listener, for the worker's principal."""
        return ",".join(f"{self.host}:{p}" for p in self.sasl_ports)

    @property
    def voters(self) -> str:
        return ",".join(f"{i + 1}@{self.host}:{p}" for i, p in enumerate(self.controller_ports))


def render_node_properties(cluster: ClusterConfig, i: int) -> str:
    """The single broker's server.properties (kafka_local.render_properties) with the cluster's
    settings put over it: node id, static voters, replication 3 / min ISR 2, no auto-creation, ACLs."""
    rf, isr = str(cluster.nodes), str(cluster.min_insync)
    overrides = {
        "node.id": str(i + 1),
        "controller.quorum.voters": cluster.voters,
        "default.replication.factor": rf,
        "min.insync.replicas": isr,
        "offsets.topic.replication.factor": rf,
        "transaction.state.log.replication.factor": rf,
        "transaction.state.log.min.isr": isr,
        "share.coordinator.state.topic.replication.factor": rf,
        "share.coordinator.state.topic.min.isr": isr,
        "auto.create.topics.enable": "false",
        "authorizer.class.name": AUTHORIZER,
        "super.users": ADMIN_PRINCIPAL,
        "allow.everyone.if.no.acl.found": "false",
    }
    drop = {"controller.quorum.bootstrap.servers"}  # the dynamic quorum of the single broker
    out, seen = [], set()
    for line in kafka_local.render_properties(cluster.node(i)).splitlines():
        key = line.split("=", 1)[0].strip() if "=" in line and not line.lstrip().startswith("#") else None
        if key in drop:
            continue
        if key in overrides:
            line = f"{key}={overrides[key]}"
            seen.add(key)
        out.append(line)
    out += ["", "# Three-node cluster (devkit/cluster.py)"]
    out += [f"{k}={v}" for k, v in overrides.items() if k not in seen]
    return "\n".join(out) + "\n"


def _format(cluster: ClusterConfig, cluster_id: str) -> None:
    for i, cfg in enumerate(cluster.node_configs):
        shutil.rmtree(cfg.run_dir, ignore_errors=True)
        cfg.logs_dir.mkdir(parents=True)
        cfg.properties_file.write_text(render_node_properties(cluster, i))
        scram = [arg for name, password in cluster.users
                 for arg in ("--add-scram", f"{kafka_local.SCRAM_MECHANISM}=[name={name},password={password}]")]
        # Static quorum (controller.quorum.voters): no --standalone, the same cluster id everywhere.
        kafka_local._java(cfg, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(cfg.properties_file),
                          *scram, hide=tuple(pw for _, pw in cluster.users))


def _launch(cfg: BrokerConfig) -> int:
    """Start the node's JVM (not waiting); its pid."""
    kafka_local.check_ports_free(cfg)
    cmd = [kafka_local.require_tool("java"), *kafka_local._JVM_OPTS,
           f"-Dlog4j2.configurationFile={cfg.home / 'log4j2.properties'}", f"-Dkafka.logs.dir={cfg.logs_dir}",
           "-cp", f"{cfg.libs}/*", "kafka.Kafka", str(cfg.properties_file)]
    with open(cfg.logs_dir / "console.log", "ab") as console:
        proc = subprocess.Popen(cmd, cwd=cfg.run_dir, stdin=subprocess.DEVNULL, stdout=console,
                                stderr=subprocess.STDOUT, start_new_session=True)
    cfg.pid_file.write_text(f"{proc.pid}\n")
    proc.returncode = 0  # outlives this handle; reaped by kafka_local._alive
    return proc.pid


def start_cluster(cluster: ClusterConfig, timeout: float = 120) -> ClusterConfig:
    """Format every node (fresh data) and start them together (the quorum needs a majority before
    any broker is unfenced); return once every listener answers and every broker is registered."""
    started = time.monotonic()
    cfg0 = cluster.node(0)
    kafka_local.assemble(cfg0)
    cluster.run_dir.mkdir(parents=True, exist_ok=True)
    cfg0.run_dir.mkdir(parents=True, exist_ok=True)  # the JVM runs in it
    cluster_id = kafka_local._java(cfg0, "kafka.tools.StorageTool", "random-uuid")
    _format(cluster, cluster_id)
    pids = [_launch(cfg) for cfg in cluster.node_configs]
    try:
        for cfg, pid in zip(cluster.node_configs, pids, strict=True):
            kafka_local._wait_ready(cfg, pid, max(1.0, timeout - (time.monotonic() - started)))
        wait_registered(cluster, deadline=started + timeout)
    except BaseException:
        stop_cluster(cluster)
        raise
    return cluster


def stop_cluster(cluster: ClusterConfig) -> None:
    """SIGTERM every node at once, then wait for each (SIGKILL after 30 s)."""
    for cfg in cluster.node_configs:
        pid = kafka_local._running_pid(cfg)
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
    for cfg in cluster.node_configs:
        kafka_local.stop(cfg)


def stop_node(cluster: ClusterConfig, i: int, sig: int = signal.SIGTERM, timeout: float = 60) -> None:
    """Send `sig` to node i and wait until it exited (SIGTERM: controlled shutdown; SIGKILL: a crash)."""
    if not kafka_local.kill(cluster.node(i), sig, timeout=timeout):
        raise KafkaLocalError(f"node {i} is not running")


def start_node(cluster: ClusterConfig, i: int, timeout: float = 120) -> int:
    """Start node i again on its data and ports; return its pid once its listeners answer (in 4.x
    the broker port opens only once it has caught up with the metadata and is unfenced) and the
    cluster sees it registered."""
    cfg = cluster.node(i)
    if kafka_local._running_pid(cfg) is not None:
        raise KafkaLocalError(f"node {i} is already running")
    deadline = time.monotonic() + timeout
    pid = _launch(cfg)
    kafka_local._wait_ready(cfg, pid, timeout)
    wait_registered(cluster, deadline=deadline)
    return pid


# --- admin API (the admin principal on the PLAINTEXT listeners) ----------------------------------------

async def _admin(cluster: ClusterConfig) -> AIOKafkaAdminClient:
    admin = AIOKafkaAdminClient(bootstrap_servers=cluster.bootstrap, request_timeout_ms=30_000)
    await admin.start()
    return admin


async def describe(cluster: ClusterConfig) -> tuple[set[int], list[dict[str, Any]]]:
    """(ids of the registered brokers, every topic's metadata with its partitions' replicas and ISR)."""
    admin = await _admin(cluster)
    try:
        await admin._client.force_metadata_update()
        brokers = {int(b.nodeId) for b in admin._client.cluster.brokers()}
        return brokers, await admin.describe_topics()
    finally:
        await admin.close()


def isr_full(brokers: set[int], topics: Sequence[dict[str, Any]]) -> tuple[bool, str]:
    """(every broker registered and every partition's ISR = its replicas, what is still missing)."""
    missing = []
    for topic in topics:
        for part in topic["partitions"]:
            if set(part["isr"]) != set(part["replicas"]) or part["leader"] < 0:
                missing.append(f"{topic['topic']}[{part['partition']}] isr={sorted(part['isr'])} "
                               f"replicas={sorted(part['replicas'])} leader={part['leader']}")
    return not missing, "; ".join(missing[:5]) + (f" (+{len(missing) - 5})" if len(missing) > 5 else "")


def _wait(cluster: ClusterConfig, deadline: float, what: str, check: Any) -> None:
    last = ""
    while True:
        try:
            ok, last = check(*asyncio.run(describe(cluster)))
        except Exception as exc:  # a node that is still electing a leader, a metadata refresh in between
            ok, last = False, repr(exc)
        if ok:
            return
        for i, cfg in enumerate(cluster.node_configs):
            if cfg.pid_file.exists() and kafka_local._running_pid(cfg) is None:
                raise KafkaLocalError(f"node {i} exited while waiting for {what}:\n"
                                      f"{kafka_local._tail(cfg.logs_dir / 'server.log')}")
        if time.monotonic() > deadline:
            raise KafkaLocalError(f"timed out waiting for {what}: {last}")
        time.sleep(0.5)


def wait_registered(cluster: ClusterConfig, *, deadline: float) -> None:
    """Until the metadata names every running node as a broker."""
    running = {i + 1 for i, cfg in enumerate(cluster.node_configs) if kafka_local._running_pid(cfg) is not None}
    _wait(cluster, deadline, f"brokers {sorted(running)} registered",
          lambda brokers, _: (running <= brokers, f"registered: {sorted(brokers)}"))


def wait_isr_full(cluster: ClusterConfig, timeout: float = 120) -> float:
    """Until every partition of every topic (internal ones included) has its full ISR again and every
    node is registered; the seconds it took."""
    started = time.monotonic()
    everyone = set(range(1, cluster.nodes + 1))

    def check(brokers: set[int], topics: list[dict[str, Any]]) -> tuple[bool, str]:
        ok, missing = isr_full(brokers, topics)
        return ok and everyone <= brokers, missing or f"registered: {sorted(brokers)}"

    _wait(cluster, started + timeout, "every ISR full", check)
    return time.monotonic() - started


async def create_topics(cluster: ClusterConfig, names: Iterable[str], partitions: int,
                        configs: dict[str, str] | None = None) -> None:
    """Create topics with the cluster's replication factor and min.insync.replicas, as the admin;
    every per-topic error in the response raises (aiokafka does not)."""
    topic_configs = {"min.insync.replicas": str(cluster.min_insync), **(configs or {})}
    admin = await _admin(cluster)
    try:
        response = await admin.create_topics([NewTopic(n, partitions, cluster.nodes, topic_configs=topic_configs)
                                               for n in names])
    finally:
        await admin.close()
    errors = [f"{err[0]}: {for_code(err[1]).__name__} {err[2] if len(err) > 2 else ''}".rstrip()
              for err in response.topic_errors if err[1] != 0]
    if errors:
        raise KafkaLocalError("cannot create topics: " + "; ".join(errors))


# Kafka's enums (org.apache.kafka.common.resource / acl): the codes of the wire protocol.
RESOURCE = {"TOPIC": 2, "GROUP": 3, "CLUSTER": 4, "TRANSACTIONAL_ID": 5}
PATTERN = {"LITERAL": 3, "PREFIXED": 4}
OPERATION = {"ALL": 2, "READ": 3, "WRITE": 4, "CREATE": 5, "DELETE": 6, "ALTER": 7, "DESCRIBE": 8,
             "CLUSTER_ACTION": 9, "DESCRIBE_CONFIGS": 10, "ALTER_CONFIGS": 11, "IDEMPOTENT_WRITE": 12}
ALLOW = 3


@dataclass(frozen=True)
class AclBinding:
    """ALLOW `operation` on a resource for `principal` from any host (kafka-acls --allow-principal)."""

    principal: str
    operation: str
    resource: str  # TOPIC, GROUP, CLUSTER, TRANSACTIONAL_ID
    name: str
    pattern: str = "LITERAL"

    def kafka_acls_args(self) -> str:
        """The same binding as a kafka-acls.sh command line (for docs and messages)."""
        what = {"TOPIC": f"--topic {self.name}", "GROUP": f"--group {self.name}", "CLUSTER": "--cluster",
                "TRANSACTIONAL_ID": f"--transactional-id {self.name}"}[self.resource]
        pattern = " --resource-pattern-type prefixed" if self.pattern == "PREFIXED" else ""
        return f"--add --allow-principal {self.principal} --operation {self.operation.title()} {what}{pattern}"


def exactly_once_acls(principal: str, app_id: str) -> list[AclBinding]:
    """What a worker with TEXTSTREAM_PROCESSING_GUARANTEE=exactly_once needs on top of `worker_acls`:
    its transactional ids, `<app id>-<input topic>-<partition>` (worker/transactions.py)."""
    return [AclBinding(principal, op, "TRANSACTIONAL_ID", f"{app_id}-", "PREFIXED") for op in ("WRITE", "DESCRIBE")]


def worker_acls(principal: str, topic_prefix: str, group: str, topics: Sequence[str] = ()) -> list[AclBinding]:
    """What a worker principal needs and no more: read, write and describe the topics under
    `topic_prefix` (input, output, dead letters, models, label topics) and the literal `topics`
    (Faust's `<app_id>-__assignor-__leader`), and read/describe its consumer group. No CREATE
    anywhere: the worker runs with TEXTSTREAM_CREATE_TOPICS=false, checks that its topics exist, and
    Faust declares none of its own (topic_allow_declare off), so nothing sends CreateTopics (Kafka
    answers TOPIC_AUTHORIZATION_FAILED to an unauthorised creation even of an existing topic)."""
    out = [AclBinding(principal, op, "TOPIC", topic_prefix, "PREFIXED")
           for op in ("READ", "WRITE", "DESCRIBE", "DESCRIBE_CONFIGS")]
    out += [AclBinding(principal, op, "TOPIC", name) for name in topics for op in ("READ", "WRITE", "DESCRIBE")]
    out += [AclBinding(principal, op, "GROUP", group) for op in ("READ", "DESCRIBE")]
    return out


async def create_acls(cluster: ClusterConfig, bindings: Sequence[AclBinding]) -> None:
    """Create the ACLs as the admin principal (CreateAcls v1, which Kafka 4.x still accepts and
    aiokafka speaks; aiokafka's admin client has no ACL call and kafka-acls is not among the jars).
    Every error in a response raises."""
    client = AIOKafkaClient(bootstrap_servers=cluster.bootstrap, request_timeout_ms=30_000)
    await client.bootstrap()
    try:
        for b in bindings:
            request = CreateAclsRequest(RESOURCE[b.resource], b.name, PATTERN[b.pattern], b.principal, "*",
                                        OPERATION[b.operation], ALLOW)
            node = client.get_random_node()
            response = await client.send(node, request)
            for code, message in response.creation_responses:
                if code != 0:
                    raise KafkaLocalError(f"cannot create ACL ({b.kafka_acls_args()}): "
                                          f"{for_code(code).__name__} {message or ''}".rstrip())
    finally:
        await client.close()

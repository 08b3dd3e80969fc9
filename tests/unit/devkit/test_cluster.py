"""The three-node cluster's configuration (devkit/cluster.py), checked without starting Java; the
cluster itself runs in tests/cluster."""

from __future__ import annotations

from pathlib import Path

import pytest

from devkit import cluster
from devkit.kafka_local import KafkaLocalError
from worker.config import load_settings
from worker.transactions import transactional_id

KAFKA_HOME = Path(__file__).resolve().parents[3] / "deploy" / "kafka"
USERS = (("worker", "worker-pw"),)


def config(tmp_path: Path) -> cluster.ClusterConfig:
    return cluster.ClusterConfig(run_dir=tmp_path, users=USERS, home=KAFKA_HOME, ports=(19092, 19192, 19292),
                                 controller_ports=(19093, 19193, 19293), sasl_ports=(19094, 19194, 19294))


def props(cfg: cluster.ClusterConfig, i: int) -> dict[str, str]:
    text = cluster.render_node_properties(cfg, i)
    assert "$" not in text
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    keys = [line.split("=", 1)[0] for line in lines]
    assert len(keys) == len(set(keys)), "a key set twice"
    return dict(line.split("=", 1) for line in lines)


def test_each_node_is_a_voter_of_one_static_quorum(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    voters = "1@127.0.0.1:19093,2@127.0.0.1:19193,3@127.0.0.1:19293"
    for i in range(3):
        p = props(cfg, i)
        assert p["node.id"] == str(i + 1)
        assert p["process.roles"] == "broker,controller"
        assert p["controller.quorum.voters"] == voters
        assert "controller.quorum.bootstrap.servers" not in p  # mixing the two is an error in Kafka
        assert p["log.dirs"] == str(tmp_path.resolve() / f"node{i}" / "data")
    assert props(cfg, 1)["listeners"] == ("PLAINTEXT://127.0.0.1:19192,SASL_PLAINTEXT://127.0.0.1:19194,"
                                          "CONTROLLER://127.0.0.1:19193")


def test_replication_acls_and_no_auto_creation(tmp_path: Path) -> None:
    p = props(config(tmp_path), 0)
    for key in ("default.replication.factor", "offsets.topic.replication.factor",
                "transaction.state.log.replication.factor", "share.coordinator.state.topic.replication.factor"):
        assert p[key] == "3", key
    for key in ("min.insync.replicas", "transaction.state.log.min.isr", "share.coordinator.state.topic.min.isr"):
        assert p[key] == "2", key
    assert p["auto.create.topics.enable"] == "false"
    assert p["authorizer.class.name"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert p["super.users"] == "User:ANONYMOUS"  # the PLAINTEXT (inter-broker, admin) listener
    assert p["allow.everyone.if.no.acl.found"] == "false"
    assert p["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"


def test_free_ports_by_default_and_bootstraps(tmp_path: Path) -> None:
    cfg = cluster.ClusterConfig(run_dir=tmp_path, users=USERS, home=KAFKA_HOME)
    ports = [*cfg.ports, *cfg.controller_ports, *cfg.sasl_ports]
    assert len(set(ports)) == 9
    assert cfg.bootstrap == ",".join(f"127.0.0.1:{p}" for p in cfg.ports)
    assert cfg.sasl_bootstrap == ",".join(f"127.0.0.1:{p}" for p in cfg.sasl_ports)
    assert [c.run_dir for c in cfg.node_configs] == [tmp_path.resolve() / f"node{i}" for i in range(3)]


@pytest.mark.parametrize("kwargs", [{"users": ()}, {"min_insync": 4}, {"ports": (1, 2)}])
def test_bad_cluster_config_is_refused(tmp_path: Path, kwargs: dict[str, object]) -> None:
    with pytest.raises(KafkaLocalError):
        cluster.ClusterConfig(**{"run_dir": tmp_path, "users": USERS, "home": KAFKA_HOME, **kwargs})  # type: ignore[arg-type]


def test_worker_acls_grant_no_create() -> None:
    acls = cluster.worker_acls("User:worker", "texts.", "textstream", ["textstream-__assignor-__leader"])
    assert {a.operation for a in acls} == {"READ", "WRITE", "DESCRIBE", "DESCRIBE_CONFIGS"}
    assert {(a.resource, a.name, a.pattern) for a in acls} == {
        ("TOPIC", "texts.", "PREFIXED"), ("TOPIC", "textstream-__assignor-__leader", "LITERAL"),
        ("GROUP", "textstream", "LITERAL")}
    assert acls[0].kafka_acls_args() == ("--add --allow-principal User:worker --operation Read --topic texts. "
                                         "--resource-pattern-type prefixed")


def test_exactly_once_acls_cover_every_transactional_id_of_the_app_and_nothing_else() -> None:
    acls = cluster.exactly_once_acls("User:worker", "textstream")
    assert {(a.resource, a.name, a.pattern, a.operation) for a in acls} == {
        ("TRANSACTIONAL_ID", "textstream-", "PREFIXED", "WRITE"), ("TRANSACTIONAL_ID", "textstream-", "PREFIXED", "DESCRIBE")}
    settings = load_settings(app_id="textstream", input_topic="texts.raw")
    assert transactional_id(settings, 7).startswith(acls[0].name)
    # the command docs/operations.md gives for it
    assert acls[0].kafka_acls_args() == ("--add --allow-principal User:worker --operation Write --transactional-id "
                                         "textstream- --resource-pattern-type prefixed")


def test_isr_full_names_what_is_missing() -> None:
    full = [{"topic": "a", "partitions": [{"partition": 0, "leader": 1, "replicas": [1, 2, 3], "isr": [3, 1, 2]}]}]
    assert cluster.isr_full({1, 2, 3}, full) == (True, "")
    short = [{"topic": "a", "partitions": [{"partition": 0, "leader": 1, "replicas": [1, 2, 3], "isr": [1, 2]}]}]
    ok, why = cluster.isr_full({1, 2, 3}, short)
    assert not ok and "a[0] isr=[1, 2]" in why

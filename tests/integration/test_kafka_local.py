"""Start a real Kafka broker with devkit.kafka_local, talk to it with aiokafka, stop it."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from devkit import kafka_local
from devkit.kafka_local import BrokerConfig
from devkit.stack import free_ports

# No skip when java is missing: in CI a missing broker is a failure.
pytestmark = pytest.mark.integration


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


async def _list_topics(bootstrap: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


def test_start_status_idempotent_stop(tmp_path: Path) -> None:
    port, controller_port = free_ports(2)
    cfg = BrokerConfig(run_dir=tmp_path / "run", port=port, controller_port=controller_port)
    try:
        pid = kafka_local.start(cfg, fresh=True)
        st = kafka_local.status(cfg)
        assert st["running"] and st["ready"] and st["pid"] == pid
        assert st["bootstrap"] == f"127.0.0.1:{port}"
        assert Path(st["log_file"]).is_file()

        assert isinstance(asyncio.run(_list_topics(kafka_local.bootstrap(cfg))), set)

        assert kafka_local.start(cfg) == pid  # already running: same broker
    finally:
        stopped = kafka_local.stop(cfg)
    assert stopped is True
    assert not _port_open(port)
    assert kafka_local.status(cfg)["running"] is False
    assert kafka_local.stop(cfg) is False

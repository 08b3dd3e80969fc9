"""Fault-suite fixtures: the session broker's `stack` (for faults that leave the broker alone) and a
private broker per test for the faults that kill the broker itself."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.factories import free_ports
from tests.integration.conftest import Stack, stack  # noqa: F401  (the fixture, re-exported for tests/faults)
from worker import kafka_local


@pytest.fixture
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[kafka_local.BrokerConfig]:
    """A broker of this test only: it may be SIGTERMed, SIGKILLed and restarted (same data, same ports)."""
    port, controller = free_ports(2)
    cfg = kafka_local.BrokerConfig(run_dir=tmp_path_factory.mktemp("kafka-own"), port=port, controller_port=controller)
    kafka_local.assemble(cfg)
    kafka_local.start(cfg, fresh=True)
    try:
        yield cfg
    finally:
        kafka_local.stop(cfg)


@pytest.fixture
def own_stack(own_broker: kafka_local.BrokerConfig, tiny_registry: Path, tmp_path: Path) -> Iterator[Stack]:
    s = Stack(kafka_local.bootstrap(own_broker), tiny_registry, tmp_path)
    yield s
    for w in s.workers:
        if w.proc.poll() is None:
            w.proc.kill()
            w.proc.wait()

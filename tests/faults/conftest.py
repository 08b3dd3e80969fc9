"""Fault-suite fixtures: the session broker's `stack` (for faults that leave the broker alone) and a
private broker per test for the faults that kill the broker itself."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devkit import kafka_local
from devkit.stack import free_ports
from tests.integration.conftest import Stack, running_broker, stack, stack_on  # noqa: F401  (`stack`: the fixture, re-exported for tests/faults)


@pytest.fixture
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[kafka_local.BrokerConfig]:
    """A broker of this test only: it may be SIGTERMed, SIGKILLed and restarted (same data, same ports)."""
    port, controller = free_ports(2)
    with running_broker(kafka_local.BrokerConfig(run_dir=tmp_path_factory.mktemp("kafka-own"), port=port,
                                                 controller_port=controller)) as cfg:
        yield cfg


@pytest.fixture
def own_stack(own_broker: kafka_local.BrokerConfig, tiny_registry: Path, tmp_path: Path) -> Iterator[Stack]:
    with stack_on(kafka_local.bootstrap(own_broker), tiny_registry, tmp_path) as s:
        yield s

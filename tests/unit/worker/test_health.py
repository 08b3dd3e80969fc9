"""The /healthz, /readyz and /status bodies over the worker's state (no broker, no Faust)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.unit.worker.fakes import fake_bundle
from worker.config import load_settings
from worker.health import STALE_AFTER_S, Health
from worker.lag import LagProbe
from worker.reload import Serving


def health(tmp_path: Path, serving: Serving | None = None) -> Health:
    settings = load_settings(app_id="health-test")
    return Health(serving or Serving(tmp_path), LagProbe("localhost:1", settings.app_id), settings)


def ready_state(h: Health) -> Health:
    h.serving.bundle = fake_bundle(version=4)
    h.assign([("texts.raw", 1), ("texts.raw", 0)])
    h.lag.last_ok = time.time()
    return h


def test_alive_while_the_event_loop_ticks(tmp_path: Path) -> None:
    h = health(tmp_path)
    h.beat()
    body = h.liveness()
    assert body["alive"] is True and 0 <= body["event_loop_tick_age_s"] < 1


def test_not_alive_once_the_last_tick_is_stale(tmp_path: Path) -> None:
    h = health(tmp_path)
    h.tick = time.time() - STALE_AFTER_S - 1
    body = h.liveness()
    assert body["alive"] is False and body["event_loop_tick_age_s"] == pytest.approx(STALE_AFTER_S + 1, abs=0.5)


def test_ready_with_a_model_partitions_and_a_recent_broker_answer(tmp_path: Path) -> None:
    body = ready_state(health(tmp_path)).readiness()
    assert body == {"ready": True, "model_version": 4, "assigned": ["texts.raw/0", "texts.raw/1"],
                    "checks": {"model_loaded": True, "partitions_assigned": True, "broker_reachable": True}}


def test_not_ready_before_anything_happened(tmp_path: Path) -> None:
    body = health(tmp_path).readiness()
    assert body == {"ready": False, "model_version": None, "assigned": [],
                    "checks": {"model_loaded": False, "partitions_assigned": False, "broker_reachable": False}}


@pytest.mark.parametrize("missing", ["model_loaded", "partitions_assigned", "broker_reachable"])
def test_each_check_alone_makes_the_worker_not_ready(tmp_path: Path, missing: str) -> None:
    h = ready_state(health(tmp_path))
    if missing == "model_loaded":
        h.serving.bundle = None
    elif missing == "partitions_assigned":
        h.assigned = None
    else:
        h.lag.last_ok = time.time() - STALE_AFTER_S - 1  # the broker's last answer is stale
    body = h.readiness()
    assert body["ready"] is False
    assert [name for name, ok in body["checks"].items() if not ok] == [missing]


def test_an_empty_assignment_counts_as_assigned(tmp_path: Path) -> None:
    """More workers than partitions: a worker with none is still ready (it is in the group)."""
    h = ready_state(health(tmp_path))
    h.assign([])
    body = h.readiness()
    assert body["ready"] is True and body["assigned"] == []


def test_only_the_input_topics_partitions_are_assigned_and_measured(tmp_path: Path) -> None:
    h = health(tmp_path)
    tps = [("texts.models", 0), ("texts.raw", 2), ("other", 1), ("texts.raw", 0)]
    h.assign(tps)
    assert h.assigned == ["texts.raw/0", "texts.raw/2"]
    assert h.inputs(tps) == [("texts.raw", 2), ("texts.raw", 0)]


def test_status_adds_the_serving_history_app_and_lag_to_readiness(tmp_path: Path) -> None:
    h = ready_state(health(tmp_path))
    h.lag.lag = {("texts.raw", 0): 12, ("texts.raw", 1): 0}
    body = h.status()
    assert body["ready"] is True and body["checks"]["model_loaded"] is True
    assert body["app_id"] == "health-test" and body["started_at"] == h.started
    assert body["lag"] == {"texts.raw/0": 12, "texts.raw/1": 0}
    assert body["model_version"] == 4 and body["labels"] == ["sport", "tech"]
    assert body["registry"] == str(tmp_path) and body["reloads"] == {"success": 0, "failure": 0}

"""The bodies of /healthz (alive), /readyz (ready to label) and /status (everything an operator asks).

Alive: the event loop ticked recently (a worker stuck in a blocking call is not). Ready: a model
version serves, the group gave this worker its partitions (possibly none) and the broker answered
the lag probe recently.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from worker.config import Settings
from worker.lag import LagProbe
from worker.reload import Serving

logger = logging.getLogger(__name__)

STALE_AFTER_S = 30.0  # a loop tick or a broker answer older than this means unhealthy / not ready


@dataclass
class Health:
    """What the pages report on: the serving version, the lag probe, and what the app records
    (`tick` from a timer on the event loop, `assigned` on each rebalance)."""

    serving: Serving
    lag: LagProbe
    settings: Settings
    started: float = field(default_factory=time.time)
    tick: float = field(default_factory=time.time)
    assigned: list[str] | None = None  # "topic/partition" of the input topic; None before the first assignment

    def beat(self) -> None:
        self.tick = time.time()

    def inputs(self, partitions: Iterable[tuple[str, int]]) -> list[tuple[str, int]]:
        """The input topic's partitions among `partitions` (topic, partition pairs)."""
        return [(t, p) for t, p in partitions if t == self.settings.input_topic]

    def assign(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Record a rebalance's assignment (of every topic the app consumes)."""
        self.assigned = sorted(f"{t}/{p}" for t, p in self.inputs(partitions))
        logger.info("assigned partitions %s", ",".join(self.assigned) or "none")

    def liveness(self) -> dict[str, Any]:
        age = time.time() - self.tick
        return {"alive": age < STALE_AFTER_S, "event_loop_tick_age_s": round(age, 3)}

    def readiness(self) -> dict[str, Any]:
        last_ok = self.lag.last_ok
        checks = {
            "model_loaded": self.serving.bundle is not None,
            "partitions_assigned": self.assigned is not None,
            "broker_reachable": last_ok is not None and time.time() - last_ok < STALE_AFTER_S,
        }
        return {"ready": all(checks.values()), "checks": checks, "model_version": self.serving.version,
                "assigned": self.assigned or []}

    def status(self) -> dict[str, Any]:
        return {**self.serving.status(), **self.readiness(), "app_id": self.settings.app_id, "started_at": self.started,
                "lag": {f"{t}/{p}": v for (t, p), v in self.lag.lag.items()}}

"""Consumer lag of this worker's partitions: end offset minus the group's committed offset.

Measured with a group-less consumer (end offsets) and an admin client (committed offsets), so it
never joins or disturbs the worker's own consumer group. A successful probe also proves that the
broker is reachable, which /readyz reports.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from worker import metrics
from worker.security import PLAINTEXT, ClientSecurity

logger = logging.getLogger(__name__)


class LagProbe:
    def __init__(self, bootstrap: str, group_id: str, security: ClientSecurity = PLAINTEXT) -> None:
        self.bootstrap = bootstrap
        self.security = security
        self.group_id = group_id
        self.last_ok: float | None = None
        self.lag: dict[tuple[str, int], int] = {}

    async def _offsets(self, tps: list[TopicPartition]) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
        """(end offsets, committed offsets). Fresh clients each time: a probe every few seconds
        costs little, and nothing is left open when the worker stops."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=5000,
                                    **self.security.kwargs())
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
                                    request_timeout_ms=5000, **self.security.kwargs())
        try:
            await admin.start()
            await consumer.start()
            committed = await admin.list_consumer_group_offsets(self.group_id)
            ends = await consumer.end_offsets(tps) if tps else {}
        finally:
            await consumer.stop()
            await admin.close()
        done = {tp: meta.offset for tp, meta in committed.items() if meta is not None and meta.offset >= 0}
        return ends, done

    async def measure(self, assigned: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """Lag per assigned partition; updates the gauge (and drops partitions no longer ours)."""
        tps = [TopicPartition(t, p) for t, p in sorted(assigned)]
        try:
            ends, done = await self._offsets(tps)
        except Exception as exc:  # any broker trouble: report it, keep the last figures
            logger.warning("lag probe failed: %s", exc)
            return self.lag
        lag = {(tp.topic, tp.partition): max(ends[tp] - done.get(tp, 0), 0) for tp in tps}
        for gone in set(self.lag) - set(lag):
            metrics.CONSUMER_LAG.remove(gone[0], str(gone[1]))
        for (topic, partition), value in lag.items():
            metrics.CONSUMER_LAG.labels(topic, str(partition)).set(value)
        self.lag = lag
        self.last_ok = time.time()
        return lag

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

logger = logging.getLogger(__name__)


class LagProbe:
    def __init__(self, bootstrap: str, group_id: str) -> None:
        self.bootstrap = bootstrap
        self.group_id = group_id
        self.last_ok: float | None = None
        self.lag: dict[tuple[str, int], int] = {}
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def _clients(self) -> tuple[AIOKafkaAdminClient, AIOKafkaConsumer]:
        if self._admin is None or self._consumer is None:
            self._admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=5000)
            await self._admin.start()
            self._consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None,
                                              enable_auto_commit=False, request_timeout_ms=5000)
            await self._consumer.start()
        return self._admin, self._consumer

    async def measure(self, assigned: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """Lag per assigned partition; updates the gauge (and drops partitions no longer ours)."""
        tps = [TopicPartition(t, p) for t, p in sorted(assigned)]
        try:
            admin, consumer = await self._clients()
            committed = await admin.list_consumer_group_offsets(self.group_id)
            ends = await consumer.end_offsets(tps) if tps else {}
        except Exception as exc:  # any broker trouble: report it, keep the last figures
            logger.warning("lag probe failed: %s", exc)
            await self.close()
            return self.lag
        lag = {}
        for tp in tps:
            meta = committed.get(tp)
            done = meta.offset if meta is not None and meta.offset >= 0 else 0
            lag[(tp.topic, tp.partition)] = max(ends[tp] - done, 0)
        for gone in set(self.lag) - set(lag):
            metrics.CONSUMER_LAG.remove(gone[0], str(gone[1]))
        for (topic, partition), value in lag.items():
            metrics.CONSUMER_LAG.labels(topic, str(partition)).set(value)
        self.lag = lag
        self.last_ok = time.time()
        return lag

    async def close(self) -> None:
        for client in (self._consumer, self._admin):
            if client is not None:
                try:
                    await (client.stop() if isinstance(client, AIOKafkaConsumer) else client.close())
                except Exception:  # closing a broken connection can fail too; nothing to do
                    pass
        self._admin = self._consumer = None

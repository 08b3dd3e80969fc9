"""Exactly-once publishing (TEXTSTREAM_PROCESSING_GUARANTEE=exactly_once): a batch's outputs and the
offsets of its inputs are committed in one Kafka transaction per input partition, or not at all.

One transactional producer per input partition, `transactional.id` = <app id>-<input topic>-<partition>
(Kafka Streams' scheme before KIP-447), because aiokafka's `send_offsets_to_transaction` sends the
group id alone (TxnOffsetCommit v0): the broker cannot refuse a zombie's offsets by its group
generation, but it refuses everything from a producer whose epoch was bumped. The worker that gets a
partition initialises that partition's producer (InitProducerId) before it reads the partition's
committed offset (the Faust shell does it in `on_rebalance_complete`, which Faust awaits before it
seeks): that aborts a transaction the previous owner left open and makes the previous owner's later
sends, offsets and commits fail with ProducerFenced. The previous owner's batch is thus never
half-published, and never committed beside ours.

Faust-free: the shell hands in how to make a producer, so unit tests drive it with fakes; Faust's own
`processing_guarantee="exactly_once"` is not used (faust-streaming#517, #177, #323).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import ProducerFenced, TransactionalIdAuthorizationFailed

from worker.config import Settings
from worker.errors import TextstreamError
from worker.limits import Limits
from worker.records import Outgoing, RawRecord
from worker.security import ClientSecurity, KafkaAuthError, start_client

logger = logging.getLogger(__name__)


class Producer(Protocol):
    """What this module uses of aiokafka's transactional producer."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def begin_transaction(self) -> None: ...
    async def commit_transaction(self) -> None: ...
    async def abort_transaction(self) -> None: ...
    async def send(self, topic: str, value: bytes | None = None, key: bytes | None = None, partition: int | None = None,
                   timestamp_ms: int | None = None, headers: Any = None) -> Awaitable[Any]: ...
    async def send_offsets_to_transaction(self, offsets: dict[TopicPartition, int], group_id: str) -> None: ...


def transactional_id(settings: Settings, partition: int) -> str:
    """Stable per input partition, whichever worker owns it: that is what fences the previous owner."""
    return f"{settings.app_id}-{settings.input_topic}-{partition}"


def producer_factory(settings: Settings, access: ClientSecurity) -> Callable[[int], Producer]:
    """A started-on-demand aiokafka producer for one input partition, with the worker's sizes and security."""
    limits = Limits.of(settings)

    def make(partition: int) -> Producer:
        return AIOKafkaProducer(  # type: ignore[no-any-return]  # aiokafka is untyped
            bootstrap_servers=settings.bootstrap_servers, transactional_id=transactional_id(settings, partition),
            enable_idempotence=True, acks="all", linger_ms=0,
            max_request_size=limits.producer_max_request_size, max_batch_size=limits.producer_batch_bytes,
            client_id=f"{settings.app_id}-txn-{partition}", **access.kwargs())
    return make


class Transactions:
    """The transactional producers of the input partitions this worker owns, and the commit of a batch."""

    def __init__(self, settings: Settings, make_producer: Callable[[int], Producer],
                 start: Callable[[Producer], Awaitable[None]] | None = None) -> None:
        self.settings = settings
        self._make = make_producer
        self._start = start or (lambda producer: producer.start())
        self._producers: dict[int, Producer] = {}

    @classmethod
    def of(cls, settings: Settings, access: ClientSecurity) -> Transactions:
        return cls(settings, producer_factory(settings, access),
                   start=lambda producer: start_client(producer, settings.bootstrap_servers, access))

    @property
    def partitions(self) -> set[int]:
        return set(self._producers)

    async def assign(self, partitions: Iterable[int]) -> None:
        """After a rebalance, before the consumer reads committed offsets: a new producer for every input
        partition now ours, initialised (fencing whoever held it, ourselves included after a pause that
        cost us the group), and the old producers closed. Every rebalance re-initialises them all: a
        partition we kept may have been someone else's for a while (a worker paused past its session
        timeout), and a transaction of ours is never open here (Faust waited for every event's ack)."""
        await self.close()
        wanted = sorted(set(partitions))
        fresh: dict[int, Producer] = {p: self._make(p) for p in wanted}
        try:
            await asyncio.gather(*(self._initialise(p, producer) for p, producer in fresh.items()))
        except BaseException:
            await asyncio.gather(*(producer.stop() for producer in fresh.values()), return_exceptions=True)
            raise
        self._producers = fresh
        if wanted:
            logger.info("exactly-once: transactional producers ready for %s partitions %s",
                        self.settings.input_topic, ",".join(map(str, wanted)))

    async def _initialise(self, partition: int, producer: Producer) -> None:
        # aiokafka's start asks for the producer id (InitProducerId: the fencing); the empty
        # transaction makes sure of it whatever the version does (begin waits for the id, commit
        # ends it without a request).
        try:
            await self._start(producer)
            await producer.begin_transaction()
            await producer.commit_transaction()
        except TransactionalIdAuthorizationFailed as exc:
            raise KafkaAuthError(
                f"exactly-once: the broker refuses the transactional id "
                f"{transactional_id(self.settings, partition)!r}: the worker's principal needs Write and Describe on "
                f"the transactional ids '{self.settings.app_id}-' (kafka-acls.sh --add --allow-principal <principal> "
                f"--operation Write --operation Describe --transactional-id {self.settings.app_id}- "
                f"--resource-pattern-type prefixed), or run with TEXTSTREAM_PROCESSING_GUARANTEE=at_least_once"
            ) from exc

    async def commit(self, records: Sequence[RawRecord], outgoing: Sequence[Outgoing]) -> None:
        """Each input partition's share of the batch in its own transaction: its outputs, then the
        offset after its last input, committed together. Raises (with that partition's transaction
        aborted, or fenced) when Kafka refuses: the caller stops the worker, and what was not
        committed is read again by whoever owns the partition next."""
        offsets: dict[int, int] = {}
        for rec in records:
            offsets[rec.source.partition] = max(offsets.get(rec.source.partition, 0), rec.source.offset + 1)
        outputs: dict[int, list[Outgoing]] = {p: [] for p in offsets}
        for out in outgoing:
            if out.source is None:
                raise ValueError(f"an output for {out.topic} names no input: it cannot join a transaction")
            outputs[out.source.partition].append(out)
        await asyncio.gather(*(self._commit_partition(p, outputs[p], offsets[p]) for p in sorted(offsets)))

    async def _commit_partition(self, partition: int, outgoing: list[Outgoing], offset: int) -> None:
        producer = self._producers.get(partition)
        if producer is None:
            # Not ours (any more): the partition's owner reads these inputs again from its committed offset.
            raise NotOwned(f"{self.settings.input_topic}/{partition} is not assigned to this worker; its "
                           f"{len(outgoing)} outputs are not published")
        await producer.begin_transaction()
        try:
            acks = [await producer.send(o.topic, o.value, key=o.key, headers=o.headers) for o in outgoing]
            # The offsets travel while the outputs are produced (one round trip less per batch); the
            # commit waits for every output (aiokafka flushes first) and fails if one failed.
            await producer.send_offsets_to_transaction(
                {TopicPartition(self.settings.input_topic, partition): offset}, self.settings.app_id)
            await asyncio.gather(*acks)
            await producer.commit_transaction()
        except ProducerFenced as exc:
            raise Fenced(f"{self.settings.input_topic}/{partition} belongs to another worker now (this one was "
                         f"paused or cut off past its session timeout): its batch is left to that worker, "
                         f"nothing of it committed here") from exc
        except BaseException:
            await self._abort(partition, producer)
            raise

    async def _abort(self, partition: int, producer: Producer) -> None:
        try:
            await producer.abort_transaction()
        except Exception as exc:  # fenced, or the broker gone: the transaction times out or its successor aborts it
            logger.warning("exactly-once: could not abort the transaction of %s/%d: %s",
                           self.settings.input_topic, partition, exc)

    async def close(self) -> None:
        producers, self._producers = list(self._producers.values()), {}
        results = await asyncio.gather(*(p.stop() for p in producers), return_exceptions=True)
        for exc in results:
            if isinstance(exc, Exception):
                logger.warning("exactly-once: a producer did not stop cleanly: %s", exc)


class NotOwned(TextstreamError):
    """A batch holds inputs of a partition this worker no longer owns."""


class Fenced(TextstreamError):
    """Another worker initialised this partition's transactional producer: this one must stop."""

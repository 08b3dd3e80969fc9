"""Topic names and creation. The worker creates the topics it reads and writes, so a fresh broker
(or one with auto-creation disabled) works, with the partition count the operator chose."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError, for_code

from worker.errors import TextstreamError
from worker.limits import ClusterLimits
from worker.security import PLAINTEXT, BrokerUnavailable, ClientSecurity, unreachable

__all__ = ["BrokerUnavailable", "describe_limits", "ensure_topics", "label_topic"]

logger = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def label_topic(prefix: str, label: str) -> str:
    """The routing topic of a label. Kafka names allow [A-Za-z0-9._-]: other ASCII becomes '_',
    other characters their code point ('体育' → 'u4f53u80b2'), so every label gets a stable name."""

    def safe(match: re.Match[str]) -> str:
        char = match.group(0)
        return "_" if char.isascii() else f"u{ord(char):04x}"

    return prefix + _UNSAFE.sub(safe, label)


async def ensure_topics(bootstrap: str, names: Iterable[str], partitions: int, timeout_s: float = 30, *,
                        security: ClientSecurity = PLAINTEXT) -> list[str]:
    """Create the topics that do not exist yet; return the ones created. Wrong credentials or a
    failed TLS handshake raise KafkaAuthError, an unreachable broker BrokerUnavailable."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000),
                                **security.kwargs())
    try:
        await admin.start()
    except KafkaConnectionError as exc:
        await admin.close()
        raise await unreachable(bootstrap, security, exc) from None
    try:
        existing = set(await admin.list_topics())
        wanted = sorted(set(names) - existing)
        if not wanted:
            return []
        try:
            await admin.create_topics([NewTopic(n, partitions, 1) for n in wanted])
        except TopicAlreadyExistsError:
            pass  # another worker created it in between
        except KafkaError as exc:
            raise TextstreamError(f"cannot create topics {wanted} on {bootstrap}: {exc}") from exc
        logger.info("created topics %s with %d partitions", ",".join(wanted), partitions)
        return wanted
    finally:
        await admin.close()


async def describe_limits(bootstrap: str, *, dead_letter_topic: str, output_topics: Iterable[str], label_prefix: str,
                          timeout_s: float = 30, security: ClientSecurity = PLAINTEXT) -> ClusterLimits:
    """max.message.bytes of the topics the worker writes (the DLQ topic; the output topic and every
    existing label topic) and the brokers' message.max.bytes (what label topics created later get).
    A value the principal may not read (no DescribeConfigs right) is None, and `unreadable` says so."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000),
                                **security.kwargs())
    try:
        await admin.start()
    except KafkaConnectionError as exc:
        await admin.close()
        raise await unreachable(bootstrap, security, exc) from None
    try:
        existing = set(await admin.list_topics())
        outputs = sorted({*output_topics, *(t for t in existing if label_prefix and t.startswith(label_prefix))}
                         & existing)
        wanted = sorted({dead_letter_topic, *outputs} & existing)
        brokers = sorted(b.nodeId for b in admin._client.cluster.brokers())  # aiokafka has no public list
        resources = [ConfigResource(ConfigResourceType.TOPIC, t, {"max.message.bytes": None}) for t in wanted]
        resources += [ConfigResource(ConfigResourceType.BROKER, str(b), {"message.max.bytes": None}) for b in brokers]
        found: dict[tuple[int, str], int] = {}
        unreadable: list[str] = []
        for response in await admin.describe_configs(resources):
            for error_code, error_message, kind, name, entries in (r[:5] for r in response.resources):
                if error_code:
                    unreadable.append(f"{'topic' if kind == ConfigResourceType.TOPIC else 'broker'} {name}: "
                                      f"{for_code(error_code).__name__} {error_message or ''}".strip())
                    continue
                for entry in entries:
                    if entry[0] in ("max.message.bytes", "message.max.bytes") and entry[1] is not None:
                        found[(int(kind), str(name))] = int(entry[1])
    finally:
        await admin.close()
    topic, broker = int(ConfigResourceType.TOPIC), int(ConfigResourceType.BROKER)
    output_limits = [found[(topic, t)] for t in outputs if (topic, t) in found]
    broker_limits = [found[(broker, str(b))] for b in brokers if (broker, str(b)) in found]
    return ClusterLimits(dead_letter_topic=found.get((topic, dead_letter_topic)),
                         output_topics=min(output_limits) if output_limits else None,
                         broker_default=min(broker_limits) if broker_limits else None,
                         unreadable=tuple(unreadable))

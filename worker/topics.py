"""Topic names and creation. The worker creates the topics it reads and writes, so a fresh broker
(or one with auto-creation disabled) works, with the partition count the operator chose."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError

from worker.errors import TextstreamError

logger = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class BrokerUnavailable(TextstreamError):
    """Kafka did not answer at the configured bootstrap servers."""


def label_topic(prefix: str, label: str) -> str:
    """The routing topic of a label. Kafka names allow [A-Za-z0-9._-]: other ASCII becomes '_',
    other characters their code point ('体育' → 'u4f53u80b2'), so every label gets a stable name."""

    def safe(match: re.Match[str]) -> str:
        char = match.group(0)
        return "_" if char.isascii() else f"u{ord(char):04x}"

    return prefix + _UNSAFE.sub(safe, label)


async def ensure_topics(bootstrap: str, names: Iterable[str], partitions: int, timeout_s: float = 30) -> list[str]:
    """Create the topics that do not exist yet; return the ones created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000))
    try:
        await admin.start()
    except KafkaConnectionError as exc:
        raise BrokerUnavailable(f"cannot reach Kafka at {bootstrap}: {exc} (is the broker running? `textstream kafka start`)") from None
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

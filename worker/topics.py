"""Topic names and creation. The worker creates the topics it reads and writes, so a fresh broker
(or one with auto-creation disabled) works, with the partition count the operator chose."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError

from worker.errors import TextstreamError
from worker.security import PLAINTEXT, BrokerUnavailable, ClientSecurity, unreachable

__all__ = ["BrokerUnavailable", "ensure_topics", "label_topic"]

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

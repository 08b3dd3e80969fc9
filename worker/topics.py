"""Topic names and creation. The worker creates the topics it reads and writes, so a fresh broker
(or one with auto-creation disabled) works, with the partition count, replication factor and topic
configs the operator chose (TopicSpec); or, with TEXTSTREAM_CREATE_TOPICS=false, creates nothing and
checks that they exist (clusters where the worker's principal may not create topics)."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError, for_code

from worker.config import ENV_PREFIX, Settings
from worker.errors import TextstreamError
from worker.limits import ClusterLimits
from worker.security import PLAINTEXT, BrokerUnavailable, ClientSecurity, unreachable

__all__ = ["BrokerUnavailable", "LabelTopicError", "MissingTopicsError", "TopicCreationError", "TopicSpec",
           "check_label_topics", "describe_limits", "ensure_topics", "faust_internal_topics", "label_topic",
           "label_topic_problems", "prepare_worker_topics", "require_topics", "worker_topics"]

logger = logging.getLogger(__name__)

MAX_TOPIC_LENGTH = 249  # Kafka's limit on a topic name
BROKER_DEFAULT = -1  # replication factor: the broker's default.replication.factor (KIP-464)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")

# What an operator can do about a refused creation, by Kafka's error name.
_HINTS = {
    "TOPIC_AUTHORIZATION_FAILED": f"the principal may not create topics: create them beforehand and set "
                                  f"{ENV_PREFIX}CREATE_TOPICS=false",
    "CLUSTER_AUTHORIZATION_FAILED": f"the principal may not create topics: create them beforehand and set "
                                    f"{ENV_PREFIX}CREATE_TOPICS=false",
    "INVALID_REPLICATION_FACTOR": f"check {ENV_PREFIX}REPLICATION_FACTOR against the number of brokers",
    "INVALID_CONFIG": f"check {ENV_PREFIX}TOPIC_CONFIGS",
    "POLICY_VIOLATION": f"the cluster's topic policy refused it: check {ENV_PREFIX}REPLICATION_FACTOR, "
                        f"{ENV_PREFIX}TOPIC_PARTITIONS and {ENV_PREFIX}TOPIC_CONFIGS",
}


class TopicCreationError(TextstreamError):
    """The broker refused to create one or more topics; the message names each with Kafka's error."""


class MissingTopicsError(TextstreamError):
    """Topics the worker needs do not exist and it may not create them; the message names them."""


@dataclass(frozen=True)
class TopicSpec:
    """How the project creates topics: replication factor (-1: the broker's default), topic configs,
    and whether it creates them at all."""

    replication_factor: int = BROKER_DEFAULT
    configs: Mapping[str, str] = field(default_factory=dict)
    create: bool = True

    @classmethod
    def from_settings(cls, settings: Settings) -> TopicSpec:
        return cls(settings.replication_factor, settings.topic_config_map, settings.create_topics)

    def new_topic(self, name: str, partitions: int) -> NewTopic:
        # aiokafka 0.14's NewTopic wants replica_assignments given exactly when the replication factor
        # is -1: an empty one is what Kafka's own admin client sends (the broker places the replicas).
        default = self.replication_factor == BROKER_DEFAULT
        return NewTopic(name, partitions, self.replication_factor, replica_assignments={} if default else None,
                        topic_configs=dict(self.configs))

    def describe(self) -> str:
        rf = "broker default" if self.replication_factor == BROKER_DEFAULT else str(self.replication_factor)
        configs = ",".join(f"{k}={v}" for k, v in self.configs.items()) or "none"
        return f"replication_factor={rf} configs={configs}"


DEFAULT_SPEC = TopicSpec()


def label_topic(prefix: str, label: str) -> str:
    """The routing topic of a label. Kafka names allow [A-Za-z0-9._-]: other ASCII becomes '_',
    other characters their code point ('体育' → 'u4f53u80b2'), so every label gets a stable name.
    Distinct labels can still meet ('a b', 'a_b', 'a/b'): label_topic_problems finds them."""

    def safe(match: re.Match[str]) -> str:
        char = match.group(0)
        return "_" if char.isascii() else f"u{ord(char):04x}"

    return prefix + _UNSAFE.sub(safe, label)


def _collision_key(topic: str) -> str:
    """Kafka refuses a topic whose name equals an existing one once '.' and '_' are made the same
    (their metric names would collide): 'texts.label.a.b' and 'texts.label.a_b' cannot both exist."""
    return topic.replace(".", "_")


def label_topic_problems(prefix: str, labels: Sequence[str], reserved: Mapping[str, str] | None = None) -> list[str]:
    """Why these labels cannot each have their own valid topic under `prefix` (empty: they can).
    `reserved` maps other topics of the worker to what they are ({'texts.raw': 'the input topic'})."""
    problems: list[str] = []
    groups: dict[str, list[str]] = {}
    for label in labels:
        topic = label_topic(prefix, label)
        if len(topic) > MAX_TOPIC_LENGTH:
            problems.append(f"label {label[:60]!r}{'…' if len(label) > 60 else ''} gives a topic name of "
                            f"{len(topic)} characters; Kafka allows {MAX_TOPIC_LENGTH}")
        elif topic in (".", ".."):
            problems.append(f"label {label!r} gives the topic name {topic!r}, which Kafka does not allow")
        groups.setdefault(_collision_key(topic), []).append(label)
    reserved_keys = {_collision_key(t): (t, what) for t, what in (reserved or {}).items()}
    for key, group in groups.items():
        names = sorted({label_topic(prefix, x) for x in group})
        if len(group) > 1:
            alike = " (Kafka treats '.' and '_' in topic names alike)" if len(names) > 1 else ""
            problems.append(f"labels {', '.join(repr(x) for x in group)} all map to topic {' / '.join(names)}{alike}")
        if key in reserved_keys:
            topic, what = reserved_keys[key]
            problems.append(f"label {group[0]!r} maps to topic {names[0]}, which collides with {what} {topic}")
    return problems


def reserved_topics(settings: Settings) -> dict[str, str]:
    """The worker's topics other than label topics, which no label topic may collide with."""
    return {settings.input_topic: f"the input topic ({ENV_PREFIX}INPUT_TOPIC)",
            settings.output_topic: f"the output topic ({ENV_PREFIX}OUTPUT_TOPIC)",
            settings.dlq_topic: f"the dead-letter topic ({ENV_PREFIX}DLQ_TOPIC)",
            settings.models_topic: f"the models topic ({ENV_PREFIX}MODELS_TOPIC)",
            **({settings.review_topic: f"the review topic ({ENV_PREFIX}REVIEW_TOPIC)"} if settings.review_on else {})}


class LabelTopicError(TextstreamError):
    """A model's labels do not each get their own valid topic under the label topic prefix."""


def check_label_topics(settings: Settings, labels: Sequence[str], what: str = "the model version") -> None:
    """LabelTopicError naming the labels unless each gets its own valid topic under this worker's
    TEXTSTREAM_LABEL_TOPIC_PREFIX (training checks the same with the trainer's setting)."""
    problems = label_topic_problems(settings.label_topic_prefix, labels, reserved_topics(settings))
    if problems:
        raise LabelTopicError(f"{what} cannot be served with {ENV_PREFIX}LABEL_TOPIC_PREFIX="
                              f"{settings.label_topic_prefix!r}:\n  " + "\n  ".join(problems))


def faust_internal_topics(app_id: str) -> list[str]:
    """The topics Faust (faust-streaming 0.15.3) itself uses for an app with agents on given topics,
    no tables and no agent RPC: only the leader-election topic of faust.assignor.LeaderAssignor (one
    partition). The worker creates it like its own topics (Faust's own creation is off: app.py)."""
    return [f"{app_id}-__assignor-__leader"]


async def _admin(bootstrap: str, timeout_s: float, security: ClientSecurity) -> AIOKafkaAdminClient:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000),
                                **security.kwargs())
    try:
        await admin.start()
    except KafkaConnectionError as exc:
        await admin.close()
        raise await unreachable(bootstrap, security, exc) from None
    return admin


def _missing_message(missing: Sequence[str], bootstrap: str) -> str:
    return (f"{len(missing)} topic(s) the worker needs do not exist on {bootstrap} (or this principal may not "
            f"describe them), and {ENV_PREFIX}CREATE_TOPICS=false: {', '.join(missing)}. Create them (see "
            "docs/operations.md, Topics on a managed cluster) or let the worker create them.")


async def require_topics(bootstrap: str, names: Iterable[str], timeout_s: float = 30, *,
                         security: ClientSecurity = PLAINTEXT) -> None:
    """Check that every topic exists; MissingTopicsError names all that do not."""
    admin = await _admin(bootstrap, timeout_s, security)
    try:
        missing = sorted(set(names) - set(await admin.list_topics()))
    finally:
        await admin.close()
    if missing:
        raise MissingTopicsError(_missing_message(missing, bootstrap))


def creation_results(response: Any, wanted: Sequence[str]) -> tuple[list[str], list[str]]:
    """(created, refusals) from a CreateTopics response, which carries an error code (and, from
    version 1, a message) per topic instead of raising. TOPIC_ALREADY_EXISTS counts as neither: another
    worker created it in between. A refusal reads 'topic: KAFKA_ERROR_NAME: the broker's message'."""
    created: list[str] = []
    refusals: list[str] = []
    answered = set()
    for entry in response.topic_errors:
        topic, code = entry[0], entry[1]
        message = entry[2] if len(entry) > 2 else None
        answered.add(topic)
        if code == 0:
            created.append(topic)
        elif code != TopicAlreadyExistsError.errno:
            error = for_code(code)
            name = error.message if error.errno == code else f"error code {code}"
            hint = _HINTS.get(name)
            refusals.append(f"{topic}: {name}: {message or error.description}" + (f" ({hint})" if hint else ""))
    refusals += [f"{t}: no answer from the broker about this topic" for t in wanted if t not in answered]
    return created, refusals


async def ensure_topics(bootstrap: str, names: Iterable[str], partitions: int, timeout_s: float = 30, *,
                        security: ClientSecurity = PLAINTEXT, spec: TopicSpec = DEFAULT_SPEC) -> list[str]:
    """Create the topics that do not exist yet with `spec`; return the ones created. A topic the
    broker refuses raises TopicCreationError naming it and Kafka's error; with spec.create False a
    missing topic raises MissingTopicsError instead. Wrong credentials or a failed TLS handshake
    raise KafkaAuthError, an unreachable broker BrokerUnavailable."""
    admin = await _admin(bootstrap, timeout_s, security)
    try:
        wanted = sorted(set(names) - set(await admin.list_topics()))
        if not wanted:
            return []
        if not spec.create:
            raise MissingTopicsError(_missing_message(wanted, bootstrap))
        try:
            response = await admin.create_topics([spec.new_topic(n, partitions) for n in wanted])
        except KafkaError as exc:
            raise TopicCreationError(f"cannot create topics {wanted} on {bootstrap}: {exc}") from exc
        created, refusals = creation_results(response, wanted)
        if created:
            logger.info("created topics %s with %d partitions, %s", ",".join(created), partitions, spec.describe())
        if refusals:
            raise TopicCreationError(f"the broker {bootstrap} refused to create {len(refusals)} topic(s) "
                                     f"({partitions} partitions, {spec.describe()}):\n  " + "\n  ".join(refusals))
        return created
    finally:
        await admin.close()


def worker_topics(settings: Settings, labels: Sequence[str]) -> tuple[list[str], list[str]]:
    """Every topic a worker serving these labels uses: (those with TEXTSTREAM_TOPIC_PARTITIONS
    partitions, those with one: the models topic and Faust's own)."""
    return ([settings.input_topic, settings.output_topic, settings.dlq_topic,
             *([settings.review_topic] if settings.review_on else []),
             *(label_topic(settings.label_topic_prefix, x) for x in labels)],
            [settings.models_topic, *faust_internal_topics(settings.app_id)])


async def prepare_worker_topics(settings: Settings, security: ClientSecurity, labels: Sequence[str]) -> list[str]:
    """At start, before Faust: create every topic the worker will use (or, with
    TEXTSTREAM_CREATE_TOPICS=false, check that all exist, naming every missing one); return the created."""
    spec = TopicSpec.from_settings(settings)
    partitioned, single = worker_topics(settings, labels)
    if not spec.create:
        await require_topics(settings.bootstrap_servers, [*partitioned, *single], security=security)
        return []
    created = await ensure_topics(settings.bootstrap_servers, partitioned, settings.topic_partitions,
                                  security=security, spec=spec)
    return created + await ensure_topics(settings.bootstrap_servers, single, 1, security=security, spec=spec)


async def describe_limits(bootstrap: str, *, dead_letter_topic: str, output_topics: Iterable[str], label_prefix: str,
                          timeout_s: float = 30, security: ClientSecurity = PLAINTEXT) -> ClusterLimits:
    """max.message.bytes of the topics the worker writes (the DLQ topic; the output topic and every
    existing label topic) and the brokers' message.max.bytes (what label topics created later get).
    A value the principal may not read (no DescribeConfigs right) is None, and `unreadable` says so."""
    admin = await _admin(bootstrap, timeout_s, security)
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

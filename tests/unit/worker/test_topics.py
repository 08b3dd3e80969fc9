"""Topic names (one-to-one, valid) and creation against a fake admin client: the replication factor
and configs sent, per-topic errors in the CreateTopics response, and the no-create mode."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.protocol.admin import (
    CreateTopicsRequest,
    CreateTopicsRequest_v3,
    CreateTopicsResponse_v0,
    CreateTopicsResponse_v3,
)

from worker import topics
from worker.config import load_settings
from worker.errors import TextstreamError
from worker.security import PLAINTEXT
from worker.topics import (
    LabelTopicError,
    MissingTopicsError,
    TopicCreationError,
    TopicSpec,
    creation_results,
    label_topic,
    label_topic_problems,
)


def test_label_topics_are_valid_kafka_names() -> None:
    assert label_topic("texts.label.", "sport") == "texts.label.sport"
    assert label_topic("texts.label.", "Sci/Tech") == "texts.label.Sci_Tech"
    assert label_topic("texts.label.", "体育") == "texts.label.u4f53u80b2"
    for label in ["a b", "体育", "x/y", "ok-1.2_3", "é"]:
        assert re.fullmatch(r"[A-Za-z0-9._-]+", label_topic("p.", label))


def test_distinct_non_ascii_labels_get_distinct_topics() -> None:
    labels = ["体育", "教育", "财经", "股票"]
    assert len({label_topic("p.", x) for x in labels}) == len(labels)
    assert label_topic_problems("p.", labels) == []


def test_labels_that_map_to_one_topic_are_named_together() -> None:
    (problem,) = label_topic_problems("texts.label.", ["a b", "a_b", "a/b", "c"])
    assert "'a b', 'a_b', 'a/b'" in problem and "texts.label.a_b" in problem


def test_dot_and_underscore_collide_as_kafka_says() -> None:
    """Kafka refuses 'x.a_b' once 'x.a.b' exists (their metric names would be the same)."""
    (problem,) = label_topic_problems("x.", ["a.b", "a_b"])
    assert "'a.b', 'a_b'" in problem and "x.a.b / x.a_b" in problem and "'.' and '_'" in problem


def test_a_topic_name_over_249_characters_is_refused_and_249_is_not() -> None:
    prefix = "texts.label."
    fits = "x" * (249 - len(prefix))
    assert label_topic_problems(prefix, [fits, "y"]) == []
    (problem,) = label_topic_problems(prefix, [fits + "x", "y"])
    assert "250 characters" in problem and "249" in problem and repr("x" * 60) in problem
    # Non-ASCII grows five-fold ('u' + four hex digits): 48 CJK characters are 240 characters of name.
    (problem,) = label_topic_problems(prefix, ["体" * 48])
    assert f"{len(prefix) + 240} characters" in problem


def test_dot_names_are_refused_with_an_empty_prefix() -> None:
    problems = label_topic_problems("", [".", "..", "ok"])
    assert len(problems) == 2 and all("does not allow" in p for p in problems)


def test_a_label_topic_may_not_be_one_of_the_workers_other_topics() -> None:
    settings = load_settings(label_topic_prefix="texts.")
    (problem,) = label_topic_problems("texts.", ["labeled", "sport"], topics.reserved_topics(settings))
    assert "'labeled'" in problem and "the output topic (TEXTSTREAM_OUTPUT_TOPIC) texts.labeled" in problem


def test_a_label_topic_may_not_be_the_review_topic_once_the_route_is_on() -> None:
    off = load_settings(label_topic_prefix="texts.")
    assert label_topic_problems("texts.", ["review"], topics.reserved_topics(off)) == []
    on = load_settings(label_topic_prefix="texts.", min_confidence=0.5)
    (problem,) = label_topic_problems("texts.", ["review"], topics.reserved_topics(on))
    assert "the review topic (TEXTSTREAM_REVIEW_TOPIC) texts.review" in problem


def test_check_label_topics_names_the_prefix_variable_and_the_labels() -> None:
    settings = load_settings(label_topic_prefix="t.")
    topics.check_label_topics(settings, ["sport", "tech"])
    with pytest.raises(LabelTopicError) as err:
        topics.check_label_topics(settings, ["a b", "a_b"], "version 7")
    assert isinstance(err.value, TextstreamError)
    assert "version 7" in str(err.value) and "TEXTSTREAM_LABEL_TOPIC_PREFIX='t.'" in str(err.value)
    assert "'a b', 'a_b'" in str(err.value)


def test_the_broker_default_replication_factor_is_encoded_as_minus_one() -> None:
    """aiokafka 0.14's NewTopic refuses -1 without an assignment; with an empty one the request
    carries replication_factor -1 (KIP-464's 'broker default'), an empty assignment and the configs."""
    with pytest.raises(Exception, match="must be specified"):
        NewTopic("t", 4, -1)
    spec = TopicSpec(configs={"min.insync.replicas": "2"})
    request = CreateTopicsRequest([AIOKafkaAdminClient._convert_new_topic_request(spec.new_topic("t", 4))],
                                  30000, False).build(CreateTopicsRequest_v3)
    ((name, partitions, replication, assignment, configs),) = request.create_topic_requests
    assert (name, partitions, replication, assignment, configs) == ("t", 4, -1, [], [("min.insync.replicas", "2")])
    decoded = CreateTopicsRequest_v3.decode(request.encode())
    assert decoded.create_topic_requests[0][2] == -1


def test_the_spec_comes_from_the_settings() -> None:
    spec = TopicSpec.from_settings(load_settings(replication_factor=3, create_topics=False,
                                                 topic_configs="min.insync.replicas=2,retention.ms=604800000"))
    assert spec == TopicSpec(3, {"min.insync.replicas": "2", "retention.ms": "604800000"}, False)
    assert spec.describe() == "replication_factor=3 configs=min.insync.replicas=2,retention.ms=604800000"
    assert TopicSpec.from_settings(load_settings()).describe() == "replication_factor=broker default configs=none"


def v3(*entries: tuple[str, int, str | None]) -> Any:
    return CreateTopicsResponse_v3(throttle_time_ms=0, topic_errors=list(entries))


def test_creation_results_read_each_topics_error_code() -> None:
    response = v3(("ok", 0, None), ("raced", 36, "Topic 'raced' already exists."),
                  ("rf", 38, "Unable to replicate the partition 3 time(s)"),
                  ("policy", 44, "min.insync.replicas must be 2"), ("denied", 29, "Authorization failed."))
    created, refusals = creation_results(response, ["ok", "raced", "rf", "policy", "denied", "lost"])
    assert created == ["ok"]
    assert refusals[0] == ("rf: INVALID_REPLICATION_FACTOR: Unable to replicate the partition 3 time(s) "
                           "(check TEXTSTREAM_REPLICATION_FACTOR against the number of brokers)")
    assert refusals[1].startswith("policy: POLICY_VIOLATION: min.insync.replicas must be 2 (the cluster's topic policy")
    assert refusals[2].startswith("denied: TOPIC_AUTHORIZATION_FAILED: Authorization failed. (")
    assert "TEXTSTREAM_CREATE_TOPICS=false" in refusals[2]
    assert refusals[3] == "lost: no answer from the broker about this topic"


def test_creation_results_without_messages_use_kafkas_description() -> None:
    response = CreateTopicsResponse_v0(topic_errors=[("t", 40), ("u", 9999)])
    _, refusals = creation_results(response, ["t", "u"])
    assert refusals == ["t: INVALID_CONFIG: Configuration is invalid. (check TEXTSTREAM_TOPIC_CONFIGS)",
                        "u: error code 9999: An unexpected server error."]


class FakeAdmin:
    """Stands in for AIOKafkaAdminClient: `existing` topics, and a CreateTopics answer per topic
    (an error code and message; 0 by default, which also adds the topic)."""

    existing: set[str] = set()
    answers: dict[str, tuple[int, str]] = {}
    requests: list[list[NewTopic]] = []

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def list_topics(self) -> list[str]:
        return sorted(FakeAdmin.existing)

    async def create_topics(self, new_topics: Sequence[NewTopic]) -> Any:
        FakeAdmin.requests.append(list(new_topics))
        entries = []
        for t in new_topics:
            code, message = FakeAdmin.answers.get(t.name, (0, ""))
            if code == 0:
                FakeAdmin.existing.add(t.name)
            entries.append((t.name, code, message or None))
        return v3(*entries)


@pytest.fixture(autouse=True)
def _fake_admin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(FakeAdmin, "existing", set())
    monkeypatch.setattr(FakeAdmin, "answers", {})
    monkeypatch.setattr(FakeAdmin, "requests", [])
    monkeypatch.setattr(topics, "AIOKafkaAdminClient", FakeAdmin)


async def test_ensure_creates_only_the_missing_topics_with_the_spec() -> None:
    FakeAdmin.existing = {"a"}
    spec = TopicSpec(3, {"retention.ms": "1000"})
    assert await topics.ensure_topics("b:9092", ["a", "c", "b"], 6, spec=spec) == ["b", "c"]
    (request,) = FakeAdmin.requests
    assert [(t.name, t.num_partitions, t.replication_factor, t.topic_configs) for t in request] == [
        ("b", 6, 3, {"retention.ms": "1000"}), ("c", 6, 3, {"retention.ms": "1000"})]
    assert await topics.ensure_topics("b:9092", ["a", "b"], 6, spec=spec) == []  # nothing asked the second time
    assert len(FakeAdmin.requests) == 1


async def test_a_refused_creation_raises_naming_each_topic_and_kafkas_error() -> None:
    """Before: the response's error codes were not read, the topics were logged as created."""
    FakeAdmin.answers = {"t.rf": (38, "Unable to replicate the partition 3 time(s): only 1 broker(s) are registered."),
                         "t.raced": (36, "Topic 't.raced' already exists.")}
    with pytest.raises(TopicCreationError) as err:
        await topics.ensure_topics("b:9092", ["t.ok", "t.rf", "t.raced"], 4, spec=TopicSpec(3))
    text = str(err.value)
    assert "refused to create 1 topic(s)" in text and "replication_factor=3" in text
    assert "t.rf: INVALID_REPLICATION_FACTOR: Unable to replicate the partition 3 time(s)" in text
    assert "t.ok" not in text and "t.raced" not in text  # created, and created by someone else: both fine


async def test_a_topic_another_worker_created_meanwhile_is_fine() -> None:
    FakeAdmin.answers = {"t": (36, "Topic 't' already exists.")}
    assert await topics.ensure_topics("b:9092", ["t"], 4) == []


async def test_no_create_mode_names_every_missing_topic_and_creates_nothing() -> None:
    FakeAdmin.existing = {"in"}
    with pytest.raises(MissingTopicsError) as err:
        await topics.ensure_topics("b:9092", ["in", "out", "dlq"], 4, spec=TopicSpec(create=False))
    assert "2 topic(s)" in str(err.value) and "dlq, out" in str(err.value)
    assert "TEXTSTREAM_CREATE_TOPICS=false" in str(err.value) and FakeAdmin.requests == []
    assert await topics.ensure_topics("b:9092", ["in"], 4, spec=TopicSpec(create=False)) == []


async def test_the_worker_needs_its_topics_faust_s_and_its_label_topics() -> None:
    settings = load_settings(app_id="grp", input_topic="i", output_topic="o", dlq_topic="d", models_topic="m",
                             label_topic_prefix="l.", create_topics=False)
    partitioned, single = topics.worker_topics(settings, ["a b", "c"])
    assert partitioned == ["i", "o", "d", "l.a_b", "l.c"] and single == ["m", "grp-__assignor-__leader"]
    FakeAdmin.existing = {"i", "o", "l.c"}
    with pytest.raises(MissingTopicsError) as err:
        await topics.prepare_worker_topics(settings, PLAINTEXT, ["a b", "c"])
    assert "d, grp-__assignor-__leader, l.a_b, m" in str(err.value) and FakeAdmin.requests == []


async def test_with_a_threshold_the_worker_also_needs_the_review_topic() -> None:
    settings = load_settings(app_id="grp", input_topic="i", output_topic="o", dlq_topic="d", models_topic="m",
                             label_topic_prefix="l.", create_topics=False, min_confidence=0.8, review_topic="r")
    partitioned, _ = topics.worker_topics(settings, ["c"])
    assert partitioned == ["i", "o", "d", "r", "l.c"]
    FakeAdmin.existing = {"i", "o", "d", "l.c", "m", "grp-__assignor-__leader"}
    with pytest.raises(MissingTopicsError) as err:
        await topics.prepare_worker_topics(settings, PLAINTEXT, ["c"])
    assert "1 topic(s)" in str(err.value) and ": r." in str(err.value) and FakeAdmin.requests == []


async def test_at_start_the_worker_creates_its_topics_with_their_partitions() -> None:
    settings = load_settings(app_id="grp", input_topic="i", output_topic="o", dlq_topic="d", models_topic="m",
                             label_topic_prefix="l.", topic_partitions=3, replication_factor=2)
    created = await topics.prepare_worker_topics(settings, PLAINTEXT, ["x"])
    assert created == ["d", "i", "l.x", "o", "grp-__assignor-__leader", "m"]
    assert {t.name: (t.num_partitions, t.replication_factor) for r in FakeAdmin.requests for t in r} == {
        "d": (3, 2), "i": (3, 2), "l.x": (3, 2), "o": (3, 2), "grp-__assignor-__leader": (1, 2), "m": (1, 2)}


def test_faust_s_internal_topic_is_the_leader_assignor_s() -> None:
    """The name worker.topics pre-creates is the one faust-streaming's LeaderAssignor would declare."""
    from faust.assignor.leader_assignor import LeaderAssignor

    from worker.app import faust_app
    from worker.security import PLAINTEXT

    app = faust_app(load_settings(app_id="probe-app"), PLAINTEXT)
    assert app.conf.topic_allow_declare is False  # Faust creates nothing itself
    assert topics.faust_internal_topics("probe-app") == [LeaderAssignor(app)._leader_topic_name]


async def test_a_version_whose_labels_collide_under_the_workers_prefix_is_refused_and_the_old_one_kept(
        tmp_path: Path) -> None:
    """Trained with another prefix, a version can collide under this worker's: the reload fails,
    nothing is created, the serving version stays."""
    import dataclasses
    import functools

    from tests.unit.worker.fakes import fake_bundle
    from worker.reload import Reloader, Serving, create_output_topics
    from worker.security import PLAINTEXT

    settings = load_settings(label_topic_prefix="p.")
    serving = Serving(tmp_path, bundle=fake_bundle(version=1))
    serving.poll = lambda: dataclasses.replace(fake_bundle(version=2), labels=("a.b", "a_b"))  # type: ignore[method-assign]
    crashed: list[BaseException] = []

    async def crash(exc: BaseException) -> None:
        crashed.append(exc)
    reloader = Reloader(serving, prepare=lambda: None, crash=crash,
                        create_topics=functools.partial(create_output_topics, settings, PLAINTEXT))
    await reloader.reload("registry poll")
    assert serving.version == 1 and crashed == [] and serving.reloads == {"success": 0, "failure": 1}
    assert serving.last_error is not None and "LabelTopicError" in serving.last_error
    assert "'a.b', 'a_b'" in serving.last_error and "TEXTSTREAM_LABEL_TOPIC_PREFIX='p.'" in serving.last_error
    assert FakeAdmin.requests == []


async def test_a_reload_in_no_create_mode_refuses_a_version_whose_label_topic_is_missing(tmp_path: Path) -> None:
    import dataclasses
    import functools

    from tests.unit.worker.fakes import fake_bundle
    from worker.reload import Reloader, Serving, create_output_topics
    from worker.security import PLAINTEXT

    settings = load_settings(label_topic_prefix="p.", create_topics=False, output_topic="o", dlq_topic="d")
    FakeAdmin.existing = {"o", "d", "p.sport", "p.tech"}
    serving = Serving(tmp_path, bundle=fake_bundle(version=1))
    serving.poll = lambda: dataclasses.replace(fake_bundle(version=2), labels=("sport", "tech", "science"))  # type: ignore[method-assign]

    async def crash(exc: BaseException) -> None:
        raise AssertionError("crashed")
    reloader = Reloader(serving, prepare=lambda: None, crash=crash,
                        create_topics=functools.partial(create_output_topics, settings, PLAINTEXT))
    await reloader.reload("models topic event")
    assert serving.version == 1 and serving.last_error is not None
    assert "MissingTopicsError" in serving.last_error and ": p.science." in serving.last_error
    assert FakeAdmin.requests == []
    FakeAdmin.existing.add("p.science")  # the operator creates it: the next poll brings the version in
    await reloader.reload("registry poll")
    assert serving.version == 2 and serving.reloads == {"success": 1, "failure": 1} and FakeAdmin.requests == []

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from worker.config import describe, load_settings
from worker.errors import ConfigError


def test_defaults_match_the_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, _, _ in describe():
        monkeypatch.delenv(name, raising=False)
    s = load_settings()
    assert s.bootstrap_servers == "127.0.0.1:9092"
    assert (s.input_topic, s.output_topic, s.label_topic_prefix, s.dlq_topic) == (
        "texts.raw", "texts.labeled", "texts.label.", "texts.dlq")
    # Topics are created with the broker's default.replication.factor and no topic configs.
    assert (s.replication_factor, s.topic_config_map, s.create_topics) == (-1, {}, True)


@pytest.mark.parametrize(
    ("value", "configs"),
    [
        ("min.insync.replicas=2,retention.ms=604800000", {"min.insync.replicas": "2", "retention.ms": "604800000"}),
        (" min.insync.replicas = 2 , retention.ms=1 ", {"min.insync.replicas": "2", "retention.ms": "1"}),
        # A comma not followed by key= belongs to the value.
        ("cleanup.policy=compact,delete,retention.ms=1", {"cleanup.policy": "compact,delete", "retention.ms": "1"}),
        ("", {}),
    ],
)
def test_topic_configs_parse_into_kafkas_map(monkeypatch: pytest.MonkeyPatch, value: str,
                                              configs: dict[str, str]) -> None:
    monkeypatch.setenv("TEXTSTREAM_TOPIC_CONFIGS", value)
    assert load_settings().topic_config_map == configs


@pytest.mark.parametrize(("value", "create"), [("false", False), ("0", False), ("no", False), ("true", True)])
def test_create_topics_reads_the_usual_booleans(monkeypatch: pytest.MonkeyPatch, value: str, create: bool) -> None:
    monkeypatch.setenv("TEXTSTREAM_CREATE_TOPICS", value)
    assert load_settings().create_topics is create


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("TEXTSTREAM_BATCH_SIZE", "0"),
        ("TEXTSTREAM_BATCH_SIZE", "many"),
        ("TEXTSTREAM_BATCH_MAX_WAIT", "-1"),
        ("TEXTSTREAM_MAX_TEXT_BYTES", "0"),
        ("TEXTSTREAM_WEB_PORT", "70000"),
        ("TEXTSTREAM_BROKER", "not a broker"),
        ("TEXTSTREAM_BROKER", "kafka://host"),
        ("TEXTSTREAM_INPUT_TOPIC", "bad topic/name"),
        ("TEXTSTREAM_LOG_LEVEL", "chatty"),
        ("TEXTSTREAM_APP_ID", ""),
        ("TEXTSTREAM_REPLICATION_FACTOR", "0"),
        ("TEXTSTREAM_REPLICATION_FACTOR", "-2"),
        ("TEXTSTREAM_REPLICATION_FACTOR", "three"),
        ("TEXTSTREAM_TOPIC_CONFIGS", "retention.ms"),
        ("TEXTSTREAM_TOPIC_CONFIGS", "retention.ms="),
        ("TEXTSTREAM_TOPIC_CONFIGS", "Retention.MS=1"),
        ("TEXTSTREAM_TOPIC_CONFIGS", "retention.ms=1,retention.ms=2"),
        ("TEXTSTREAM_TOPIC_CONFIGS", "retention.ms=1,,min.insync.replicas=2"),
        ("TEXTSTREAM_TOPIC_CONFIGS", "min.insync.replicas 2"),
        ("TEXTSTREAM_CREATE_TOPICS", "maybe"),
        ("TEXTSTREAM_MIN_CONFIDENCE", "1.5"),
        ("TEXTSTREAM_MIN_CONFIDENCE", "-0.1"),
        ("TEXTSTREAM_MIN_CONFIDENCE", "high"),
        ("TEXTSTREAM_MIN_CONFIDENCE_BY_LABEL", "spam"),
        ("TEXTSTREAM_MIN_CONFIDENCE_BY_LABEL", "spam=1.2"),
        ("TEXTSTREAM_MIN_CONFIDENCE_BY_LABEL", "spam=nan"),
        ("TEXTSTREAM_MIN_CONFIDENCE_BY_LABEL", "spam=0.5,spam=0.6"),
        ("TEXTSTREAM_MIN_CONFIDENCE_BY_LABEL", "=0.5"),
        ("TEXTSTREAM_MIN_CONFIDENCE_BY_LABEL", '{"spam": "0.5"}'),
        ("TEXTSTREAM_MIN_CONFIDENCE_BY_LABEL", '{"spam": true}'),
        ("TEXTSTREAM_MIN_CONFIDENCE_BY_LABEL", '{"spam": 0.5'),
        ("TEXTSTREAM_REVIEW_TOPIC", "review me"),
    ],
)
def test_invalid_value_names_the_variable(monkeypatch: pytest.MonkeyPatch, var: str, value: str) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert f"{var}={value!r}".lower() in str(err.value).lower()


def test_broker_lists_are_normalised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEXTSTREAM_BROKER", "kafka://a:9092, b:9093")
    s = load_settings()
    assert s.bootstrap_servers == "a:9092,b:9093"
    assert s.faust_broker == "kafka://a:9092;kafka://b:9093"


def test_settings_are_frozen() -> None:
    s = load_settings()
    with pytest.raises(ValidationError):
        s.batch_size = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("value", "thresholds"),
    [
        ("spam=0.9, ham = 0.5", {"spam": 0.9, "ham": 0.5}),
        ('{"a,b": 1, "c=d": 0}', {"a,b": 1.0, "c=d": 0.0}),  # JSON for labels holding ',' or '='
        ("", {}),
    ],
)
def test_per_label_thresholds_parse(monkeypatch: pytest.MonkeyPatch, value: str, thresholds: dict[str, float]) -> None:
    monkeypatch.setenv("TEXTSTREAM_MIN_CONFIDENCE_BY_LABEL", value)
    assert load_settings().thresholds == thresholds


def test_the_review_route_is_off_by_default_and_on_with_any_threshold_above_0() -> None:
    assert not load_settings().review_on
    assert load_settings().review_topic == "texts.review"
    assert not load_settings(min_confidence_by_label="spam=0").review_on
    assert load_settings(min_confidence_by_label="spam=0.2").review_on
    assert load_settings(min_confidence=0.2).review_on


@pytest.mark.parametrize(("overrides", "named"), [
    ({"output_topic": "texts.raw"}, "TEXTSTREAM_OUTPUT_TOPIC: is 'texts.raw', the topic of TEXTSTREAM_INPUT_TOPIC"),
    ({"dlq_topic": "texts.labeled"}, "TEXTSTREAM_DLQ_TOPIC: is 'texts.labeled', the topic of TEXTSTREAM_OUTPUT_TOPIC"),
    ({"min_confidence": 0.5, "review_topic": "texts.raw"}, "TEXTSTREAM_REVIEW_TOPIC: is 'texts.raw'"),
])
def test_two_roles_on_one_topic_fail_at_start_naming_both(overrides: dict[str, object], named: str) -> None:
    # An unsure record sent back to the input topic would be labelled, unsure, for ever.
    with pytest.raises(ConfigError, match=re.escape(named)):
        load_settings(**overrides)


def test_the_review_topic_only_counts_when_the_review_route_is_on() -> None:
    assert load_settings(review_topic="texts.raw").review_topic == "texts.raw"  # unused while off

from __future__ import annotations

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
    ],
)
def test_invalid_value_names_the_variable(monkeypatch: pytest.MonkeyPatch, var: str, value: str) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert var in str(err.value)
    assert repr(value).lower() in str(err.value).lower()


def test_broker_lists_are_normalised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEXTSTREAM_BROKER", "kafka://a:9092, b:9093")
    s = load_settings()
    assert s.bootstrap_servers == "a:9092,b:9093"
    assert s.faust_broker == "kafka://a:9092;kafka://b:9093"


def test_settings_are_frozen() -> None:
    s = load_settings()
    with pytest.raises(ValidationError):
        s.batch_size = 3  # type: ignore[misc]

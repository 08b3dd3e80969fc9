"""One frozen, validated settings object read from TEXTSTREAM_* environment variables.

Faust reads some unprefixed variables (BROKER_URL, ...) by itself; the prefix keeps ours apart.
Everything is validated at start so a bad value stops the process with a message that names
the variable, instead of failing an hour later inside a batch.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker.errors import ConfigError

ENV_PREFIX = "TEXTSTREAM_"
_TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_BROKER_RE = re.compile(r"^(kafka://)?[^\s:/;]+:\d{1,5}$")

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
LogFormat = Literal["text", "json"]


class Settings(BaseSettings):
    """Worker settings; every field is the variable TEXTSTREAM_<FIELD NAME IN CAPITALS>."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")

    broker: str = Field("kafka://127.0.0.1:9092", description="Kafka bootstrap servers, comma separated")
    model_dir: Path = Field(Path("models"), description="model registry (integer version folders)")
    app_id: str = Field("textstream", min_length=1, description="Faust app id = Kafka consumer group")
    input_topic: str = Field("texts.raw", description="topic of raw texts")
    output_topic: str = Field("texts.labeled", description="topic of every labelled record")
    label_topic_prefix: str = Field("texts.label.", description="per-label routing topics: prefix + label")
    dlq_topic: str = Field("texts.dlq", description="dead-letter topic (original bytes + reason headers)")
    models_topic: str = Field("texts.models", description="model registry events (publish, pin) that trigger a reload")
    topic_partitions: int = Field(4, ge=1, le=1024, description="partitions of topics the worker creates")
    batch_size: int = Field(256, ge=1, le=100_000, description="max records per model batch")
    batch_max_wait: float = Field(0.05, gt=0, le=60, description="seconds to wait for a batch to fill")
    # Inference runs in one thread; TensorFlow then splits each op over `intra` threads and runs
    # `inter` independent ops at once. 0 = TensorFlow's choice (the number of cores for both).
    inter_op_threads: int = Field(0, ge=0, le=256, description="TensorFlow inter-op threads (0 = number of cores)")
    intra_op_threads: int = Field(0, ge=0, le=256, description="TensorFlow intra-op threads (0 = number of cores)")
    max_text_bytes: int = Field(1_048_576, ge=1, description="larger record values are dead-lettered")
    # Kafka's default message.max.bytes is 1,048,588; an output record over this limit would be
    # refused by the broker and crash-loop the worker, so it is dead-lettered instead.
    max_output_bytes: int = Field(1_000_000, ge=1024, description="larger output records are dead-lettered")
    web_port: int = Field(6066, ge=1, le=65535, description="HTTP port of the worker (Faust web)")
    web_host: str = Field("0.0.0.0", description="interface the HTTP port binds to")
    reload_interval: float = Field(10.0, gt=0, le=3600, description="seconds between registry polls for a new version")
    novelty_threshold: float = Field(0.3, ge=-1, le=1, description="cluster similarity below this counts as a novel text")
    log_level: LogLevel = Field("INFO", description="DEBUG, INFO, WARNING or ERROR")
    log_format: LogFormat = Field("text", description="text (readable) or json (one object per line)")

    @field_validator("broker")
    @classmethod
    def _check_broker(cls, value: str) -> str:
        for server in value.split(","):
            if not _BROKER_RE.match(server.strip()):
                raise ValueError(f"expected host:port[,host:port...] optionally prefixed by kafka://, got {server!r}")
        return value

    @field_validator("input_topic", "output_topic", "dlq_topic", "models_topic")
    @classmethod
    def _check_topic(cls, value: str) -> str:
        if not _TOPIC_RE.match(value):
            raise ValueError("a Kafka topic name is 1-249 characters of letters, digits, '.', '_' and '-'")
        return value

    @field_validator("label_topic_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if value and not _TOPIC_RE.match(value):
            raise ValueError("the prefix may only hold letters, digits, '.', '_' and '-'")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @property
    def bootstrap_servers(self) -> str:
        """The broker list without the kafka:// scheme, as aiokafka wants it."""
        return ",".join(s.strip().removeprefix("kafka://") for s in self.broker.split(","))

    @property
    def faust_broker(self) -> str:
        return ";".join("kafka://" + s for s in self.bootstrap_servers.split(","))


def load_settings(**overrides: object) -> Settings:
    """Read and validate the settings; raise ConfigError naming each bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else "?"
            got = err.get("input")
            problems.append(f"{ENV_PREFIX}{field.upper()}={got!r}: {err['msg']}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems)) from None


def describe() -> list[tuple[str, str, str]]:
    """(variable, default, description) for every setting: the README table and `--help` use it."""
    rows = []
    for name, field in Settings.model_fields.items():
        rows.append((f"{ENV_PREFIX}{name.upper()}", str(field.default), field.description or ""))
    return rows

"""One frozen, validated settings object read from TEXTSTREAM_* environment variables.

Faust reads some unprefixed variables (BROKER_URL, ...) by itself; the prefix keeps ours apart.
Everything is validated at start so a bad value stops the process with a message that names
the variable, instead of failing an hour later inside a batch.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from worker import properties
from worker.errors import ConfigError

ENV_PREFIX = "TEXTSTREAM_"
_TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_BROKER_RE = re.compile(r"^(kafka://)?[^\s:/;]+:\d{1,5}$")

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
LogFormat = Literal["text", "json"]
LstmMode = Literal["needed", "always"]
ProcessingGuarantee = Literal["at_least_once", "exactly_once"]
SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN", "OAUTHBEARER"]
SECRET_FIELDS = frozenset({"sasl_password", "ssl_key_password", "kafka_oauth_client_secret"})


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
    # -1 asks the broker for its default.replication.factor (KIP-464, Kafka >= 2.4).
    replication_factor: int = Field(-1, ge=-1, le=32767, description="replication factor of topics the worker "
                                                                     "creates (-1: the broker's default.replication.factor)")
    topic_configs: str = Field("", description="Kafka topic configs for topics the worker creates, "
                                               "key=value[,key=value...], e.g. min.insync.replicas=2")
    create_topics: bool = Field(True, description="create missing topics (false: create nothing and stop at "
                                                  "start if a needed topic is missing)")
    batch_size: int = Field(256, ge=1, le=100_000, description="max records per model batch")
    batch_max_wait: float = Field(0.005, ge=0, le=60, description="seconds a free model waits for a batch to fill")
    # The broker answers a fetch when 256 KB are ready or after this long: the most a record waits
    # for its fetch at low rates. Longer means fewer fetches while idle (1 / this per second).
    fetch_max_wait: float = Field(0.01, gt=0, le=30, description="seconds the broker may hold a fetch to fill it")
    # Inference runs in one thread; TensorFlow then splits each op over `intra` threads and runs
    # `inter` independent ops at once. 0 = TensorFlow's choice (the number of cores for both).
    inter_op_threads: int = Field(0, ge=0, le=256, description="TensorFlow inter-op threads (0 = number of cores)")
    intra_op_threads: int = Field(0, ge=0, le=256, description="TensorFlow intra-op threads (0 = number of cores)")
    # Size limits (worker/limits.py): unset, each is derived at start from the cluster's
    # max.message.bytes; a value above what the cluster allows is refused at start.
    max_text_bytes: int | None = Field(
        None, ge=1, description="larger input values are dead-lettered as too_large (default: the largest whose dead "
                                "letter fits the dead-letter topic's max.message.bytes)")
    max_output_bytes: int | None = Field(
        None, ge=1024, description="larger output records (key + value + headers, as Kafka counts them) are "
                                   "dead-lettered as output_too_large (default: the output and label topics' "
                                   "max.message.bytes)")
    max_dead_letter_bytes: int | None = Field(
        None, ge=4096, description="largest dead letter (as Kafka counts it); inputs whose dead letter could be "
                                   "larger are too_large (default: the dead-letter topic's max.message.bytes)")
    web_port: int = Field(6066, ge=1, le=65535, description="HTTP port of the worker (Faust web)")
    web_host: str = Field("0.0.0.0", description="interface the HTTP port binds to")
    reload_interval: float = Field(10.0, gt=0, le=3600, description="seconds between registry polls for a new version")
    explain: bool = Field(False, description="add an `explanation` to each labelled record: the n-grams that pushed "
                                            "it to its label with their exact weights, and the tokens whose removal "
                                            "from the LSTM's input lowers its probability most (docs/models.md; "
                                            "costs CPU, bench/README.md)")
    explain_tokens: int = Field(8, ge=0, le=64, description="tokens tried per record for the LSTM's part of an "
                                                            "explanation, each one more LSTM call (0: the n-grams "
                                                            "only, at a fraction of the cost)")
    lstm: LstmMode = Field("needed", description="needed: run the classifier's LSTM branch only for texts whose "
                                                 "label or route it can change (worker/lstm_skip.py; the others "
                                                 "get a lower bound of their confidence); always: for every text")
    # worker/transactions.py: exactly_once commits a batch's outputs and its input offsets in one Kafka
    # transaction per input partition; consumers of the outputs must read with read_committed.
    processing_guarantee: ProcessingGuarantee = Field(
        "at_least_once", description="at_least_once: outputs, then the input offsets (a crash can republish a "
                                     "batch); exactly_once: outputs and offsets in one Kafka transaction per input "
                                     "partition (read the outputs with isolation.level=read_committed)")
    # A clean stop (SIGTERM/SIGINT) finishes or abandons the batch in flight, commits what was delivered
    # and leaves the group; with the broker unreachable, aiokafka retries forever and the stop never
    # ends. Past this deadline the worker exits 1 uncommitted, which is no worse than a crash: at-least-
    # once redelivers the records since the last commit, exactly-once aborts the open transactions.
    stop_timeout: float = Field(25.0, gt=0, le=3600, description="seconds a stop (SIGTERM, SIGINT) may take; past "
                                                                 "them the worker exits with code 1 without "
                                                                 "committing (keep it under the orchestrator's grace "
                                                                 "period)")
    novelty_threshold: float = Field(0.3, ge=-1, le=1, description="cluster similarity below this counts as a novel text")
    # Review route (worker/route.py): off by default, so that nothing changes for existing deployments
    # and no review topic is created or required until an operator picks a threshold.
    min_confidence: float = Field(0.0, ge=0, le=1, description="records whose confidence (calibrated) is below this go "
                                                               "to the review topic instead of their label's topic "
                                                               "(0: off)")
    min_confidence_by_label: str = Field("", description="per-label thresholds overriding TEXTSTREAM_MIN_CONFIDENCE: "
                                                         "label=value[,label=value...] or a JSON object "
                                                         "{\"label\": value}")
    review_topic: str = Field("texts.review", description="topic of records under their label's confidence threshold "
                                                          "(created or required only when a threshold is set)")
    log_level: LogLevel = Field("INFO", description="DEBUG, INFO, WARNING or ERROR")
    log_format: LogFormat = Field("text", description="text (readable) or json (one object per line)")
    # Kafka security: every client of the project (worker, lag probe, admin, send/tail, announce)
    # takes these through worker/security.py.
    security_protocol: SecurityProtocol = Field(
        "PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL (Kafka security.protocol)")
    sasl_mechanism: SaslMechanism = Field(
        "SCRAM-SHA-512", description="SCRAM-SHA-512, SCRAM-SHA-256, PLAIN or OAUTHBEARER (used with SASL_*)")
    sasl_username: str | None = Field(None, description="SASL user (required with SASL_*)")
    sasl_password: SecretStr | None = Field(None, description="SASL password (required with SASL_*; never logged)")
    ssl_cafile: Path | None = Field(None, description="PEM file of the CA(s) that signed the brokers' certificates "
                                                      "(default: the system's trust store)")
    ssl_certfile: Path | None = Field(None, description="PEM client certificate (chain) for TLS client authentication")
    ssl_keyfile: Path | None = Field(None, description="PEM private key of the client certificate")
    ssl_key_password: SecretStr | None = Field(None, description="password of an encrypted private key (never logged)")
    # SASL/OAUTHBEARER (worker/oauth.py): a token file, or the client-credentials grant.
    kafka_oauth_token_file: Path | None = Field(
        None, description="OAUTHBEARER: file holding the token, read again at every login (e.g. a Kubernetes "
                          "projected service-account token)")
    kafka_oauth_token_url: str | None = Field(
        None, description="OAUTHBEARER: token endpoint of the identity provider (client-credentials grant)")
    kafka_oauth_client_id: str | None = Field(None, description="OAUTHBEARER: client id at the token endpoint")
    kafka_oauth_client_secret: SecretStr | None = Field(
        None, description="OAUTHBEARER: client secret at the token endpoint (never logged)")
    kafka_oauth_scope: str | None = Field(None, description="OAUTHBEARER: scope to ask the token endpoint for "
                                                            "(optional)")
    # Java-style client properties (worker/properties.py); TEXTSTREAM_* variables win over the file.
    kafka_config_file: Path | None = Field(
        None, description="Kafka client properties file (bootstrap.servers, security.protocol, sasl.*, ssl.*), "
                          "as kafka-console-* --command-config or kcat -F read it; variables set win over it")
    # Records held in memory (fetched, buffered, waiting or in flight), in bytes: worker/budget.py
    # splits it, docs/operations.md gives the RSS it bounds. 256 MiB fits the 2 GiB pod of deploy/k8s.
    max_buffered_bytes: int = Field(268_435_456, ge=8_388_608, le=68_719_476_736,
                                    description="bytes of consumed records the worker holds in memory at most "
                                                "(backlog, Faust's buffer, fetches; each may exceed its share by "
                                                "one record)")

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Arguments, then TEXTSTREAM_* variables, then the properties file, then the defaults.
        return init_settings, env_settings, PropertiesFileSource(settings_cls), dotenv_settings, file_secret_settings

    @field_validator("broker")
    @classmethod
    def _check_broker(cls, value: str) -> str:
        for server in value.split(","):
            if not _BROKER_RE.match(server.strip()):
                raise ValueError(f"expected host:port[,host:port...] optionally prefixed by kafka://, got {server!r}")
        return value

    @field_validator("input_topic", "output_topic", "dlq_topic", "models_topic", "review_topic")
    @classmethod
    def _check_topic(cls, value: str) -> str:
        if not _TOPIC_RE.match(value):
            raise ValueError("a Kafka topic name is 1-249 characters of letters, digits, '.', '_' and '-'")
        return value

    @field_validator("replication_factor")
    @classmethod
    def _check_replication(cls, value: int) -> int:
        if value == 0:
            raise ValueError("-1 (the broker's default.replication.factor) or at least 1")
        return value

    @field_validator("topic_configs")
    @classmethod
    def _check_topic_configs(cls, value: str) -> str:
        parse_topic_configs(value)  # raises ValueError saying which item is wrong
        return value

    @field_validator("min_confidence_by_label")
    @classmethod
    def _check_thresholds(cls, value: str) -> str:
        parse_thresholds(value)  # raises ValueError saying which item is wrong
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

    @field_validator("log_format", "lstm", "processing_guarantee", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("security_protocol", mode="before")
    @classmethod
    def _protocol_upper(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("sasl_mechanism", mode="before")
    @classmethod
    def _mechanism_upper(cls, value: object) -> object:
        return value.strip().upper().replace("_", "-") if isinstance(value, str) else value

    @field_validator("sasl_username", "ssl_cafile", "ssl_certfile", "ssl_keyfile", "kafka_oauth_token_file",
                     "kafka_oauth_token_url", "kafka_oauth_client_id", "kafka_oauth_scope", "kafka_config_file",
                     mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("sasl_password", "ssl_key_password", "kafka_oauth_client_secret", mode="before")
    @classmethod
    def _empty_secret_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and value == "" else value

    @field_validator("ssl_cafile", "ssl_certfile", "ssl_keyfile", "kafka_oauth_token_file", "kafka_config_file")
    @classmethod
    def _readable_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @model_validator(mode="after")
    def _check_security(self) -> Settings:
        """Combinations that would only fail at the first connection, reported at start instead."""
        problems: list[tuple[str, str]] = []
        sasl = self.security_protocol.startswith("SASL_")
        tls = self.security_protocol.endswith("SSL")
        oauth = sasl and self.sasl_mechanism == "OAUTHBEARER"
        if oauth:
            problems.extend(self._oauth_problems())
        if sasl and not oauth and not self.sasl_username:
            problems.append(("sasl_username", f"required with TEXTSTREAM_SECURITY_PROTOCOL={self.security_protocol}"))
        if sasl and not oauth and (self.sasl_password is None or not self.sasl_password.get_secret_value()):
            problems.append(("sasl_password", f"required with TEXTSTREAM_SECURITY_PROTOCOL={self.security_protocol}"))
        oauth_set = [f for f in _OAUTH_FIELDS if getattr(self, f) is not None]
        if oauth_set and not oauth:
            problems.append(("sasl_mechanism", f"{', '.join(ENV_PREFIX + f.upper() for f in oauth_set)} set but the "
                             f"mechanism is {self.sasl_mechanism} over {self.security_protocol}; use OAUTHBEARER over "
                             "SASL_PLAINTEXT or SASL_SSL"))
        if not sasl and (self.sasl_username or self.sasl_password is not None):
            problems.append(("security_protocol", "SASL credentials are set but the protocol is "
                             f"{self.security_protocol}; use SASL_PLAINTEXT or SASL_SSL"))
        ssl_files = {"ssl_cafile": self.ssl_cafile, "ssl_certfile": self.ssl_certfile,
                     "ssl_keyfile": self.ssl_keyfile}
        if not tls and any(v is not None for v in ssl_files.values()):
            set_names = ", ".join(f"{ENV_PREFIX}{k.upper()}" for k, v in ssl_files.items() if v is not None)
            problems.append(("security_protocol", f"{set_names} set but the protocol is {self.security_protocol}; "
                             "use SSL or SASL_SSL"))
        if self.ssl_keyfile is not None and self.ssl_certfile is None:
            problems.append(("ssl_certfile", "required with TEXTSTREAM_SSL_KEYFILE (a key without its certificate)"))
        if self.ssl_key_password is not None and self.ssl_keyfile is None:
            problems.append(("ssl_keyfile", "required with TEXTSTREAM_SSL_KEY_PASSWORD"))
        if problems:
            raise ConfigProblems(problems)
        return self

    @model_validator(mode="after")
    def _check_distinct_topics(self) -> Settings:
        """Two roles on one topic would loop (outputs read back as inputs) or mix record kinds."""
        roles = ["input_topic", "output_topic", "dlq_topic", "models_topic"] + (["review_topic"] if self.review_on else [])
        seen: dict[str, str] = {}
        problems: list[tuple[str, str]] = []
        for role in roles:
            topic = getattr(self, role)
            if topic in seen:
                problems.append((role, f"is {topic!r}, the topic of {ENV_PREFIX}{seen[topic].upper()} too; "
                                       "every role needs a topic of its own"))
            seen.setdefault(topic, role)
        if problems:
            raise ConfigProblems(problems)
        return self

    def _oauth_problems(self) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        if self.sasl_username or self.sasl_password is not None:
            problems.append(("sasl_mechanism", "OAUTHBEARER logs in with a token, not TEXTSTREAM_SASL_USERNAME/"
                             "TEXTSTREAM_SASL_PASSWORD; unset them or use a SCRAM mechanism"))
        if (self.kafka_oauth_token_file is None) == (self.kafka_oauth_token_url is None):
            problems.append(("kafka_oauth_token_file", "OAUTHBEARER needs exactly one token source: "
                             "TEXTSTREAM_KAFKA_OAUTH_TOKEN_FILE or TEXTSTREAM_KAFKA_OAUTH_TOKEN_URL"))
        if self.kafka_oauth_token_url is not None:
            if not re.match(r"^https?://[^\s/]+", self.kafka_oauth_token_url):
                problems.append(("kafka_oauth_token_url", "an http:// or https:// URL"))
            if not self.kafka_oauth_client_id:
                problems.append(("kafka_oauth_client_id", "required with TEXTSTREAM_KAFKA_OAUTH_TOKEN_URL"))
            if self.kafka_oauth_client_secret is None:
                problems.append(("kafka_oauth_client_secret", "required with TEXTSTREAM_KAFKA_OAUTH_TOKEN_URL"))
        elif self.kafka_oauth_client_id or self.kafka_oauth_client_secret is not None or self.kafka_oauth_scope:
            problems.append(("kafka_oauth_token_url", "required with TEXTSTREAM_KAFKA_OAUTH_CLIENT_ID/_SECRET/_SCOPE"))
        return problems

    @property
    def bootstrap_servers(self) -> str:
        """The broker list without the kafka:// scheme, as aiokafka wants it."""
        return ",".join(s.strip().removeprefix("kafka://") for s in self.broker.split(","))

    @property
    def faust_broker(self) -> str:
        return ";".join("kafka://" + s for s in self.bootstrap_servers.split(","))

    @property
    def thresholds(self) -> dict[str, float]:
        """TEXTSTREAM_MIN_CONFIDENCE_BY_LABEL as {label: threshold} (validated at start)."""
        return parse_thresholds(self.min_confidence_by_label)

    @property
    def exactly_once(self) -> bool:
        """Outputs and input offsets in Kafka transactions (worker/transactions.py)."""
        return self.processing_guarantee == "exactly_once"

    @property
    def review_on(self) -> bool:
        """Whether any record can go to the review topic (a threshold above 0 is set)."""
        return self.min_confidence > 0 or any(t > 0 for t in self.thresholds.values())

    @property
    def topic_config_map(self) -> dict[str, str]:
        """TEXTSTREAM_TOPIC_CONFIGS as Kafka's config map (validated at start)."""
        return parse_topic_configs(self.topic_configs)


# A new item starts at a comma followed by `key=`: values may hold commas (cleanup.policy=compact,delete).
_CONFIG_ITEM_START = re.compile(r",\s*(?=[A-Za-z0-9._-]+\s*=)")
_CONFIG_KEY_RE = re.compile(r"^[a-z0-9]+([._-][a-z0-9]+)*$")


def parse_topic_configs(text: str) -> dict[str, str]:
    """'min.insync.replicas=2,retention.ms=604800000' → {'min.insync.replicas': '2', ...}. Kafka
    checks the names and values when it creates a topic; this checks the syntax: key=value items,
    lower-case dotted keys, non-empty values, no key twice. A value may hold commas when what
    follows the comma is not `key=` (cleanup.policy=compact,delete)."""
    configs: dict[str, str] = {}
    if not text.strip():
        return configs
    for item in _CONFIG_ITEM_START.split(text.strip()):
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not item.strip():
            raise ValueError("empty item between commas")
        if not sep:
            raise ValueError(f"{item.strip()!r} is not key=value")
        if not _CONFIG_KEY_RE.match(key):
            raise ValueError(f"{key!r} is not a Kafka config name (lower-case words joined by '.', e.g. retention.ms)")
        if not value:
            raise ValueError(f"{key} has no value")
        if any(not part.strip() for part in value.split(",")):
            raise ValueError(f"{key}={value}: empty item between commas")
        if key in configs:
            raise ValueError(f"{key} is given twice")
        configs[key] = value
    return configs


class PropertiesFileSource(PydanticBaseSettingsSource):
    """The Kafka client properties file named by the arguments or TEXTSTREAM_KAFKA_CONFIG_FILE
    (worker/properties.py), below both: a variable that is set wins over the file's key."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ reads the whole file at once

    def __call__(self) -> dict[str, Any]:
        path = self.current_state.get("kafka_config_file")
        if path is None or (isinstance(path, str) and not path.strip()):
            return {}
        given = "kafka_config_file" in self.settings_sources_data.get("InitSettingsSource", {})
        return dict(properties.read(Path(path), "--command-config" if given else "TEXTSTREAM_KAFKA_CONFIG_FILE"))


_OAUTH_FIELDS = ("kafka_oauth_token_file", "kafka_oauth_token_url", "kafka_oauth_client_id",
                 "kafka_oauth_client_secret", "kafka_oauth_scope")


def parse_thresholds(text: str) -> dict[str, float]:
    """'spam=0.9,ham=0.5' or '{"spam": 0.9, "a,b": 0.5}' (JSON, for labels holding ',' or '=') →
    {label: threshold}; each threshold a number from 0 to 1, no label twice, no empty label."""
    text = text.strip()
    if not text:
        return {}
    from_json = text.startswith("{")
    if from_json:
        try:
            obj = json.loads(text, object_pairs_hook=list)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not a JSON object: {exc}") from None
        items: list[tuple[str, object]] = list(obj)
    else:
        items = []
        for item in text.split(","):
            label, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"{item.strip()!r} is not label=value")
            items.append((label.strip(), value.strip()))
    out: dict[str, float] = {}
    for label, raw in items:
        if not label:
            raise ValueError("a threshold without a label")
        if label in out:
            raise ValueError(f"label {label!r} is given twice")
        number = isinstance(raw, (int, float)) and not isinstance(raw, bool)  # JSON: numbers only
        try:
            threshold = float(raw) if number or (isinstance(raw, str) and not from_json) else float("nan")  # type: ignore[arg-type]
        except ValueError:
            threshold = float("nan")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"{label}: {raw!r} is not a number from 0 to 1")
        out[label] = threshold
    return out


class ConfigProblems(ValueError):
    """Raised inside the model validator: (field, why) pairs that load_settings names one by one."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{ENV_PREFIX}{f.upper()}: {why}" for f, why in problems))
        self.problems = problems


def validation_problems(exc: ValidationError, name_of: Callable[[str], str]) -> list[str]:
    """One line per invalid field, named the way the user set it (`name_of(field)`: a variable or
    a flag) with the value given (never a secret's) and what is wrong."""
    problems: list[str] = []
    for err in exc.errors():
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, ConfigProblems):
            problems.extend(f"{name_of(f)}: {why}" for f, why in cause.problems)
            continue
        field = str(err["loc"][0]) if err["loc"] else "?"
        got = "***" if field in SECRET_FIELDS else repr(err.get("input"))
        msg = err["msg"].removeprefix("Value error, ")
        problems.append(f"{name_of(field)}={got}: {msg}")
    return problems


def load_settings(**overrides: object) -> Settings:
    """Read and validate the settings; raise ConfigError naming each bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        from_file = _from_properties_file(overrides)
        problems = validation_problems(exc, lambda field: f"{ENV_PREFIX}{field.upper()}" + from_file.get(field, ""))
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems)) from None


def _from_properties_file(overrides: dict[str, object]) -> dict[str, str]:
    """{field: " (from FILE, via SETTING)"} for the fields only the properties file set: an error about
    one must send the user to the file, not to a variable they never set."""
    path = overrides.get("kafka_config_file") or os.environ.get(f"{ENV_PREFIX}KAFKA_CONFIG_FILE")
    if not path:
        return {}
    via = "--command-config" if overrides.get("kafka_config_file") else f"{ENV_PREFIX}KAFKA_CONFIG_FILE"
    try:
        fields = properties.read(Path(str(path)), via)
    except ConfigError:
        return {}
    return {f: f" (from {path}, via {via})" for f in fields
            if f not in overrides and f"{ENV_PREFIX}{f.upper()}" not in os.environ}


def describe() -> list[tuple[str, str, str]]:
    """(variable, default, description) for every setting: docs/configuration.md and `--help` show them."""
    rows = []
    for name, field in Settings.model_fields.items():
        default = "unset" if field.default is None else str(field.default)
        rows.append((f"{ENV_PREFIX}{name.upper()}", default, field.description or ""))
    return rows

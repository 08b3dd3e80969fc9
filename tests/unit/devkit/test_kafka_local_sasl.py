"""The local broker's optional SCRAM-SHA-512 and mutual-TLS listeners, checked without starting Java."""

from __future__ import annotations

from pathlib import Path

import pytest

from devkit import kafka_local
from devkit.kafka_local import BrokerConfig, KafkaLocalError

KAFKA_HOME = Path(__file__).resolve().parents[3] / "deploy" / "kafka"


def _props(cfg: BrokerConfig) -> dict[str, str]:
    text = kafka_local.render_properties(cfg)
    assert "$" not in text
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def test_default_broker_has_no_sasl_listener(tmp_path: Path) -> None:
    props = _props(BrokerConfig(home=KAFKA_HOME, run_dir=tmp_path, port=19092, controller_port=19093))
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["listener.security.protocol.map"] == "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
    assert not any("sasl" in key for key in props)


def test_scram_listener_is_added_beside_plaintext(tmp_path: Path) -> None:
    cfg = BrokerConfig(home=KAFKA_HOME, run_dir=tmp_path, port=19092, controller_port=19093, sasl_port=19094,
                       scram_users=(("alice", "alice-pw"),))
    props = _props(cfg)
    assert props["listeners"] == ("PLAINTEXT://127.0.0.1:19092,SASL_PLAINTEXT://127.0.0.1:19094,"
                                  "CONTROLLER://127.0.0.1:19093")
    assert props["advertised.listeners"] == props["listeners"]
    assert props["listener.security.protocol.map"].endswith(",SASL_PLAINTEXT:SASL_PLAINTEXT")
    assert props["inter.broker.listener.name"] == "PLAINTEXT"
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert props["listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config"] == (
        "org.apache.kafka.common.security.scram.ScramLoginModule required;")
    assert "alice-pw" not in kafka_local.render_properties(cfg)  # users live in the metadata log
    assert kafka_local.sasl_bootstrap(cfg) == "127.0.0.1:19094"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sasl_port": 19094}, "needs at least one SCRAM user"),
        ({"scram_users": (("a", "b"),)}, "SCRAM users without a SASL listener"),
        ({"sasl_port": 19092, "scram_users": (("a", "b"),)}, "also the broker or controller port"),
        ({"sasl_port": 19094, "scram_users": (("a", "p,w"),)}, "free of spaces"),
        ({"sasl_port": 19094, "scram_users": (("", "pw"),)}, "must be non-empty"),
    ],
)
def test_bad_sasl_options_are_refused(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(KafkaLocalError, match=message):
        BrokerConfig(home=KAFKA_HOME, run_dir=tmp_path, port=19092, controller_port=19093, **kwargs)  # type: ignore[arg-type]


def test_config_from_env_takes_the_worker_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEXTSTREAM_KAFKA_SASL_PORT", "19094")
    monkeypatch.delenv("TEXTSTREAM_SASL_USERNAME", raising=False)
    monkeypatch.delenv("TEXTSTREAM_SASL_PASSWORD", raising=False)
    with pytest.raises(KafkaLocalError, match="needs TEXTSTREAM_SASL_USERNAME and TEXTSTREAM_SASL_PASSWORD"):
        kafka_local.config_from_env()
    monkeypatch.setenv("TEXTSTREAM_SASL_USERNAME", "alice")
    monkeypatch.setenv("TEXTSTREAM_SASL_PASSWORD", "alice-pw")
    cfg = kafka_local.config_from_env()
    assert cfg.sasl_port == 19094 and cfg.scram_users == (("alice", "alice-pw"),)
    monkeypatch.delenv("TEXTSTREAM_KAFKA_SASL_PORT")
    assert kafka_local.config_from_env().sasl_port is None


def test_busy_sasl_port_names_its_variable(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = BrokerConfig(home=KAFKA_HOME, run_dir=tmp_path, port=19092, controller_port=19093, sasl_port=port,
                           scram_users=(("a", "b"),))
        with pytest.raises(KafkaLocalError, match="TEXTSTREAM_KAFKA_SASL_PORT"):
            kafka_local.check_ports_free(cfg)


def test_format_failure_does_not_show_the_scram_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "bin" / "java"
    fake.parent.mkdir()
    # random-uuid answers, format fails echoing its arguments as a real tool might
    fake.write_text('#!/bin/sh\nif [ "$4" = "random-uuid" ]; then echo abc; exit 0; fi\necho "$@" >&2; exit 1\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake.parent))
    cfg = BrokerConfig(home=KAFKA_HOME, run_dir=tmp_path / "run", sasl_port=19094,
                       scram_users=(("alice", "very-secret-pw"),))
    cfg.run_dir.mkdir()
    with pytest.raises(KafkaLocalError) as err:
        kafka_local._format(cfg)
    assert "--add-scram" in str(err.value) and "name=alice" in str(err.value)
    assert "very-secret-pw" not in str(err.value)


def test_mutual_tls_listener_uses_pem_files_and_requires_client_certificates(tmp_path: Path) -> None:
    keystore, truststore = tmp_path / "server-keystore.pem", tmp_path / "ca.pem"
    keystore.write_text("key and chain\n")
    truststore.write_text("ca\n")
    cfg = BrokerConfig(home=KAFKA_HOME, run_dir=tmp_path, port=19092, controller_port=19093, ssl_port=19095,
                       ssl_keystore=keystore, ssl_truststore=truststore)
    props = _props(cfg)
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,SSL://127.0.0.1:19095,CONTROLLER://127.0.0.1:19093"
    assert props["listener.security.protocol.map"].endswith(",SSL:SSL")
    assert props["listener.name.ssl.ssl.keystore.type"] == props["listener.name.ssl.ssl.truststore.type"] == "PEM"
    assert props["listener.name.ssl.ssl.keystore.location"] == str(keystore)
    assert props["listener.name.ssl.ssl.truststore.location"] == str(truststore)
    assert props["listener.name.ssl.ssl.client.auth"] == "required"
    assert kafka_local.ssl_bootstrap(cfg) == "127.0.0.1:19095"
    with pytest.raises(KafkaLocalError, match="needs ssl_truststore"):
        BrokerConfig(home=KAFKA_HOME, run_dir=tmp_path, ssl_port=19095, ssl_keystore=keystore)


def test_oauthbearer_is_enabled_beside_scram_on_the_sasl_listener(tmp_path: Path) -> None:
    cfg = BrokerConfig(home=KAFKA_HOME, run_dir=tmp_path, port=19092, controller_port=19093, sasl_port=19094,
                       scram_users=(("alice", "alice-pw"),), oauthbearer=True)
    props = _props(cfg)
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512,OAUTHBEARER"
    assert props["listener.name.sasl_plaintext.oauthbearer.sasl.jaas.config"].startswith(
        "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required")
    assert not any("callback.handler" in key for key in props)  # the unsecured validator is Kafka's default
    with pytest.raises(KafkaLocalError, match="OAUTHBEARER without a SASL listener"):
        BrokerConfig(home=KAFKA_HOME, run_dir=tmp_path, port=19092, controller_port=19093, oauthbearer=True)


def test_unsecured_jwt_is_unsigned_with_sub_iat_and_exp() -> None:
    import base64
    import json

    header, claims, signature = kafka_local.unsecured_jwt("worker", 60, now=1_000).split(".")
    decode = lambda part: json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))  # noqa: E731
    assert decode(header) == {"alg": "none"}
    assert decode(claims) == {"sub": "worker", "iat": 1_000, "exp": 1_060}
    assert signature == ""

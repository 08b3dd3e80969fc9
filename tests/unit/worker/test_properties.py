"""Kafka client properties files (TEXTSTREAM_KAFKA_CONFIG_FILE, --command-config / -F): Java and
librdkafka names mapped onto the settings, variables winning over the file, and keys that would
change how to connect refused naming the key and the file."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from commands.main import build_parser
from tests.pki import make_pki
from worker import properties, security
from worker.config import load_settings
from worker.errors import ConfigError

CLEAN = ["TEXTSTREAM_BROKER", "TEXTSTREAM_SECURITY_PROTOCOL", "TEXTSTREAM_SASL_MECHANISM", "TEXTSTREAM_SASL_USERNAME",
         "TEXTSTREAM_SASL_PASSWORD", "TEXTSTREAM_SSL_CAFILE", "TEXTSTREAM_SSL_CERTFILE", "TEXTSTREAM_SSL_KEYFILE",
         "TEXTSTREAM_SSL_KEY_PASSWORD", "TEXTSTREAM_KAFKA_OAUTH_TOKEN_FILE", "TEXTSTREAM_KAFKA_OAUTH_TOKEN_URL",
         "TEXTSTREAM_KAFKA_OAUTH_CLIENT_ID", "TEXTSTREAM_KAFKA_OAUTH_CLIENT_SECRET", "TEXTSTREAM_KAFKA_OAUTH_SCOPE",
         "TEXTSTREAM_KAFKA_CONFIG_FILE"]

SCRAM = """\
# what a managed cluster's console hands out
bootstrap.servers=kafka-1:9096,kafka-2:9096
security.protocol=SASL_PLAINTEXT
sasl.mechanism=SCRAM-SHA-256
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required \\
    username="textstream" \\
    password="pa\\\\"ss=w;rd";
client.id=my-console
"""


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in CLEAN:
        monkeypatch.delenv(name, raising=False)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "client.properties"
    path.write_text(text)
    return path


def test_java_properties_syntax() -> None:
    text = "! comment\n  # comment\na.b = 1\nc.d:2\ne.f 3\ng.h=x\\\n   y\ni.j=C:\\\\dir\\u00e9\nk.l=\na.b=4\n"
    assert properties.parse(text) == {"a.b": "4", "c.d": "2", "e.f": "3", "g.h": "xy", "i.j": "C:\\dir\u00e9",
                                      "k.l": ""}


def test_a_scram_file_sets_the_broker_and_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("TEXTSTREAM_KAFKA_CONFIG_FILE", str(write(tmp_path, SCRAM)))
    with caplog.at_level(logging.WARNING):
        s = load_settings()
    assert (s.bootstrap_servers, s.security_protocol, s.sasl_mechanism, s.sasl_username) == (
        "kafka-1:9096,kafka-2:9096", "SASL_PLAINTEXT", "SCRAM-SHA-256", "textstream")
    assert s.sasl_password is not None and s.sasl_password.get_secret_value() == 'pa"ss=w;rd'
    assert "ignoring client properties the worker does not use: client.id" in caplog.text


def test_variables_win_over_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TEXTSTREAM_KAFKA_CONFIG_FILE", str(write(tmp_path, SCRAM)))
    monkeypatch.setenv("TEXTSTREAM_BROKER", "local:9094")
    monkeypatch.setenv("TEXTSTREAM_SASL_PASSWORD", "from-env")
    s = load_settings()
    assert s.bootstrap_servers == "local:9094"
    assert s.sasl_password is not None and s.sasl_password.get_secret_value() == "from-env"
    assert s.sasl_username == "textstream"  # not set as a variable: the file's


def test_command_config_flag_overrides_the_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    other = tmp_path / "other.properties"
    other.write_text("bootstrap.servers=other:9092\n")
    monkeypatch.setenv("TEXTSTREAM_KAFKA_CONFIG_FILE", str(write(tmp_path, SCRAM)))
    from commands.clients import kafka_settings

    for argv in (["send", "--command-config", str(other)], ["tail", "-F", str(other)], ["worker", "-F", str(other)],
                 ["models", "list", "-F", str(other)], ["dlq", "replay", "-F", str(other)],
                 ["train", "--data", "x.jsonl", "-F", str(other)]):
        args = build_parser().parse_args(argv)
        assert kafka_settings(args).bootstrap_servers == "other:9092", argv
    assert kafka_settings(build_parser().parse_args(["send"])).bootstrap_servers == "kafka-1:9096,kafka-2:9096"


def test_librdkafka_names_and_pem_files(tmp_path: Path, pki: Path) -> None:
    path = write(tmp_path, f"metadata.broker.list=k:9093\nsecurity.protocol=sasl_ssl\nsasl.mechanisms=PLAIN\n"
                           f"sasl.username=alice\nsasl.password=pw\nssl.ca.location={pki / 'ca.pem'}\n"
                           f"ssl.certificate.location={pki / 'client.pem'}\nssl.key.location={pki / 'client.key'}\n"
                           "ssl.endpoint.identification.algorithm=https\n")
    s = load_settings(kafka_config_file=path)
    assert (s.broker, s.security_protocol, s.sasl_mechanism, s.sasl_username) == ("k:9093", "SASL_SSL", "PLAIN",
                                                                                  "alice")
    assert (s.ssl_cafile, s.ssl_certfile, s.ssl_keyfile) == (pki / "ca.pem", pki / "client.pem", pki / "client.key")
    assert security.from_settings(s).ssl_context is not None


def test_java_pem_stores(tmp_path: Path, pki: Path) -> None:
    chain = tmp_path / "keystore.pem"  # Kafka's PEM keystore: the certificate chain and the key in one file
    chain.write_text((pki / "client.pem").read_text() + (pki / "client.key").read_text())
    path = write(tmp_path, f"security.protocol=SSL\nssl.truststore.type=PEM\nssl.truststore.location={pki / 'ca.pem'}\n"
                           f"ssl.keystore.type=PEM\nssl.keystore.location={chain}\n")
    s = load_settings(kafka_config_file=path)
    assert (s.ssl_cafile, s.ssl_certfile, s.ssl_keyfile) == (pki / "ca.pem", chain, None)
    assert security.from_settings(s).tls


def test_oauthbearer_files(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t")
    path = write(tmp_path, "security.protocol=SASL_SSL\nsasl.mechanism=OAUTHBEARER\n"
                           f"sasl.oauthbearer.token.endpoint.url=file://{token}\n"
                           "sasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule "
                           "required;\n")
    assert load_settings(kafka_config_file=path).kafka_oauth_token_file == token
    path = write(tmp_path, "security.protocol=SASL_SSL\nsasl.mechanism=OAUTHBEARER\n"
                           "sasl.oauthbearer.token.endpoint.url=https://idp/oauth2/token\n"
                           "sasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule "
                           'required clientId="textstream" clientSecret="s3cret" scope="kafka";\n')
    s = load_settings(kafka_config_file=path)
    assert (s.kafka_oauth_token_url, s.kafka_oauth_client_id, s.kafka_oauth_scope) == (
        "https://idp/oauth2/token", "textstream", "kafka")
    assert s.kafka_oauth_client_secret is not None and s.kafka_oauth_client_secret.get_secret_value() == "s3cret"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ssl.truststore.location=/etc/kafka/truststore.jks\n",
         "ssl.truststore.location in {path} (TEXTSTREAM_KAFKA_CONFIG_FILE): only a PEM truststore is read"),
        ("ssl.truststore.type=JKS\n", "ssl.truststore.type=JKS in {path} (TEXTSTREAM_KAFKA_CONFIG_FILE) is not supported"),
        ("ssl.endpoint.identification.algorithm=\n", "ssl.endpoint.identification.algorithm= in {path}"),
        ("sasl.login.callback.handler.class=com.example.Handler\n",
         "sasl.login.callback.handler.class in {path} (TEXTSTREAM_KAFKA_CONFIG_FILE) is not supported: it changes how"),
        ("security.protocl=SSL\n", "security.protocl in {path}"),
        ("sasl.jaas.config=com.sun.security.auth.module.Krb5LoginModule required;\n",
         "sasl.jaas.config in {path} (TEXTSTREAM_KAFKA_CONFIG_FILE): expected one of"),
        ("sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required user=\"a\";\n",
         "option user of org.apache.kafka.common.security.scram.ScramLoginModule is not supported"),
    ],
)
def test_connection_keys_not_understood_stop_naming_key_and_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                                 text: str, message: str) -> None:
    path = write(tmp_path, text)
    monkeypatch.setenv("TEXTSTREAM_KAFKA_CONFIG_FILE", str(path))
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert message.format(path=path) in str(info.value)


def test_unreadable_file_and_bad_values_are_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TEXTSTREAM_KAFKA_CONFIG_FILE", str(tmp_path / "missing.properties"))
    with pytest.raises(ConfigError, match="cannot read the Kafka client properties .*missing.properties "
                                          r"\(TEXTSTREAM_KAFKA_CONFIG_FILE\)"):
        load_settings()
    with pytest.raises(ConfigError, match=r"missing.properties \(--command-config\)"):
        load_settings(kafka_config_file=tmp_path / "missing.properties")
    monkeypatch.setenv("TEXTSTREAM_KAFKA_CONFIG_FILE", str(write(tmp_path, "security.protocol=KERBEROS\n")))
    # The value came from the file: the error sends the user there, not to a variable never set.
    with pytest.raises(ConfigError, match=r"TEXTSTREAM_SECURITY_PROTOCOL \(from .*\.properties, via "
                                          r"TEXTSTREAM_KAFKA_CONFIG_FILE\)='KERBEROS'"):
        load_settings()
    bad_broker = write(tmp_path, "bootstrap.servers=broker1\n")
    with pytest.raises(ConfigError, match=r"TEXTSTREAM_BROKER \(from .*, via --command-config\)='broker1'"):
        load_settings(kafka_config_file=bad_broker)
    monkeypatch.setenv("TEXTSTREAM_SECURITY_PROTOCOL", "KERBEROS")  # set by the variable: no file named
    with pytest.raises(ConfigError, match=r"TEXTSTREAM_SECURITY_PROTOCOL='KERBEROS'"):
        load_settings()

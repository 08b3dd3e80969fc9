"""Kafka client properties files, the file `kafka-console-*` tools take as --command-config and
kcat as -F: the cluster's connection and security settings in the form a Kafka user already has
(TEXTSTREAM_KAFKA_CONFIG_FILE, or --command-config / -F on every command that connects).

Java names and librdkafka (kcat) names are both read:

    bootstrap.servers                         TEXTSTREAM_BROKER
    security.protocol                         TEXTSTREAM_SECURITY_PROTOCOL
    sasl.mechanism, sasl.mechanisms           TEXTSTREAM_SASL_MECHANISM
    sasl.jaas.config (Scram/PlainLoginModule  TEXTSTREAM_SASL_USERNAME, TEXTSTREAM_SASL_PASSWORD
      username="..." password="...")
    sasl.username, sasl.password              the same (librdkafka)
    sasl.jaas.config (OAuthBearerLoginModule  TEXTSTREAM_KAFKA_OAUTH_CLIENT_ID, _CLIENT_SECRET, _SCOPE
      clientId= clientSecret= scope=)
    sasl.oauthbearer.token.endpoint.url       TEXTSTREAM_KAFKA_OAUTH_TOKEN_URL; a file: URL is
                                              TEXTSTREAM_KAFKA_OAUTH_TOKEN_FILE (as Java reads it)
    sasl.oauthbearer.client.id, .client.secret, .scope   (librdkafka) the client credentials
    ssl.ca.location                           TEXTSTREAM_SSL_CAFILE (PEM)
    ssl.certificate.location, ssl.key.location, ssl.key.password   TEXTSTREAM_SSL_CERTFILE, _KEYFILE, _KEY_PASSWORD
    ssl.truststore.type=PEM + ssl.truststore.location              TEXTSTREAM_SSL_CAFILE
    ssl.keystore.type=PEM + ssl.keystore.location (chain and key)  TEXTSTREAM_SSL_CERTFILE

Keys that only tune a client (client.id, acks, request.timeout.ms, ...) are ignored with a
warning, as Java clients warn about configs they do not use. A key that decides how to connect
(bootstrap.*, security.*, sasl.*, ssl.*) and is not understood stops the process naming the key and
the file: connecting in another way than the file says (a JKS truststore, hostname checks off, a
login callback class) must not happen silently.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from worker.errors import ConfigError

logger = logging.getLogger(__name__)

_CONNECTION_PREFIXES = ("bootstrap.", "security.", "sasl.", "ssl.")
_DIRECT = {
    "bootstrap.servers": "broker",
    "metadata.broker.list": "broker",
    "security.protocol": "security_protocol",
    "sasl.mechanism": "sasl_mechanism",
    "sasl.mechanisms": "sasl_mechanism",
    "sasl.username": "sasl_username",
    "sasl.password": "sasl_password",
    "sasl.oauthbearer.client.id": "kafka_oauth_client_id",
    "sasl.oauthbearer.client.secret": "kafka_oauth_client_secret",
    "sasl.oauthbearer.scope": "kafka_oauth_scope",
    "ssl.ca.location": "ssl_cafile",
    "ssl.certificate.location": "ssl_certfile",
    "ssl.key.location": "ssl_keyfile",
    "ssl.key.password": "ssl_key_password",
}
# Accepted when they ask for what the worker does anyway.
_DEFAULTS_ONLY = {
    "ssl.endpoint.identification.algorithm": {"https"},
    "enable.ssl.certificate.verification": {"true"},
    "sasl.oauthbearer.method": {"oidc"},
    "ssl.truststore.type": {"PEM"},
    "ssl.keystore.type": {"PEM"},
}
_JAAS_RE = re.compile(r"^\s*([\w.$]+)\s+(required|requisite|sufficient|optional)\s*(.*?)\s*;?\s*$", re.S)
_JAAS_OPTION_RE = re.compile(r'\s*([\w.]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s";]+))')
_LOGIN_MODULES = {
    "org.apache.kafka.common.security.scram.ScramLoginModule": {"username": "sasl_username",
                                                                "password": "sasl_password"},
    "org.apache.kafka.common.security.plain.PlainLoginModule": {"username": "sasl_username",
                                                                "password": "sasl_password"},
    "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule": {
        "clientId": "kafka_oauth_client_id", "clientSecret": "kafka_oauth_client_secret",
        "scope": "kafka_oauth_scope"},
}


def parse(text: str) -> dict[str, str]:
    """Java .properties: `key=value`, `key: value` or `key value`; '#' and '!' comments; a line
    ending in a backslash continues; backslash escapes. A key given twice keeps the last value, as
    java.util.Properties does."""
    props: dict[str, str] = {}
    lines = iter(text.splitlines())
    for raw in lines:
        line = raw.lstrip()
        if not line or line[0] in "#!":
            continue
        while _continues(line):
            line = line[:-1] + next(lines, "").lstrip()
        match = re.match(r"((?:[^\s:=\\]|\\.)*)\s*[:=]?\s*(.*)$", line, re.S)
        assert match is not None  # the pattern matches any string
        props[_unescape(match.group(1))] = _unescape(match.group(2))
    return props


def _continues(line: str) -> bool:
    return (len(line) - len(line.rstrip("\\"))) % 2 == 1


def _unescape(text: str) -> str:
    escapes = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}
    return re.sub(r"\\(u[0-9a-fA-F]{4}|.)",
                  lambda m: chr(int(m.group(1)[1:], 16)) if len(m.group(1)) == 5 else escapes.get(m.group(1),
                                                                                                m.group(1)),
                  text)


def _jaas(value: str, key: str, where: str) -> dict[str, str]:
    match = _JAAS_RE.match(value)
    module = match.group(1) if match else ""
    if not match or module not in _LOGIN_MODULES:
        raise ConfigError(f"{key} in {where}: expected one of {', '.join(sorted(_LOGIN_MODULES))} "
                          f"with 'required' and options, got {module or value!r}")
    options: dict[str, str] = {}
    rest = match.group(3)
    for opt in _JAAS_OPTION_RE.finditer(rest):
        quoted, bare = opt.group(2), opt.group(3)
        options[opt.group(1)] = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare
    leftover = _JAAS_OPTION_RE.sub("", rest).strip()
    if leftover:
        raise ConfigError(f"{key} in {where}: cannot read the options of {module} (near {leftover[:20]!r})")
    fields = _LOGIN_MODULES[module]
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise ConfigError(f"{key} in {where}: option {unknown[0]} of {module} is not supported (supported: "
                          f"{', '.join(fields)})")
    return {fields[name]: v for name, v in options.items() if name in fields}


def settings_values(props: dict[str, str], where: str) -> dict[str, str]:
    """The Settings fields (by name) that the properties set; ConfigError naming the key and `where`."""
    values: dict[str, str] = {}
    ignored: list[str] = []
    stores = {"truststore": "ssl_cafile", "keystore": "ssl_certfile"}
    for key, value in props.items():
        if key in _DIRECT:
            values[_DIRECT[key]] = value
        elif key == "sasl.jaas.config":
            values.update(_jaas(value, key, where))
        elif key == "sasl.oauthbearer.token.endpoint.url":
            if value.startswith("file:"):
                values["kafka_oauth_token_file"] = re.sub(r"^file:(//)?", "", value)
            else:
                values["kafka_oauth_token_url"] = value
        elif key in _DEFAULTS_ONLY:
            if value.strip().lower() not in {v.lower() for v in _DEFAULTS_ONLY[key]}:
                raise ConfigError(f"{key}={value} in {where} is not supported (only "
                                  f"{' or '.join(sorted(_DEFAULTS_ONLY[key]))}: convert Java keystores to PEM, "
                                  "e.g. with keytool -exportcert -rfc or openssl pkcs12)")
        elif (m := re.fullmatch(r"ssl\.(truststore|keystore)\.location", key)):
            if props.get(f"ssl.{m.group(1)}.type", "").upper() != "PEM":
                raise ConfigError(f"{key} in {where}: only a PEM {m.group(1)} is read (ssl.{m.group(1)}.type=PEM); "
                                  "convert a JKS or PKCS12 store to PEM, or use ssl.ca.location / "
                                  "ssl.certificate.location")
            values[stores[m.group(1)]] = value
        elif key.startswith(_CONNECTION_PREFIXES):
            raise ConfigError(f"{key} in {where} is not supported: it changes how to connect to Kafka and the "
                              "worker would ignore it (see the properties file in docs/operations.md)")
        else:
            ignored.append(key)
    if ignored:
        logger.warning("%s: ignoring client properties the worker does not use: %s", where, ", ".join(ignored))
    return values


def read(path: Path, setting: str = "TEXTSTREAM_KAFKA_CONFIG_FILE") -> dict[str, str]:
    """The Settings fields a properties file sets; ConfigError naming the file (and key) when it
    cannot be read or holds a connection setting the worker does not understand."""
    where = f"{path} ({setting})"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the Kafka client properties {where}: {exc}") from None
    return settings_values(parse(text), where)

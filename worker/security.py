"""Kafka security for every client of the project: TLS (optionally with a client certificate) and
SASL (SCRAM-SHA-512, SCRAM-SHA-256, PLAIN; OAUTHBEARER with a token provider from worker/oauth.py)
from the TEXTSTREAM_SECURITY_PROTOCOL / SASL_* / SSL_* / KAFKA_OAUTH_* settings.

`from_settings` builds one `ClientSecurity`; `kwargs()` gives the aiokafka client arguments
(consumer, producer, admin) and worker/app.py maps the same object onto Faust's
`broker_credentials`. aiokafka only logs why it could not bootstrap ("Unable to bootstrap from
[...]"), so `diagnose` opens one connection itself to turn a refused login or a failed TLS
handshake into a message that says what to check. The password is never logged: it is in no
repr, no message and no `describe()` default.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from aiokafka.conn import create_conn
from aiokafka.errors import (
    IllegalSaslStateError,
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)
from aiokafka.helpers import create_ssl_context

from worker import oauth
from worker.config import SaslMechanism, SecurityProtocol, Settings
from worker.errors import ConfigError, TextstreamError
from worker.oauth import ClientCredentialsTokenProvider, FileTokenProvider, TokenError

logger = logging.getLogger(__name__)

_CREDENTIALS_VARS = "TEXTSTREAM_SASL_USERNAME/TEXTSTREAM_SASL_PASSWORD"


class BrokerUnavailable(TextstreamError):
    """Kafka did not answer at the configured bootstrap servers."""


class KafkaAuthError(TextstreamError):
    """Kafka refused the credentials, the SASL mechanism, or the TLS handshake."""


@dataclass(frozen=True)
class ClientSecurity:
    """How a client authenticates to Kafka. The default is PLAINTEXT without authentication."""

    protocol: SecurityProtocol = "PLAINTEXT"
    mechanism: SaslMechanism | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False, compare=False)
    # OAUTHBEARER: where tokens come from (instead of username and password).
    token_provider: FileTokenProvider | ClientCredentialsTokenProvider | None = field(
        default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.oauth and self.token_provider is None:
            raise ConfigError(f"{self.protocol}/OAUTHBEARER needs a token provider")
        if self.oauth:
            oauth.install()  # a refused token is reported as such, not as a closed connection
        if self.sasl and not self.oauth and not (self.mechanism and self.username and self.password):
            raise ConfigError(f"{self.protocol} needs a SASL mechanism, a username and a password")
        if self.tls and self.ssl_context is None:
            raise ConfigError(f"{self.protocol} needs an SSL context")

    @property
    def sasl(self) -> bool:
        return self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    @property
    def oauth(self) -> bool:
        return self.sasl and self.mechanism == "OAUTHBEARER"

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments for AIOKafkaConsumer, AIOKafkaProducer and AIOKafkaAdminClient."""
        out: dict[str, Any] = {"security_protocol": self.protocol}
        if self.tls:
            out["ssl_context"] = self.ssl_context
        if self.oauth:
            out.update(sasl_mechanism=self.mechanism, sasl_oauth_token_provider=self.token_provider)
        elif self.sasl:
            out.update(sasl_mechanism=self.mechanism, sasl_plain_username=self.username,
                       sasl_plain_password=self.password)
        return out

    def describe(self) -> str:
        """'PLAINTEXT', 'SSL', 'SASL_SSL/SCRAM-SHA-512 as alice' or 'SASL_SSL/OAUTHBEARER with token
        from ...': for messages, never the password, the secret or the token."""
        if self.oauth:
            assert self.token_provider is not None
            return f"{self.protocol}/OAUTHBEARER with {self.token_provider.describe()}"
        if self.sasl:
            return f"{self.protocol}/{self.mechanism} as {self.username}"
        return self.protocol


PLAINTEXT = ClientSecurity()


def _no_password() -> str:
    return ""


def ssl_context(cafile: Path | None = None, certfile: Path | None = None, keyfile: Path | None = None,
                key_password: str | None = None) -> ssl.SSLContext:
    """A client TLS context (hostname checked, CA = cafile or the system store, optional client
    certificate); unreadable or mismatched files raise ConfigError naming the variable."""
    try:
        ctx: ssl.SSLContext = create_ssl_context(cafile=str(cafile) if cafile else None)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"TEXTSTREAM_SSL_CAFILE={cafile}: not a usable PEM CA file: {exc}") from None
    if certfile is not None:
        try:
            # Without a password, OpenSSL would prompt on the terminal for an encrypted key.
            ctx.load_cert_chain(str(certfile), str(keyfile) if keyfile else None,
                                password=key_password if key_password is not None else _no_password)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(
                f"TEXTSTREAM_SSL_CERTFILE={certfile} / TEXTSTREAM_SSL_KEYFILE={keyfile}: cannot load the client "
                f"certificate and key ({exc}); are they PEM, do they belong together, is "
                "TEXTSTREAM_SSL_KEY_PASSWORD right?") from None
    return ctx


def from_settings(settings: Settings) -> ClientSecurity:
    protocol = settings.security_protocol
    ctx = None
    if protocol in ("SSL", "SASL_SSL"):
        ctx = ssl_context(settings.ssl_cafile, settings.ssl_certfile, settings.ssl_keyfile,
                          settings.ssl_key_password.get_secret_value() if settings.ssl_key_password else None)
    if protocol in ("SASL_PLAINTEXT", "SASL_SSL") and settings.sasl_mechanism == "OAUTHBEARER":
        return ClientSecurity(protocol, "OAUTHBEARER", ssl_context=ctx, token_provider=token_provider(settings))
    if protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        assert settings.sasl_password is not None  # the settings validator requires it
        return ClientSecurity(protocol, settings.sasl_mechanism, settings.sasl_username,
                              settings.sasl_password.get_secret_value(), ctx)
    return ClientSecurity(protocol, ssl_context=ctx)


def token_provider(settings: Settings) -> FileTokenProvider | ClientCredentialsTokenProvider:
    """The OAUTHBEARER token source the settings name (the settings validator requires exactly one)."""
    if settings.kafka_oauth_token_file is not None:
        return FileTokenProvider(settings.kafka_oauth_token_file)
    assert settings.kafka_oauth_token_url and settings.kafka_oauth_client_id and settings.kafka_oauth_client_secret
    return ClientCredentialsTokenProvider(settings.kafka_oauth_token_url, settings.kafka_oauth_client_id,
                                          settings.kafka_oauth_client_secret.get_secret_value(),
                                          settings.kafka_oauth_scope)


def explain(server: str, security: ClientSecurity, exc: BaseException) -> KafkaAuthError | None:
    """A KafkaAuthError saying what to check when `exc` is an authentication or TLS failure."""
    where = f"Kafka at {server}"
    if isinstance(exc, TokenError):
        return KafkaAuthError(f"cannot authenticate to {where} ({security.protocol}/OAUTHBEARER): {exc}")
    if isinstance(exc, SaslAuthenticationFailed) and security.oauth:
        assert security.token_provider is not None
        detail = str(exc).split(": ", 1)[-1] or "authentication failed"
        return KafkaAuthError(f"cannot authenticate to {where} ({security.describe()}): the broker refused the "
                              f"token: {detail}; check {security.token_provider.setting}")
    if isinstance(exc, SaslAuthenticationFailed):
        detail = str(exc).split(": ", 1)[-1] or "authentication failed"
        return KafkaAuthError(f"cannot authenticate to {where} as {security.username} "
                              f"({security.protocol}/{security.mechanism}): {detail}; check {_CREDENTIALS_VARS}")
    if isinstance(exc, UnsupportedSaslMechanismError):
        return KafkaAuthError(f"cannot authenticate to {where} ({security.describe()}): the broker does not enable "
                              f"{security.mechanism} on this listener; check TEXTSTREAM_SASL_MECHANISM")
    if isinstance(exc, IllegalSaslStateError):
        return KafkaAuthError(f"{where} does not accept SASL on this listener ({security.describe()}); "
                              "check TEXTSTREAM_SECURITY_PROTOCOL and the port")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return KafkaAuthError(f"TLS to {where}: the broker's certificate is not trusted ({exc.verify_message}); "
                              "check TEXTSTREAM_SSL_CAFILE")
    if isinstance(exc, ssl.SSLError):
        return KafkaAuthError(f"TLS handshake with {where} failed ({security.describe()}): {exc}; check "
                              "TEXTSTREAM_SECURITY_PROTOCOL (is the listener TLS?) and TEXTSTREAM_SSL_CERTFILE/KEYFILE")
    return None


async def diagnose(bootstrap: str, security: ClientSecurity, timeout_s: float = 10.0) -> KafkaAuthError | None:
    """Connect to each bootstrap server as a client would; the first authentication or TLS
    failure, explained, or None when none was seen (the broker may simply be down)."""
    kwargs = security.kwargs()
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            conn = await asyncio.wait_for(
                create_conn(host, int(port), request_timeout_ms=int(timeout_s * 1000), **kwargs), timeout_s)
        except (TimeoutError, KafkaError, OSError) as exc:
            found = explain(server.strip(), security, exc)
            if found is not None:
                return found
            logger.debug("diagnose %s: %s", server, exc)
            continue
        conn.close()
    return None


async def _tcp_open(server: str, timeout_s: float = 3.0) -> bool:
    host, _, port = server.strip().rpartition(":")
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), timeout_s)
    except (TimeoutError, OSError, ValueError):
        return False
    writer.close()
    return True


_CLOSED_HINTS: dict[str, str] = {
    "PLAINTEXT": "does the listener need TLS or SASL? (TEXTSTREAM_SECURITY_PROTOCOL)",
    "SASL_PLAINTEXT": "is it a SASL_PLAINTEXT listener? (TEXTSTREAM_SECURITY_PROTOCOL)",
    "SSL": "does the listener require a client certificate (TEXTSTREAM_SSL_CERTFILE/TEXTSTREAM_SSL_KEYFILE), "
           "and is it a TLS listener (TEXTSTREAM_SECURITY_PROTOCOL)?",
    "SASL_SSL": "does the listener require a client certificate (TEXTSTREAM_SSL_CERTFILE/TEXTSTREAM_SSL_KEYFILE), "
                "and is it a SASL_SSL listener (TEXTSTREAM_SECURITY_PROTOCOL)?",
}


class _Client(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


async def start_client(client: _Client, bootstrap: str, security: ClientSecurity) -> None:
    """Start an aiokafka producer or consumer; when it cannot connect, stop it and raise the
    explained error of `unreachable`."""
    try:
        await client.start()
    except KafkaConnectionError as exc:
        await client.stop()
        raise await unreachable(bootstrap, security, exc) from None


async def unreachable(bootstrap: str, security: ClientSecurity, exc: BaseException) -> TextstreamError:
    """The error to raise when a client could not start: the explained authentication or TLS
    failure if there was one; a broker that accepts TCP but closes the Kafka connection (a
    protocol mismatch or a missing client certificate); else 'cannot reach Kafka'."""
    found = await diagnose(bootstrap, security)
    if found is not None:
        return found
    servers = [s.strip() for s in bootstrap.split(",")]
    if any([await _tcp_open(s) for s in servers]):
        return KafkaAuthError(f"Kafka at {bootstrap} accepts connections but closed ours ({security.describe()}): "
                              f"{_CLOSED_HINTS[security.protocol]}")
    return BrokerUnavailable(f"cannot reach Kafka at {bootstrap} ({security.describe()}): {exc} "
                             "(is the broker running? `textstream kafka start`)")

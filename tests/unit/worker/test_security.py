"""Kafka security without a broker: settings validation, the aiokafka keyword arguments, Faust's
credentials, TLS contexts from certificates made here with `openssl`, and the error messages."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
from aiokafka.errors import IllegalSaslStateError, SaslAuthenticationFailed, UnsupportedSaslMechanismError

from tests.pki import make_pki
from worker import security
from worker.config import describe, load_settings
from worker.errors import ConfigError
from worker.oauth import ClientCredentialsTokenProvider, FileTokenProvider, TokenError
from worker.security import ClientSecurity

SECURITY_VARS = ["TEXTSTREAM_SECURITY_PROTOCOL", "TEXTSTREAM_SASL_MECHANISM", "TEXTSTREAM_SASL_USERNAME",
                 "TEXTSTREAM_SASL_PASSWORD", "TEXTSTREAM_SSL_CAFILE", "TEXTSTREAM_SSL_CERTFILE",
                 "TEXTSTREAM_SSL_KEYFILE", "TEXTSTREAM_SSL_KEY_PASSWORD", "TEXTSTREAM_KAFKA_OAUTH_TOKEN_FILE",
                 "TEXTSTREAM_KAFKA_OAUTH_TOKEN_URL", "TEXTSTREAM_KAFKA_OAUTH_CLIENT_ID",
                 "TEXTSTREAM_KAFKA_OAUTH_CLIENT_SECRET", "TEXTSTREAM_KAFKA_OAUTH_SCOPE", "TEXTSTREAM_KAFKA_CONFIG_FILE"]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SECURITY_VARS:
        monkeypatch.delenv(name, raising=False)


# --- certificates -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_pki(tmp_path_factory.mktemp("pki"))


# --- settings -----------------------------------------------------------------------------------

def test_default_is_plaintext_without_credentials() -> None:
    s = load_settings()
    access = security.from_settings(s)
    assert access == security.PLAINTEXT
    assert access.kwargs() == {"security_protocol": "PLAINTEXT"}


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"TEXTSTREAM_SECURITY_PROTOCOL": "SASL_PLAINTEXT"}, "TEXTSTREAM_SASL_USERNAME: required"),
        ({"TEXTSTREAM_SECURITY_PROTOCOL": "SASL_SSL", "TEXTSTREAM_SASL_USERNAME": "u"},
         "TEXTSTREAM_SASL_PASSWORD: required with TEXTSTREAM_SECURITY_PROTOCOL=SASL_SSL"),
        ({"TEXTSTREAM_SASL_USERNAME": "u", "TEXTSTREAM_SASL_PASSWORD": "p"},
         "TEXTSTREAM_SECURITY_PROTOCOL: SASL credentials are set but the protocol is PLAINTEXT"),
        ({"TEXTSTREAM_SECURITY_PROTOCOL": "KERBEROS"}, "TEXTSTREAM_SECURITY_PROTOCOL='KERBEROS'"),
        ({"TEXTSTREAM_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "TEXTSTREAM_SASL_MECHANISM": "GSSAPI",
          "TEXTSTREAM_SASL_USERNAME": "u", "TEXTSTREAM_SASL_PASSWORD": "p"}, "TEXTSTREAM_SASL_MECHANISM='GSSAPI'"),
        ({"TEXTSTREAM_SECURITY_PROTOCOL": "SSL", "TEXTSTREAM_SSL_CAFILE": "/no/such/ca.pem"},
         "TEXTSTREAM_SSL_CAFILE='/no/such/ca.pem': no such file: /no/such/ca.pem"),
    ],
)
def test_invalid_security_settings_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], problem: str
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert problem in str(err.value)


def test_certificate_files_need_tls_and_a_key_needs_its_certificate(monkeypatch: pytest.MonkeyPatch,
                                                                     pki: Path) -> None:
    monkeypatch.setenv("TEXTSTREAM_SSL_CAFILE", str(pki / "ca.pem"))
    with pytest.raises(ConfigError, match="TEXTSTREAM_SSL_CAFILE set but the protocol is PLAINTEXT; use SSL"):
        load_settings()
    monkeypatch.setenv("TEXTSTREAM_SECURITY_PROTOCOL", "SSL")
    monkeypatch.setenv("TEXTSTREAM_SSL_KEYFILE", str(pki / "client.key"))
    with pytest.raises(ConfigError, match="TEXTSTREAM_SSL_CERTFILE: required with TEXTSTREAM_SSL_KEYFILE"):
        load_settings()


def test_password_is_never_shown(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    secret = "hunter2-secret"
    monkeypatch.setenv("TEXTSTREAM_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("TEXTSTREAM_SASL_USERNAME", "alice")
    monkeypatch.setenv("TEXTSTREAM_SASL_PASSWORD", secret)
    s = load_settings()
    assert secret not in repr(s) and secret not in str(s)
    access = security.from_settings(s)
    assert secret not in repr(access) and secret not in access.describe()
    assert access.describe() == "SASL_SSL/SCRAM-SHA-512 as alice"
    # a bad value of a secret is not echoed either
    monkeypatch.setenv("TEXTSTREAM_SASL_MECHANISM", "nope")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert secret not in str(err.value)
    defaults = {name: default for name, default, _ in describe()}
    assert defaults["TEXTSTREAM_SASL_PASSWORD"] == "unset" and defaults["TEXTSTREAM_SSL_KEY_PASSWORD"] == "unset"


def test_sasl_plaintext_kwargs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEXTSTREAM_SECURITY_PROTOCOL", "sasl_plaintext")
    monkeypatch.setenv("TEXTSTREAM_SASL_MECHANISM", "scram_sha_256")
    monkeypatch.setenv("TEXTSTREAM_SASL_USERNAME", "alice")
    monkeypatch.setenv("TEXTSTREAM_SASL_PASSWORD", "pw")
    access = security.from_settings(load_settings())
    assert access.kwargs() == {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-256",
                               "sasl_plain_username": "alice", "sasl_plain_password": "pw"}


def test_sasl_ssl_kwargs_carry_a_verifying_context(monkeypatch: pytest.MonkeyPatch, pki: Path) -> None:
    monkeypatch.setenv("TEXTSTREAM_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("TEXTSTREAM_SASL_USERNAME", "alice")
    monkeypatch.setenv("TEXTSTREAM_SASL_PASSWORD", "pw")
    monkeypatch.setenv("TEXTSTREAM_SSL_CAFILE", str(pki / "ca.pem"))
    kwargs = security.from_settings(load_settings()).kwargs()
    ctx = kwargs.pop("ssl_context")
    assert kwargs == {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
                      "sasl_plain_username": "alice", "sasl_plain_password": "pw"}
    assert isinstance(ctx, ssl.SSLContext)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname


def test_faust_credentials_map_back_to_the_same_aiokafka_kwargs(pki: Path) -> None:
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    from worker.app import broker_credentials

    ctx = security.ssl_context(pki / "ca.pem", pki / "client.pem", pki / "client.key")
    cases = [
        security.PLAINTEXT,
        ClientSecurity("SSL", ssl_context=ctx),
        ClientSecurity("SASL_PLAINTEXT", "SCRAM-SHA-512", "alice", "pw"),
        ClientSecurity("SASL_SSL", "SCRAM-SHA-256", "alice", "pw", ctx),
        ClientSecurity("SASL_PLAINTEXT", "PLAIN", "alice", "pw"),
        ClientSecurity("SASL_PLAINTEXT", "OAUTHBEARER", token_provider=FileTokenProvider(Path("/run/token"))),
        ClientSecurity("SASL_SSL", "OAUTHBEARER", ssl_context=ctx,
                       token_provider=ClientCredentialsTokenProvider("https://idp/token", "id", "secret")),
    ]
    for access in cases:
        faust_kwargs = dict(credentials_to_aiokafka_auth(broker_credentials(access)))
        ours = access.kwargs()
        if "ssl_context" not in ours:  # Faust passes ssl_context=None for SASL_PLAINTEXT
            assert faust_kwargs.pop("ssl_context", None) is None
        assert faust_kwargs == ours, access


# --- TLS ----------------------------------------------------------------------------------------

def _tls_server_context(pki: Path, cert: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki / "ca.pem"))
    ctx.load_cert_chain(str(pki / f"{cert}.pem"), str(pki / f"{cert}.key"))
    ctx.verify_mode = ssl.CERT_REQUIRED  # client certificates required, as a mutual-TLS Kafka listener does
    return ctx


async def _handshake(pki: Path, server_cert: str, client_ctx: ssl.SSLContext) -> str:
    """Handshake with a local TLS server that requires a client certificate; the client CN it saw."""
    seen: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peercert") or {}
        seen.extend(v for rdn in peer.get("subject", ()) for k, v in rdn if k == "commonName")
        writer.write(b"ok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=_tls_server_context(pki, server_cert))
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx)
        assert await reader.read(2) == b"ok"
        writer.close()
    finally:
        server.close()
        await server.wait_closed()
    return seen[0]


def test_client_certificate_is_presented_in_the_tls_handshake(pki: Path) -> None:
    ctx = security.ssl_context(pki / "ca.pem", pki / "client.pem", pki / "client.key")
    assert asyncio.run(_handshake(pki, "server", ctx)) == "textstream-client"


def test_encrypted_key_needs_its_password(monkeypatch: pytest.MonkeyPatch, pki: Path) -> None:
    ctx = security.ssl_context(pki / "ca.pem", pki / "client.pem", pki / "client-enc.key", "key-pw")
    assert asyncio.run(_handshake(pki, "server", ctx)) == "textstream-client"
    for env in ({"TEXTSTREAM_SSL_KEY_PASSWORD": "wrong"}, {}):
        for key, value in {"TEXTSTREAM_SECURITY_PROTOCOL": "SSL", "TEXTSTREAM_SSL_CAFILE": str(pki / "ca.pem"),
                           "TEXTSTREAM_SSL_CERTFILE": str(pki / "client.pem"),
                           "TEXTSTREAM_SSL_KEYFILE": str(pki / "client-enc.key"), **env}.items():
            monkeypatch.setenv(key, value)
        if not env:
            monkeypatch.delenv("TEXTSTREAM_SSL_KEY_PASSWORD")
        with pytest.raises(ConfigError, match="cannot load the client certificate and key"):
            # without a password OpenSSL would prompt on the terminal; a callable refuses instead
            security.from_settings(load_settings())


def test_key_of_another_certificate_is_refused(pki: Path) -> None:
    with pytest.raises(ConfigError, match="TEXTSTREAM_SSL_CERTFILE=.*client.pem.*do they belong together"):
        security.ssl_context(pki / "ca.pem", pki / "client.pem", pki / "server.key")


def test_garbage_ca_file_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match="TEXTSTREAM_SSL_CAFILE=.*not a usable PEM CA file"):
        security.ssl_context(bad)


def test_untrusted_broker_certificate_is_explained(pki: Path) -> None:
    """diagnose() connects like a Kafka client; a server signed by another CA fails verification."""
    ctx = security.ssl_context(pki / "ca.pem", pki / "client.pem", pki / "client.key")

    async def run() -> security.KafkaAuthError | None:
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0,
                                            ssl=_tls_server_context(pki, "stranger"))
        port = server.sockets[0].getsockname()[1]
        try:
            return await security.diagnose(f"127.0.0.1:{port}", ClientSecurity("SSL", ssl_context=ctx), timeout_s=5)
        finally:
            server.close()

    found = asyncio.run(run())
    assert found is not None
    assert "the broker's certificate is not trusted" in str(found) and "TEXTSTREAM_SSL_CAFILE" in str(found)


# --- messages -----------------------------------------------------------------------------------

def test_refused_login_names_user_mechanism_and_variables() -> None:
    access = ClientSecurity("SASL_PLAINTEXT", "SCRAM-SHA-512", "alice", "pw")
    exc = SaslAuthenticationFailed("Authentication failed due to invalid credentials with SASL mechanism SCRAM-SHA-512")
    msg = str(security.explain("kafka-1:9094", access, exc))
    assert msg.startswith("cannot authenticate to Kafka at kafka-1:9094 as alice (SASL_PLAINTEXT/SCRAM-SHA-512): ")
    assert "invalid credentials" in msg and msg.endswith("check TEXTSTREAM_SASL_USERNAME/TEXTSTREAM_SASL_PASSWORD")
    assert "TEXTSTREAM_SASL_MECHANISM" in str(security.explain("k:1", access, UnsupportedSaslMechanismError()))
    assert "TEXTSTREAM_SECURITY_PROTOCOL" in str(security.explain("k:1", access, IllegalSaslStateError()))
    assert security.explain("k:1", access, ConnectionRefusedError()) is None


def test_unreachable_broker_is_not_called_an_authentication_problem() -> None:
    from devkit.stack import free_ports

    port = free_ports(1)[0]  # nothing listens there
    access = ClientSecurity("SASL_PLAINTEXT", "SCRAM-SHA-512", "alice", "pw")
    err = asyncio.run(security.unreachable(f"127.0.0.1:{port}", access, OSError("refused")))
    assert isinstance(err, security.BrokerUnavailable)
    assert f"cannot reach Kafka at 127.0.0.1:{port} (SASL_PLAINTEXT/SCRAM-SHA-512 as alice)" in str(err)


def test_incomplete_client_security_is_refused() -> None:
    with pytest.raises(ConfigError):
        ClientSecurity("SASL_SSL", "SCRAM-SHA-512", "alice", "pw")  # no SSL context
    with pytest.raises(ConfigError):
        ClientSecurity("SASL_PLAINTEXT", "SCRAM-SHA-512", "alice")  # no password


# --- OAUTHBEARER ----------------------------------------------------------------------------------

def test_oauthbearer_with_a_token_file_gives_aiokafka_the_provider(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("opaque-token\n")
    monkeypatch.setenv("TEXTSTREAM_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("TEXTSTREAM_SASL_MECHANISM", "oauthbearer")
    monkeypatch.setenv("TEXTSTREAM_KAFKA_OAUTH_TOKEN_FILE", str(token))
    access = security.from_settings(load_settings())
    kwargs = access.kwargs()
    provider = kwargs.pop("sasl_oauth_token_provider")
    assert kwargs == {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "OAUTHBEARER"}
    assert isinstance(provider, FileTokenProvider) and provider.path == token
    assert asyncio.run(provider.token()) == "opaque-token"
    assert access.describe() == f"SASL_PLAINTEXT/OAUTHBEARER with token from TEXTSTREAM_KAFKA_OAUTH_TOKEN_FILE={token}"


def test_oauthbearer_client_credentials_never_show_the_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEXTSTREAM_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("TEXTSTREAM_SASL_MECHANISM", "OAUTHBEARER")
    monkeypatch.setenv("TEXTSTREAM_KAFKA_OAUTH_TOKEN_URL", "https://idp.example/oauth2/token")
    monkeypatch.setenv("TEXTSTREAM_KAFKA_OAUTH_CLIENT_ID", "textstream")
    monkeypatch.setenv("TEXTSTREAM_KAFKA_OAUTH_CLIENT_SECRET", "s3cret-4711")
    monkeypatch.setenv("TEXTSTREAM_KAFKA_OAUTH_SCOPE", "kafka")
    access = security.from_settings(load_settings())
    provider = access.kwargs()["sasl_oauth_token_provider"]
    assert isinstance(provider, ClientCredentialsTokenProvider)
    assert (provider.url, provider.client_id, provider.scope) == ("https://idp.example/oauth2/token", "textstream",
                                                                  "kafka")
    shown = access.describe() + repr(access) + repr(provider) + repr(load_settings())
    assert "s3cret-4711" not in shown
    assert "client textstream at TEXTSTREAM_KAFKA_OAUTH_TOKEN_URL=https://idp.example/oauth2/token" in shown


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({}, "TEXTSTREAM_KAFKA_OAUTH_TOKEN_FILE: OAUTHBEARER needs exactly one token source"),
        ({"TEXTSTREAM_KAFKA_OAUTH_TOKEN_FILE": "TOKEN", "TEXTSTREAM_KAFKA_OAUTH_TOKEN_URL": "https://idp/t",
          "TEXTSTREAM_KAFKA_OAUTH_CLIENT_ID": "c", "TEXTSTREAM_KAFKA_OAUTH_CLIENT_SECRET": "s"},
         "needs exactly one token source"),
        ({"TEXTSTREAM_KAFKA_OAUTH_TOKEN_FILE": "/no/such/token"},
         "TEXTSTREAM_KAFKA_OAUTH_TOKEN_FILE='/no/such/token': no such file"),
        ({"TEXTSTREAM_KAFKA_OAUTH_TOKEN_URL": "https://idp/t"},
         "TEXTSTREAM_KAFKA_OAUTH_CLIENT_ID: required with TEXTSTREAM_KAFKA_OAUTH_TOKEN_URL"),
        ({"TEXTSTREAM_KAFKA_OAUTH_TOKEN_URL": "ftp://idp/t", "TEXTSTREAM_KAFKA_OAUTH_CLIENT_ID": "c",
          "TEXTSTREAM_KAFKA_OAUTH_CLIENT_SECRET": "s"}, "TEXTSTREAM_KAFKA_OAUTH_TOKEN_URL: an http:// or https:// URL"),
        ({"TEXTSTREAM_KAFKA_OAUTH_TOKEN_FILE": "TOKEN", "TEXTSTREAM_KAFKA_OAUTH_CLIENT_ID": "c"},
         "TEXTSTREAM_KAFKA_OAUTH_TOKEN_URL: required with TEXTSTREAM_KAFKA_OAUTH_CLIENT_ID"),
        ({"TEXTSTREAM_KAFKA_OAUTH_TOKEN_FILE": "TOKEN", "TEXTSTREAM_SASL_USERNAME": "u",
          "TEXTSTREAM_SASL_PASSWORD": "p"}, "OAUTHBEARER logs in with a token, not TEXTSTREAM_SASL_USERNAME"),
        ({"TEXTSTREAM_KAFKA_OAUTH_TOKEN_FILE": "TOKEN", "TEXTSTREAM_SECURITY_PROTOCOL": "SSL"},
         "TEXTSTREAM_SASL_MECHANISM: TEXTSTREAM_KAFKA_OAUTH_TOKEN_FILE set but the mechanism is OAUTHBEARER over SSL"),
    ],
)
def test_bad_oauthbearer_settings_name_the_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                    env: dict[str, str], problem: str) -> None:
    (tmp_path / "TOKEN").write_text("t")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TEXTSTREAM_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("TEXTSTREAM_SASL_MECHANISM", "OAUTHBEARER")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert problem in str(info.value)
    assert "s3cret" not in str(info.value)


def test_refused_or_missing_token_is_explained_naming_the_setting(tmp_path: Path) -> None:
    access = ClientSecurity("SASL_PLAINTEXT", "OAUTHBEARER", token_provider=FileTokenProvider(tmp_path / "token"))
    refused = SaslAuthenticationFailed("[SaslAuthenticate] Authentication failed during authentication due to "
                                       "invalid credentials with SASL mechanism OAUTHBEARER")
    msg = str(security.explain("kafka-1:9094", access, refused))
    assert msg.startswith("cannot authenticate to Kafka at kafka-1:9094 (SASL_PLAINTEXT/OAUTHBEARER with token from "
                          f"TEXTSTREAM_KAFKA_OAUTH_TOKEN_FILE={tmp_path / 'token'}): the broker refused the token")
    assert msg.endswith("check TEXTSTREAM_KAFKA_OAUTH_TOKEN_FILE")
    missing = TokenError(f"cannot read the OAuth token (TEXTSTREAM_KAFKA_OAUTH_TOKEN_FILE={tmp_path / 'token'})")
    assert "cannot read the OAuth token (TEXTSTREAM_KAFKA_OAUTH_TOKEN_FILE=" in str(
        security.explain("kafka-1:9094", access, missing))
    with pytest.raises(ConfigError, match="needs a token provider"):
        ClientSecurity("SASL_PLAINTEXT", "OAUTHBEARER")

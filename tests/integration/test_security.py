"""Kafka security on a real broker: a SASL listener (SCRAM-SHA-512, and OAUTHBEARER with Kafka's
unsecured JWT validator) and a mutual-TLS listener, the worker and the client commands connecting
through them (also from a client properties file), and wrong credentials, a refused or expired
token or a missing client certificate stopping them at once with a message that says what to check
(instead of Faust retrying for ever)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from devkit import kafka_local
from devkit.stack import free_ports
from tests.integration.conftest import REPO, Stack, running_broker, stack_on
from tests.pki import KEY_PASSWORD, make_pki
from worker import client, security
from worker.oauth import FileTokenProvider

pytestmark = pytest.mark.integration

USER, PASSWORD = "textstream-worker", "scram-pw-4711"
WRONG = "not-the-password-0815"
GOOD = security.ClientSecurity("SASL_PLAINTEXT", "SCRAM-SHA-512", USER, PASSWORD)


@pytest.fixture(scope="module")
def scram_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[kafka_local.BrokerConfig]:
    """A broker of its own: PLAINTEXT for itself, SASL_PLAINTEXT with SCRAM-SHA-512 and OAUTHBEARER
    (unsigned JWTs) for the clients."""
    port, controller, sasl = free_ports(3)
    with running_broker(kafka_local.BrokerConfig(run_dir=tmp_path_factory.mktemp("kafka-scram"), port=port,
                                                 controller_port=controller, sasl_port=sasl,
                                                 scram_users=((USER, PASSWORD),), oauthbearer=True)) as cfg:
        yield cfg


@pytest.fixture
def sasl_stack(scram_broker: kafka_local.BrokerConfig, tiny_registry: Path, tmp_path: Path) -> Iterator[Stack]:
    bootstrap = kafka_local.sasl_bootstrap(scram_broker)
    assert bootstrap is not None
    with stack_on(bootstrap, tiny_registry, tmp_path) as s:
        yield s


def sasl_env(password: str = PASSWORD) -> dict[str, str]:
    return {"TEXTSTREAM_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "TEXTSTREAM_SASL_MECHANISM": "SCRAM-SHA-512",
            "TEXTSTREAM_SASL_USERNAME": USER, "TEXTSTREAM_SASL_PASSWORD": password}


def textstream(stack: Stack, *args: str, stdin: bytes = b"", password: str = PASSWORD,
               timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "commands", *args], cwd=REPO, input=stdin, capture_output=True,
                          env=stack.env(**sasl_env(password)), timeout=timeout)


async def read_all(bootstrap: str, topic: str, expected: int, timeout: float) -> list[client.Record]:
    records: list[client.Record] = []

    async def consume() -> None:
        async for rec in client.follow(bootstrap, [topic], security=GOOD, max_records=expected):
            records.append(rec)

    await asyncio.wait_for(consume(), timeout)
    return records


def test_worker_logs_in_with_scram_and_labels_end_to_end(sasl_stack: Stack) -> None:
    stack = sasl_stack
    values = [orjson.dumps({"id": f"sec-{i}", "text": f"The striker scored twice in the final, goal {i}."})
              for i in range(20)]
    sent = textstream(stack, "send", stdin=b"\n".join(values) + b"\n")  # `textstream send` over SCRAM
    assert sent.returncode == 0, sent.stderr.decode()
    assert b"sent 20 records" in sent.stderr

    worker = stack.start_worker(**sasl_env())
    # Ready = model loaded, partitions assigned by the group coordinator, and the lag probe (admin
    # client + consumer) answered: every client of the worker got through the SCRAM listener.
    stack.wait_ready(worker, timeout=120)
    labeled = asyncio.run(read_all(stack.bootstrap, stack.labeled, 20, timeout=90))
    assert sorted(orjson.loads(r.value or b"")["id"] for r in labeled) == sorted(f"sec-{i}" for i in range(20))
    assert stack.stop_worker(worker) == 0
    log = stack.logs()
    assert "security=SASL_PLAINTEXT/SCRAM-SHA-512 as textstream-worker" in log
    assert PASSWORD not in log


def test_wrong_password_stops_the_worker_with_a_clear_message(sasl_stack: Stack) -> None:
    stack = sasl_stack
    started = time.monotonic()
    worker = stack.start_worker(**sasl_env(WRONG))
    rc = worker.proc.wait(timeout=60)  # a hang or endless retry would time out here
    log = stack.logs()
    assert rc != 0, log
    assert (f"cannot authenticate to Kafka at {stack.bootstrap} as {USER} (SASL_PLAINTEXT/SCRAM-SHA-512)"
            in log), log
    assert "check TEXTSTREAM_SASL_USERNAME/TEXTSTREAM_SASL_PASSWORD" in log
    assert WRONG not in log
    print(f"worker refused in {time.monotonic() - started:.1f}s")


def test_wrong_password_fails_send_and_tail(sasl_stack: Stack) -> None:
    for args in (["send"], ["tail", "--max", "1", "--idle-timeout", "5"]):
        proc = textstream(sasl_stack, *args, stdin=b"hello\n", password=WRONG)
        err = proc.stderr.decode()
        assert proc.returncode == 2, err
        assert f"cannot authenticate to Kafka at {sasl_stack.bootstrap} as {USER}" in err
        assert WRONG not in err


def test_plaintext_client_on_the_scram_listener_is_told_what_to_check(sasl_stack: Stack) -> None:
    env = sasl_stack.env()  # no security settings: PLAINTEXT
    proc = subprocess.run([sys.executable, "-m", "commands", "send"], cwd=REPO, input=b"hello\n",
                          capture_output=True, env=env, timeout=60)
    assert proc.returncode == 2
    assert "TEXTSTREAM_SECURITY_PROTOCOL" in proc.stderr.decode()


# --- OAUTHBEARER --------------------------------------------------------------------------------

def oauth_properties(tmp_path: Path, token: str) -> Path:
    """A client properties file as a managed cluster hands it out, with the token in a file."""
    (tmp_path / "token").write_text(token)
    path = tmp_path / "client.properties"
    path.write_text("security.protocol=SASL_PLAINTEXT\nsasl.mechanism=OAUTHBEARER\n"
                    f"sasl.oauthbearer.token.endpoint.url=file://{tmp_path / 'token'}\n"
                    "sasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required;\n")
    return path


def test_worker_logs_in_with_oauthbearer_from_a_properties_file(sasl_stack: Stack, tmp_path: Path) -> None:
    stack = sasl_stack
    token = kafka_local.unsecured_jwt("textstream-oauth", 3600)
    props = oauth_properties(tmp_path, token)
    values = [orjson.dumps({"id": f"oauth-{i}", "text": f"The striker scored in extra time, match {i}."})
              for i in range(10)]
    sent = subprocess.run([sys.executable, "-m", "commands", "send", "--command-config", str(props)], cwd=REPO,
                          input=b"\n".join(values) + b"\n", capture_output=True, env=stack.env(), timeout=60)
    assert sent.returncode == 0, sent.stderr.decode()
    worker = stack.start_worker(TEXTSTREAM_KAFKA_CONFIG_FILE=str(props))
    # Ready: every client of the worker (Faust's consumer and producer, admin, lag probe) logged in.
    stack.wait_ready(worker, timeout=120)
    access = security.ClientSecurity("SASL_PLAINTEXT", "OAUTHBEARER",
                                     token_provider=FileTokenProvider(tmp_path / "token"))

    async def read() -> list[client.Record]:
        return [r async for r in client.follow(stack.bootstrap, [stack.labeled], security=access, max_records=10)]

    labeled = asyncio.run(asyncio.wait_for(read(), 90))
    assert sorted(orjson.loads(r.value or b"")["id"] for r in labeled) == sorted(f"oauth-{i}" for i in range(10))
    assert stack.stop_worker(worker) == 0
    log = stack.logs()
    assert (f"security=SASL_PLAINTEXT/OAUTHBEARER with token from TEXTSTREAM_KAFKA_OAUTH_TOKEN_FILE={tmp_path}/token"
            in log), log
    assert token not in log


def test_refused_or_expired_token_stops_the_client_naming_the_setting(sasl_stack: Stack, tmp_path: Path) -> None:
    props = oauth_properties(tmp_path, "not-a-jwt")  # the broker's validator refuses it
    worker = sasl_stack.start_worker(TEXTSTREAM_KAFKA_CONFIG_FILE=str(props))
    rc = worker.proc.wait(timeout=60)  # a hang or endless retry would time out here
    log = sasl_stack.logs()
    assert rc != 0, log
    assert (f"cannot authenticate to Kafka at {sasl_stack.bootstrap} (SASL_PLAINTEXT/OAUTHBEARER with token from "
            f"TEXTSTREAM_KAFKA_OAUTH_TOKEN_FILE={tmp_path}/token): the broker refused the token") in log, log
    assert "check TEXTSTREAM_KAFKA_OAUTH_TOKEN_FILE" in log

    (tmp_path / "token").write_text(kafka_local.unsecured_jwt("textstream-oauth", -60))
    proc = subprocess.run([sys.executable, "-m", "commands", "send", "-F", str(props)], cwd=REPO, input=b"hello\n",
                          capture_output=True, env=sasl_stack.env(), timeout=60)
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    assert f"the OAuth token in TEXTSTREAM_KAFKA_OAUTH_TOKEN_FILE={tmp_path}/token expired at" in err, err


# --- mutual TLS -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory, pki: Path) -> Iterator[kafka_local.BrokerConfig]:
    """PLAINTEXT for the broker itself, SSL with required client certificates for the clients."""
    port, controller, tls = free_ports(3)
    with running_broker(kafka_local.BrokerConfig(run_dir=tmp_path_factory.mktemp("kafka-tls"), port=port,
                                                 controller_port=controller, ssl_port=tls,
                                                 ssl_keystore=pki / "server-keystore.pem",
                                                 ssl_truststore=pki / "ca.pem")) as cfg:
        yield cfg


@pytest.fixture
def tls_stack(tls_broker: kafka_local.BrokerConfig, tiny_registry: Path, tmp_path: Path) -> Iterator[Stack]:
    bootstrap = kafka_local.ssl_bootstrap(tls_broker)
    assert bootstrap is not None
    with stack_on(bootstrap, tiny_registry, tmp_path) as s:
        yield s


def test_worker_with_a_client_certificate_labels_end_to_end(tls_stack: Stack, pki: Path) -> None:
    stack = tls_stack
    env = {"TEXTSTREAM_SECURITY_PROTOCOL": "SSL", "TEXTSTREAM_SSL_CAFILE": str(pki / "ca.pem"),
           "TEXTSTREAM_SSL_CERTFILE": str(pki / "client.pem"), "TEXTSTREAM_SSL_KEYFILE": str(pki / "client-enc.key"),
           "TEXTSTREAM_SSL_KEY_PASSWORD": KEY_PASSWORD}
    access = security.ClientSecurity("SSL", ssl_context=security.ssl_context(
        pki / "ca.pem", pki / "client.pem", pki / "client-enc.key", KEY_PASSWORD))
    values = [orjson.dumps({"id": f"tls-{i}", "text": f"Shares fell as the bank raised rates, day {i}."})
              for i in range(10)]
    assert asyncio.run(client.send_values(stack.bootstrap, stack.raw, values, security=access)) == 10
    worker = stack.start_worker(**env)
    stack.wait_ready(worker, timeout=120)

    async def read() -> list[client.Record]:
        return [r async for r in client.follow(stack.bootstrap, [stack.labeled], security=access, max_records=10)]

    labeled = asyncio.run(asyncio.wait_for(read(), 90))
    assert sorted(orjson.loads(r.value or b"")["id"] for r in labeled) == sorted(f"tls-{i}" for i in range(10))
    assert stack.stop_worker(worker) == 0
    assert "security=SSL" in stack.logs() and KEY_PASSWORD not in stack.logs()


def test_worker_without_a_client_certificate_is_told_so(tls_stack: Stack, pki: Path) -> None:
    worker = tls_stack.start_worker(TEXTSTREAM_SECURITY_PROTOCOL="SSL", TEXTSTREAM_SSL_CAFILE=str(pki / "ca.pem"))
    rc = worker.proc.wait(timeout=60)
    log = tls_stack.logs()
    assert rc != 0, log
    assert f"Kafka at {tls_stack.bootstrap} accepts connections but closed ours (SSL)" in log, log
    assert "TEXTSTREAM_SSL_CERTFILE" in log


def test_untrusted_broker_certificate_stops_the_worker(tls_stack: Stack, pki: Path) -> None:
    worker = tls_stack.start_worker(TEXTSTREAM_SECURITY_PROTOCOL="SSL", TEXTSTREAM_SSL_CAFILE=str(pki / "other-ca.pem"),
                                    TEXTSTREAM_SSL_CERTFILE=str(pki / "client.pem"),
                                    TEXTSTREAM_SSL_KEYFILE=str(pki / "client.key"))
    rc = worker.proc.wait(timeout=60)
    log = tls_stack.logs()
    assert rc != 0, log
    assert "the broker's certificate is not trusted" in log and "check TEXTSTREAM_SSL_CAFILE" in log, log

"""OAUTHBEARER token providers without a broker: the token file read again at every login, expired
and missing tokens refused naming the setting, and the client-credentials grant against a token
endpoint served here (aiohttp), with its reuse until 80 % of the lifetime and its errors."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from devkit.kafka_local import unsecured_jwt
from worker.oauth import ClientCredentialsTokenProvider, FileTokenProvider, TokenError, jwt_claims


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_the_file_is_read_again_at_every_login(tmp_path: Path) -> None:
    path = tmp_path / "token"
    provider = FileTokenProvider(path)
    path.write_text("first-token\n")
    assert asyncio.run(provider.token()) == "first-token"
    path.write_text("  rotated-token  \n")  # the kubelet (or a sidecar) replaced it
    assert asyncio.run(provider.token()) == "rotated-token"


def test_an_expired_jwt_is_refused_naming_the_file(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "token"
    path.write_text(unsecured_jwt("worker", 60, now=clock.now))
    provider = FileTokenProvider(path, clock=clock)
    assert jwt_claims(provider.read()) == {"sub": "worker", "iat": 1_000_000, "exp": 1_000_060}
    clock.now += 61
    with pytest.raises(TokenError) as info:
        asyncio.run(provider.token())
    assert str(info.value) == (f"the OAuth token in TEXTSTREAM_KAFKA_OAUTH_TOKEN_FILE={path} expired at "
                               "1970-01-12T13:47:40Z (1 s ago): is whatever refreshes the file running?")
    path.write_text(unsecured_jwt("worker", 60, now=clock.now))  # refreshed: accepted again
    assert asyncio.run(provider.token()).count(".") == 2


@pytest.mark.parametrize(("content", "message"), [(None, "cannot read the OAuth token"),
                                                  ("\n \n", "the OAuth token file is empty")])
def test_missing_or_empty_token_file_is_refused(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "token"
    if content is not None:
        path.write_text(content)
    with pytest.raises(TokenError, match=message) as info:
        asyncio.run(FileTokenProvider(path).token())
    assert f"TEXTSTREAM_KAFKA_OAUTH_TOKEN_FILE={path}" in str(info.value)


def test_opaque_tokens_are_sent_as_they_are(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("not.a.jwt")  # three parts, but no JSON claims: not checked, the broker decides
    assert jwt_claims("not.a.jwt") is None
    assert asyncio.run(FileTokenProvider(path).token()) == "not.a.jwt"


# --- client credentials ---------------------------------------------------------------------------

Handler = Callable[[web.Request], Coroutine[Any, Any, web.StreamResponse]]


async def _serve(handler: Handler) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_post("/oauth2/token", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}/oauth2/token"


@contextlib.asynccontextmanager
async def endpoint(requests: list[dict[str, str]], answers: list[tuple[int, dict[str, Any]]]
                    ) -> AsyncIterator[str]:
    async def token(request: web.Request) -> web.StreamResponse:
        form = await request.post()
        requests.append({"authorization": request.headers.get("Authorization", ""),
                         **{k: str(v) for k, v in form.items()}})
        status, body = answers[min(len(requests), len(answers)) - 1]
        return web.json_response(body, status=status)

    runner, url = await _serve(token)
    try:
        yield url
    finally:
        await runner.cleanup()


def test_client_credentials_grant_and_reuse_until_80_percent_of_the_lifetime() -> None:
    requests: list[dict[str, str]] = []
    answers = [(200, {"access_token": "tok-1", "token_type": "bearer", "expires_in": 100}),
               (200, {"access_token": "tok-2", "token_type": "bearer", "expires_in": 100})]
    clock = Clock()

    async def run() -> list[str]:
        got = []
        async with endpoint(requests, answers) as url:
            provider = ClientCredentialsTokenProvider(url, "textstream", "s3cret", "kafka", clock=clock)
            got += await asyncio.gather(*(provider.token() for _ in range(5)))  # one request for all
            clock.now += 79
            got.append(await provider.token())
            clock.now += 2  # past 80 s of 100
            got.append(await provider.token())
        return got

    assert asyncio.run(run()) == ["tok-1"] * 6 + ["tok-2"]
    assert len(requests) == 2
    basic = "Basic " + base64.b64encode(b"textstream:s3cret").decode()
    assert requests[0] == {"authorization": basic, "grant_type": "client_credentials", "scope": "kafka"}


def test_a_jwt_without_expires_in_is_refreshed_by_its_exp() -> None:
    clock = Clock()
    requests: list[dict[str, str]] = []
    answers = [(200, {"access_token": unsecured_jwt("w", 50, now=clock.now)}),
               (200, {"access_token": "second"})]

    async def run() -> list[str]:
        async with endpoint(requests, answers) as url:
            provider = ClientCredentialsTokenProvider(url, "c", "s", clock=clock)
            first = await provider.token()
            clock.now += 39
            again = await provider.token()
            clock.now += 2  # 41 s of 50: past 80 %
            return [first == again, await provider.token()]  # type: ignore[list-item]

    assert asyncio.run(run()) == [True, "second"]
    assert "scope" not in requests[0]


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [(401, {"error": "invalid_client", "error_description": "bad secret"},
      "refused the client credentials (HTTP 401: invalid_client bad secret); check "
      "TEXTSTREAM_KAFKA_OAUTH_CLIENT_ID/TEXTSTREAM_KAFKA_OAUTH_CLIENT_SECRET/TEXTSTREAM_KAFKA_OAUTH_SCOPE"),
     (200, {"token_type": "bearer"}, "answered without an access_token")],
)
def test_token_endpoint_errors_name_the_endpoint_and_settings(status: int, body: dict[str, Any],
                                                              message: str) -> None:
    async def run() -> str:
        async with endpoint([], [(status, body)]) as url:
            with pytest.raises(TokenError) as info:
                await ClientCredentialsTokenProvider(url, "textstream", "s3cret-4711").token()
            assert "s3cret-4711" not in str(info.value)
            return str(info.value)

    msg = asyncio.run(run())
    assert "the OAuth token endpoint TEXTSTREAM_KAFKA_OAUTH_TOKEN_URL=http://127.0.0.1:" in msg
    assert "(client textstream)" in msg and message in msg


def test_unreachable_token_endpoint_is_a_token_error() -> None:
    from devkit.stack import free_ports

    (port,) = free_ports(1)
    provider = ClientCredentialsTokenProvider(f"http://127.0.0.1:{port}/token", "c", "s")
    with pytest.raises(TokenError, match=f"cannot reach the OAuth token endpoint .*127.0.0.1:{port}"):
        asyncio.run(provider.token())


# --- the OAUTHBEARER exchange -----------------------------------------------------------------------

def test_a_refused_token_challenge_is_answered_so_the_broker_says_why(tmp_path: Path) -> None:
    from aiokafka import conn

    from worker import oauth

    oauth.install()
    assert conn.OAuthAuthenticator is oauth._Authenticator
    path = tmp_path / "token"
    path.write_text("tok")

    async def exchange(challenge: bytes) -> list[object]:
        auth = conn.OAuthAuthenticator(sasl_oauth_token_provider=FileTokenProvider(path))
        return [await auth.step(None), await auth.step(challenge), await auth.step(b"")]

    first = (b"n,,\x01auth=Bearer tok\x01\x01", True)
    # accepted: the broker answers with nothing, and the exchange is over
    assert asyncio.run(exchange(b""))[:2] == [first, None]
    # refused: the error challenge gets the lone %x01; the broker's answer to it is the failure
    assert asyncio.run(exchange(b'{"status":"invalid_token"}')) == [first, (b"\x01", True), None]


def test_one_provider_serves_logins_from_several_event_loops() -> None:
    """The worker's Faust consumer logs in from a thread with its own loop, the rest from the main one."""
    provider = ClientCredentialsTokenProvider("http://idp/token", "c", "s")
    fetched: list[int] = []

    async def fake_fetch() -> tuple[str, float]:
        await asyncio.sleep(0.01)  # the other logins of this loop wait on the lock meanwhile
        fetched.append(1)
        return f"tok-{len(fetched)}", 0.0  # due again at once

    provider._fetch = fake_fetch  # type: ignore[method-assign]

    async def logins() -> list[str]:
        return list(await asyncio.gather(*(provider.token() for _ in range(3))))

    assert asyncio.run(logins()) == ["tok-1", "tok-2", "tok-3"]
    assert asyncio.run(logins()) == ["tok-4", "tok-5", "tok-6"]  # another loop: no "bound to a different loop"

"""Tokens for SASL/OAUTHBEARER: aiokafka asks its `sasl_oauth_token_provider` for one at every
login (each new connection), so a provider must always answer with a token that is still valid.

- `FileTokenProvider` (TEXTSTREAM_KAFKA_OAUTH_TOKEN_FILE): the token is whatever another process
  keeps in a file (a Kubernetes projected service-account token, a sidecar, a cron job). The file
  is read again at every login, so a rotated token is used from the next connection on; a JWT whose
  `exp` has passed is refused here, naming the file, instead of being sent to be refused by the broker.
- `ClientCredentialsTokenProvider` (TEXTSTREAM_KAFKA_OAUTH_TOKEN_URL, _CLIENT_ID, _CLIENT_SECRET,
  _SCOPE): the OAuth 2.0 client-credentials grant (RFC 6749 4.4) against the identity provider's
  token endpoint, client id and secret as HTTP Basic authentication, as Kafka's Java client does.
  A token is reused until 80 % of its lifetime has passed (Kafka's sasl.login.refresh.window.factor).

Neither checks a signature: that is the broker's job. The token and the secret are never logged.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiokafka import conn as aiokafka_conn
from aiokafka.abc import AbstractTokenProvider
from aiokafka.errors import KafkaError

from worker.errors import TextstreamError

REFRESH_FACTOR = 0.8  # Kafka's sasl.login.refresh.window.factor
DEFAULT_LIFETIME_S = 300.0  # an endpoint's token without expires_in nor a JWT exp: fetched again after 4 min
HTTP_TIMEOUT_S = 10.0


class TokenError(TextstreamError, KafkaError):  # type: ignore[misc]  # aiokafka ships no stubs
    """No usable token: the message names the setting to check. A KafkaError, so that aiokafka
    treats it as the failed connection it is (and retries a reconnect) instead of crashing."""

    retriable = True
    __str__ = Exception.__str__  # the message alone (KafkaError prefixes the class name)


class _Authenticator(aiokafka_conn.OAuthAuthenticator):  # type: ignore[misc]  # aiokafka ships no stubs
    """aiokafka 0.14.0's OAUTHBEARER exchange, completed. A broker that refuses the token does not
    answer with an error at once: it sends an error challenge ({"status":"invalid_token"}) and waits
    for the client's lone %x01 (RFC 7628 3.2.3). aiokafka sends nothing and counts itself logged
    in; the next request finds no usable answer (a worker on the test broker died with
    NodeNotReadyError after "No broker metadata found"). Answering the challenge makes the broker fail the exchange with its reason, which
    aiokafka raises as SaslAuthenticationFailed (explained by worker/security.py)."""

    _challenge_answered = False

    async def step(self, payload: bytes | None) -> tuple[bytes, bool] | None:
        if self._token_sent and payload and not self._challenge_answered:
            self._challenge_answered = True
            return b"\x01", True
        result: tuple[bytes, bool] | None = await super().step(payload)
        return result


def install() -> None:
    """Use `_Authenticator` for every OAUTHBEARER login (aiokafka looks the class up at each login)."""
    aiokafka_conn.OAuthAuthenticator = _Authenticator


def jwt_claims(token: str) -> dict[str, Any] | None:
    """The claims of a JWT (unverified), or None when `token` is not a JWT (opaque tokens are allowed)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = orjson.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError):
        return None
    return claims if isinstance(claims, dict) else None


def _expiry(claims: dict[str, Any] | None) -> float | None:
    exp = (claims or {}).get("exp")
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None


def _when(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class FileTokenProvider(AbstractTokenProvider):  # type: ignore[misc]  # aiokafka ships no stubs
    setting = "TEXTSTREAM_KAFKA_OAUTH_TOKEN_FILE"

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock

    def describe(self) -> str:
        return f"token from {self.setting}={self.path}"

    def read(self) -> str:
        try:
            token = self.path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise TokenError(f"cannot read the OAuth token ({self.setting}={self.path}): {exc}") from None
        if not token:
            raise TokenError(f"the OAuth token file is empty ({self.setting}={self.path})")
        exp = _expiry(jwt_claims(token))
        now = self._clock()
        if exp is not None and exp <= now:
            raise TokenError(f"the OAuth token in {self.setting}={self.path} expired at {_when(exp)} "
                             f"({now - exp:.0f} s ago): is whatever refreshes the file running?")
        return token

    async def token(self) -> str:
        return await asyncio.to_thread(self.read)


class ClientCredentialsTokenProvider(AbstractTokenProvider):  # type: ignore[misc]  # aiokafka ships no stubs
    setting = "TEXTSTREAM_KAFKA_OAUTH_TOKEN_URL"

    def __init__(self, url: str, client_id: str, client_secret: str, scope: str | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.url, self.client_id, self.scope = url, client_id, scope
        self._secret = client_secret
        self._clock = clock
        self._token: str | None = None
        self._refresh_at = 0.0
        # One lock per event loop: the worker's Faust consumer runs in a thread with a loop of its
        # own, and an asyncio.Lock may only ever wait in one loop.
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()

    def __repr__(self) -> str:
        return f"ClientCredentialsTokenProvider({self.url!r}, client_id={self.client_id!r})"

    def describe(self) -> str:
        return f"client {self.client_id} at {self.setting}={self.url}"

    async def token(self) -> str:
        lock = self._locks.setdefault(asyncio.get_running_loop(), asyncio.Lock())
        async with lock:  # connections of one loop logging in at once share one request
            if self._token is None or self._clock() >= self._refresh_at:
                self._token, self._refresh_at = await self._fetch()
            return self._token

    async def _fetch(self) -> tuple[str, float]:
        form = {"grant_type": "client_credentials"} | ({"scope": self.scope} if self.scope else {})
        where = f"the OAuth token endpoint {self.setting}={self.url} (client {self.client_id})"
        started = self._clock()
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)) as http, \
                    http.post(self.url, data=form, auth=aiohttp.BasicAuth(self.client_id, self._secret),
                              headers={"Accept": "application/json"}) as resp:
                body = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TokenError(f"cannot reach {where}: {type(exc).__name__} {exc}".rstrip()) from None
        try:
            answer = orjson.loads(body)
        except orjson.JSONDecodeError:
            answer = None
        if not isinstance(answer, dict):
            answer = {}
        if status != 200:
            why = " ".join(str(answer[k]) for k in ("error", "error_description") if k in answer) or f"HTTP {status}"
            raise TokenError(f"{where} refused the client credentials (HTTP {status}: {why}); check "
                             "TEXTSTREAM_KAFKA_OAUTH_CLIENT_ID/TEXTSTREAM_KAFKA_OAUTH_CLIENT_SECRET/"
                             "TEXTSTREAM_KAFKA_OAUTH_SCOPE")
        token = answer.get("access_token")
        if not isinstance(token, str) or not token:
            raise TokenError(f"{where} answered without an access_token")
        lifetime = answer.get("expires_in")
        if not isinstance(lifetime, int | float) or isinstance(lifetime, bool) or lifetime <= 0:
            exp = _expiry(jwt_claims(token))
            lifetime = exp - started if exp is not None and exp > started else DEFAULT_LIFETIME_S
        return token, started + REFRESH_FACTOR * float(lifetime)

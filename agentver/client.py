"""The voice-agent runtime's client: the exact config a call was served, configs by hash from a
local cache (a config blob never changes), and the call's analysis when it ends.

    async with AgentverClient(router_url=..., admin_url=..., token=RUNTIME_TOKEN) as agentver:
        served = await agentver.call_config(call_id)        # CallConfig, .config is the dict
        config = await agentver.config(served.config_hash)  # from the cache, no request
        await agentver.post_analysis(call_id, sentiment="positive", automated=True)

Every request has a timeout; a 5xx, a refused connection or a timeout is retried with jittered
exponential backoff, and what still fails is `Unavailable`. A 4xx is never retried: it raises
`NotFound`, `Unauthorized` or `InvalidRequest`, carrying the service's error code, message and
field paths.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
import random
import re
from collections import OrderedDict
from dataclasses import dataclass
from functools import partial
from types import TracebackType
from typing import Any, Literal
from urllib.parse import quote

import aiohttp

from store.config import config_hash as hash_of

Sentiment = Literal["positive", "neutral", "negative"]

# Seconds per attempt. The router answers a lookup in milliseconds and gives Postgres 0.25 s on a
# cache miss; a call is ringing meanwhile, so a slower answer is better retried than awaited.
DEFAULT_TIMEOUT_S = 2.0
# Attempts in all: with the backoff below, a lookup gives up after about 0.3 s of waiting plus
# the attempts' own time, before the caller notices silence on the line.
DEFAULT_ATTEMPTS = 3
# Seconds: the first retry waits 0.05-0.1 s, each next twice as long, never more than 1 s.
BACKOFF_BASE_S = 0.1
BACKOFF_MAX_S = 1.0
# Config blobs kept: one per agent version a runtime serves; a blob is a few KB, up to hundreds.
CONFIG_CACHE_SIZE = 256
CONFIG_HASH = re.compile(r"^[0-9a-f]{64}$")
USER_AGENT = "agentver-client/0.1"


class AgentverError(Exception):
    """Anything this client raises about the service."""


class ApiError(AgentverError):
    """The service answered with an error: its status, code, message and details."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.details = status, code, message, details


class NotFound(ApiError):
    """404: no such call or config (or, with a scoped token, not one this token may see)."""


class Unauthorized(ApiError):
    """401 or 403: the token is missing, unknown, revoked, expired or of too low a role."""


class InvalidRequest(ApiError):
    """Another 4xx, e.g. 422 with `details` naming each refused field's path."""


class Unavailable(AgentverError):
    """Every attempt failed with a 5xx, a timeout or a connection error; `last` says how the
    last one did."""

    def __init__(self, what: str, attempts: int, last: str) -> None:
        super().__init__(f"{what}: unavailable after {attempts} attempts, last: {last}")
        self.attempts, self.last = attempts, last


class ConfigMismatch(AgentverError):
    """A config's content does not hash to the hash it was served under: never cached."""


@dataclass(frozen=True)
class CallConfig:
    """What a call was served: the `config` itself and where it came from."""

    call_id: str
    agent_id: str
    version: int | None
    draft_revision: int | None
    config_hash: str
    config: dict[str, Any]

    @property
    def version_label(self) -> str:
        """The version as the TwiML `version` parameter writes it: a number, or `draft`."""
        return "draft" if self.version is None else str(self.version)


def _error(status: int, body: bytes) -> ApiError:
    """The exception for a 4xx answer, from the service's `{"error": {...}}` body if it has one."""
    try:
        error = json.loads(body)["error"]
        code, message, details = str(error["code"]), str(error["message"]), error.get("details")
    except (ValueError, KeyError, TypeError):
        code, message, details = "http_error", body[:200].decode(errors="replace"), None
    kind = {404: NotFound, 401: Unauthorized, 403: Unauthorized}.get(status, InvalidRequest)
    return kind(status, code, message, details)


def _json(raw: bytes, url: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        raise AgentverError(f"{url} answered something that is not JSON") from None


def _checked(digest: str, config: Any) -> dict[str, Any]:
    if not isinstance(config, dict) or hash_of(config) != digest:
        raise ConfigMismatch(f"the config served as {digest} does not hash to it")
    return config


class AgentverClient:
    """One per runtime process; safe to share between its concurrent calls."""

    def __init__(
        self,
        *,
        router_url: str,
        admin_url: str,
        token: str,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        attempts: int = DEFAULT_ATTEMPTS,
        cache_size: int = CONFIG_CACHE_SIZE,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self._router = router_url.rstrip("/")
        self._admin = admin_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}", "User-Agent": USER_AGENT}
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._attempts = attempts
        self._cache_size = cache_size
        self._configs: OrderedDict[str, dict[str, Any]] = OrderedDict()
        # One request per hash however many calls start on it at once.
        self._loading: dict[str, asyncio.Task[dict[str, Any]]] = {}
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> AgentverClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def call_config(self, call_id: str) -> CallConfig:
        """The exact config `call_id` was served (the router's `GET /v1/calls/{id}/config`);
        its config joins the cache, so `config(hash)` needs no request afterwards."""
        body = await self._request(
            "GET", f"{self._router}/v1/calls/{quote(call_id, safe='')}/config"
        )
        _checked(body["config_hash"], body["config"])
        # The fields this client knows; a newer service may answer more.
        served = CallConfig(**{f.name: body[f.name] for f in dataclasses.fields(CallConfig)})
        self._remember(served.config_hash, copy.deepcopy(served.config))
        return served

    async def config(self, config_hash: str) -> dict[str, Any]:
        """The config stored under `config_hash`, from the cache when it is there (a blob is
        immutable, so it never goes stale). A copy: changing it changes no other caller's."""
        if not CONFIG_HASH.match(config_hash):
            raise ValueError("a config hash is 64 lowercase hex digits")
        config = self._configs.get(config_hash)
        if config is not None:
            self._configs.move_to_end(config_hash)
        else:
            loading = self._loading.get(config_hash)
            if loading is None:
                loading = self._loading[config_hash] = asyncio.create_task(self._load(config_hash))
                loading.add_done_callback(partial(self._loaded, config_hash))
            # A waiter that gives up must not cancel the load the others wait for.
            config = await asyncio.shield(loading)
        return copy.deepcopy(config)

    async def post_analysis(
        self,
        call_id: str,
        *,
        sentiment: Sentiment,
        automated: bool,
        fields: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Record the call's results (the admin service's `POST /v1/calls/{id}/analysis`);
        returns the call. A re-post replaces the analysis, so a retry is harmless."""
        body = {"sentiment": sentiment, "automated": automated, "fields": fields or {}}
        url = f"{self._admin}/v1/calls/{quote(call_id, safe='')}/analysis"
        call: dict[str, Any] = await self._request("POST", url, body)
        return call

    async def _load(self, digest: str) -> dict[str, Any]:
        config = _checked(digest, await self._request("GET", f"{self._router}/v1/configs/{digest}"))
        self._remember(digest, config)
        return config

    def _loaded(self, digest: str, task: asyncio.Task[dict[str, Any]]) -> None:
        del self._loading[digest]
        # Retrieved here so that a failure nobody awaited any more is not logged as lost.
        if not task.cancelled():
            task.exception()

    def _remember(self, digest: str, config: dict[str, Any]) -> None:
        self._configs[digest] = config
        self._configs.move_to_end(digest)
        while len(self._configs) > self._cache_size:
            self._configs.popitem(last=False)

    async def _request(self, method: str, url: str, body: Any = None) -> Any:
        """The JSON answer of a 2xx; retried on 5xx, timeouts and connection errors."""
        if self._session is None:
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)
        last = ""
        for attempt in range(1, self._attempts + 1):
            if attempt > 1:
                delay = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** (attempt - 2))
                await asyncio.sleep(delay * (0.5 + random.random() / 2))  # noqa: S311 (jitter)
            try:
                async with self._session.request(method, url, json=body) as resp:
                    raw = await resp.read()
                    if resp.status < 300:
                        return _json(raw, url)
                    if resp.status < 500:
                        raise _error(resp.status, raw)
                    last = f"HTTP {resp.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                last = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise Unavailable(f"{method} {url}", self._attempts, last)

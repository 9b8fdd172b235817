"""Process settings, read once from the environment and passed explicitly everywhere."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/agentver"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
# The variable holding each provider's webhook secret; while it is unset, that provider's
# webhooks are refused (and the refusal names it).
WEBHOOK_SECRET_VARIABLES = {
    "twilio": "TWILIO_AUTH_TOKEN",
    "telnyx": "TELNYX_PUBLIC_KEY",
    "generic": "AGENTVER_GENERIC_SECRET",
}


@dataclass(frozen=True)
class Settings:
    """Everything a router or admin process needs to know about its surroundings."""

    database_url: str = DEFAULT_DATABASE_URL
    # The change feed's LISTEN connection, when it cannot share DATABASE_URL's path: LISTEN does
    # not work through a pooler in transaction mode (PgBouncer's), so such a deployment gives the
    # feed a direct path to Postgres. None: DATABASE_URL (see `feed_url`).
    change_feed_url: str | None = None
    redis_url: str = DEFAULT_REDIS_URL
    # Every Redis key starts with this, so test runs and deployments never share keys.
    redis_prefix: str = "agentver:"
    # Where both services listen: every interface, as in a container; `make run` sets
    # 127.0.0.1 so a development stack is not reachable from the network.
    host: str = "0.0.0.0"  # noqa: S104 (a server's bind address, set by AGENTVER_HOST)
    router_port: int = 8080
    admin_port: int = 8081
    public_base_url: str = "http://127.0.0.1:8080"
    media_stream_url: str = "wss://localhost/media"
    twilio_auth_token: str | None = None
    telnyx_public_key: str | None = None
    generic_secret: str | None = None
    telnyx_api_key: str | None = None
    telnyx_api_base: str = "https://api.telnyx.com/v2"
    bootstrap_token: str | None = None
    fallback: str = "say:Sorry, this number cannot take your call right now. Goodbye."
    spool_dir: Path = Path(".data/spool")
    # Seconds between the admin process's rollout scheduler passes (store/rollouts.py `tick`):
    # how late a broken guardrail may roll back or a due step be taken. 0: no scheduler here.
    rollout_tick_s: float = 5.0
    # Seconds between the admin process's rollup compactions (store/rollups.py `compact`): each
    # rollups read aggregates the calls recorded since the last one, and a longer interval
    # folds more calls a group for less Postgres CPU a call (docs/design.md section 12). 0: no
    # compaction in this process (another admin process compacts).
    rollup_compact_s: float = 1.0
    # Group-commit batches a router worker commits at once (router/recorder.py): one keeps the
    # batches large and Postgres' CPU per call low; a Postgres host with cores to spare for a
    # worker's commits may take more (docs/design.md section 6).
    call_writers: int = 1
    # Seconds a worker keeps a per-version metric series that counts nothing (the router's
    # calls routed and call durations, the admin service's analyses): dropped after one to two
    # of these (httpkit/tally.py `forget_idle`), so a worker's scrape does not grow with every
    # version it ever served. 0 keeps every series.
    metric_series_idle_s: float = 3600.0
    # Days a call is kept at least: whole months are dropped once they ended this long ago
    # (store/partitions.py); the rollups keep their aggregates. None keeps every call.
    call_retention_days: int | None = None

    @property
    def feed_url(self) -> str:
        """Where the change feed listens: AGENTVER_CHANGE_FEED_URL, else DATABASE_URL."""
        return self.change_feed_url or self.database_url

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        """Build settings from environment variables (the README's configuration table)."""
        e = dict(os.environ if env is None else env)

        def opt(name: str) -> str | None:
            return e.get(name) or None

        return cls(
            database_url=e.get("DATABASE_URL") or DEFAULT_DATABASE_URL,
            change_feed_url=opt("AGENTVER_CHANGE_FEED_URL"),
            redis_url=e.get("REDIS_URL") or DEFAULT_REDIS_URL,
            redis_prefix=e.get("AGENTVER_REDIS_PREFIX") or cls.redis_prefix,
            host=e.get("AGENTVER_HOST") or cls.host,
            router_port=int(e.get("AGENTVER_ROUTER_PORT") or cls.router_port),
            admin_port=int(e.get("AGENTVER_ADMIN_PORT") or cls.admin_port),
            public_base_url=(e.get("AGENTVER_PUBLIC_BASE_URL") or cls.public_base_url).rstrip("/"),
            media_stream_url=e.get("AGENTVER_MEDIA_STREAM_URL") or cls.media_stream_url,
            twilio_auth_token=opt(WEBHOOK_SECRET_VARIABLES["twilio"]),
            telnyx_public_key=opt(WEBHOOK_SECRET_VARIABLES["telnyx"]),
            generic_secret=opt(WEBHOOK_SECRET_VARIABLES["generic"]),
            telnyx_api_key=opt("TELNYX_API_KEY"),
            telnyx_api_base=(e.get("AGENTVER_TELNYX_API_BASE") or cls.telnyx_api_base).rstrip("/"),
            bootstrap_token=opt("AGENTVER_BOOTSTRAP_TOKEN"),
            fallback=e.get("AGENTVER_FALLBACK") or cls.fallback,
            spool_dir=Path(e.get("AGENTVER_SPOOL_DIR") or cls.spool_dir),
            rollout_tick_s=_seconds(e, "AGENTVER_ROLLOUT_TICK_S", cls.rollout_tick_s),
            rollup_compact_s=_seconds(e, "AGENTVER_ROLLUP_COMPACT_S", cls.rollup_compact_s),
            call_writers=_positive(e, "AGENTVER_CALL_WRITERS", 1),
            metric_series_idle_s=_seconds(
                e, "AGENTVER_METRIC_SERIES_IDLE_S", cls.metric_series_idle_s
            ),
            call_retention_days=_positive(e, "AGENTVER_CALL_RETENTION_DAYS", None),
        )


def _seconds(env: dict[str, str], name: str, default: float) -> float:
    """A duration setting of 0 or more seconds, `default` when unset; ValueError naming the
    variable otherwise."""
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0 <= value < math.inf:
        raise ValueError(f"{name} must be a number of seconds, 0 or more, not {raw!r}")
    return value


def _positive(env: dict[str, str], name: str, default: T) -> int | T:
    """An integer setting of at least 1, `default` when unset; ValueError naming the variable
    otherwise."""
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{name} must be a whole number of at least 1, not {raw!r}")
    return value

"""The token lifecycle: listed without secrets, optional expiry, revocation reaching a running
router and admin within seconds, last-used times written in batches, the CLI, and hostile input
to every write."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from httpkit.keys import USAGE
from httpkit.token_cache import TOKEN_TTL_S
from tests.conftest import AgentFactory, Api
from tests.polling import eventually
from tests.router_fixtures import RouterClient

# Seconds within which every worker must refuse a revoked token (the bound).
REVOKED_WITHIN_S = 5.0


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def new_token(api: Api, **body: Any) -> dict[str, Any]:
    made: dict[str, Any] = await api.ok(
        "POST", "/v1/tokens", 201, json={"name": "t", "role": "viewer", **body}
    )
    return made


async def whoami(api: Api, secret: str) -> int:
    resp = await api.call("GET", "/v1/whoami", role=None, headers=bearer(secret))
    return resp.status


async def test_the_list_shows_every_token_but_never_a_secret(api: Api) -> None:
    made = await new_token(api, name="ci", role="publisher", expires_in=3600)
    listed = await api.ok("GET", "/v1/tokens")
    by_id = {t["id"]: t for t in listed["items"]}
    assert set(by_id) >= {made["id"]} and len(by_id) == len(api.tokens) + 1
    expected = {k: v for k, v in made.items() if k != "token"}
    assert by_id[made["id"]] == expected
    text = str(listed)
    assert made["token"] not in text and "token_hash" not in text
    assert not any(secret in text for secret in api.tokens.values())
    assert all(set(t) == set(expected) for t in listed["items"])


async def test_a_token_expires(api: Api, pool: asyncpg.Pool) -> None:
    made = await new_token(api, expires_in=2)
    expires_at = datetime.fromisoformat(made["expires_at"])
    assert timedelta(seconds=1) < expires_at - datetime.now(UTC) <= timedelta(seconds=2)
    assert await whoami(api, made["token"]) == 200
    await eventually(lambda: whoami(api, made["token"]), lambda s: s == 401, within_s=5.0)
    never = await new_token(api)
    assert never["expires_at"] is None and await whoami(api, never["token"]) == 200


async def test_an_expired_token_is_refused_by_a_router_that_cached_it(
    api: Api, router: RouterClient
) -> None:
    made = await new_token(api, role="runtime", expires_in=2)
    expires_at = datetime.fromisoformat(made["expires_at"])
    resolve = "/v1/resolve?to=%2B14155550100"

    async def status() -> int:
        return (await router.get(resolve, headers=bearer(made["token"]))).status

    assert await status() == 200  # now cached, for TOKEN_TTL_S (5 s) > its 2 s of life
    await eventually(status, lambda s: s == 401, within_s=4.0)
    # Refused at its expiry, not when the cached entry would have been asked about again.
    assert datetime.now(UTC) - expires_at < timedelta(seconds=1)


async def _refused_after(probe: Any) -> float:
    started = time.monotonic()
    await eventually(probe, lambda status: status == 401, within_s=REVOKED_WITHIN_S)
    return time.monotonic() - started


async def test_a_revoked_token_is_refused_by_a_running_router_and_admin_within_5_s(
    api: Api, router: RouterClient
) -> None:
    made = await new_token(api, role="runtime")
    resolve = "/v1/resolve?to=%2B14155550100"

    async def on_router() -> int:
        return (await router.get(resolve, headers=bearer(made["token"]))).status

    assert await on_router() == 200  # validated, and now in the router's token cache
    assert await whoami(api, made["token"]) == 200
    revoked = await api.ok("POST", f"/v1/tokens/{made['id']}/revoke")
    assert revoked["revoked_at"] is not None
    router_s = await _refused_after(on_router)
    admin_s = await _refused_after(lambda: whoami(api, made["token"]))
    print(f"revoked token refused after: router {router_s:.3f} s, admin {admin_s:.3f} s")
    # The feed carried it: well before the token cache's TTL would have.
    assert router_s < TOKEN_TTL_S / 2
    listed = await api.ok("GET", "/v1/tokens")
    assert next(t for t in listed["items"] if t["id"] == made["id"]) == revoked


async def test_last_used_times_are_written_in_batches(api: Api, pool: asyncpg.Pool) -> None:
    made = await new_token(api)
    rows_before = await _token_updates(pool)
    for _ in range(20):
        assert await whoami(api, made["token"]) == 200
    # Twenty requests, not one write yet...
    assert await _last_used(pool, made["id"]) is None
    assert await _token_updates(pool) == rows_before
    await api.client.app[USAGE].flush(pool)
    # ...then one write for all of them: a row per token used (this one, and the admin's that
    # created it), not per request.
    used = await _last_used(pool, made["id"])
    assert used is not None and datetime.now(UTC) - used < timedelta(seconds=5)
    assert await _token_updates(pool) == rows_before + 2
    listed = await api.ok("GET", "/v1/tokens")
    assert next(t for t in listed["items"] if t["id"] == made["id"])["last_used_at"] is not None


async def _last_used(pool: asyncpg.Pool, token_id: int) -> datetime | None:
    used: datetime | None = await pool.fetchval(
        "SELECT last_used_at FROM api_tokens WHERE id = $1", token_id
    )
    return used


async def _token_updates(pool: asyncpg.Pool) -> int:
    """Rows updated in api_tokens so far (the statistics collector's count, flushed first)."""
    await pool.execute("SELECT pg_stat_force_next_flush()")
    count: int = await pool.fetchval(
        "SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = 'api_tokens'"
    )
    return count


# --- hostile input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"expires_in": 0}, "expires_in"),
        ({"expires_in": -5}, "expires_in"),
        ({"expires_in": "1h"}, "expires_in"),
        ({"expires_in": 1.5}, "expires_in"),
        ({"expires_in": True}, "expires_in"),
        ({"expires_in": 10**12}, "expires_in"),
        ({"scopes": []}, "scopes"),
        ({"scopes": "agt_x"}, "scopes"),
        ({"scopes": [1]}, "scopes[0]"),
        ({"scopes": [""]}, "scopes[0]"),
        ({"scopes": ["agt_\x00"]}, "scopes[0]"),
        ({"scopes": ["agt_x"] * 101}, "scopes"),
        ({"scopes": ["agt_unknown"]}, "scopes[0]"),
    ],
)
async def test_a_bad_token_request_is_422_with_its_path(
    api: Api, pool: asyncpg.Pool, body: dict[str, Any], path: str
) -> None:
    before = await pool.fetchval("SELECT count(*) FROM api_tokens")
    answer = await api.ok("POST", "/v1/tokens", 422, json={"name": "t", "role": "viewer", **body})
    assert path in [d["path"] for d in answer["error"]["details"]], answer
    assert await pool.fetchval("SELECT count(*) FROM api_tokens") == before


async def test_scopes_name_existing_agents_once_each(api: Api, make_agent: AgentFactory) -> None:
    agent = await make_agent()
    twice = await api.ok(
        "POST", "/v1/tokens", 422, json={"name": "t", "role": "viewer", "scopes": [agent["id"]] * 2}
    )
    assert twice["error"]["details"] == [{"path": "scopes", "message": "must not repeat an agent"}]
    other = await api.ok(
        "POST",
        "/v1/tokens",
        422,
        json={"name": "t", "role": "viewer", "scopes": [agent["id"], "agt_gone"]},
    )
    assert other["error"]["details"] == [{"path": "scopes[1]", "message": "no agent agt_gone"}]
    made = await new_token(api, scopes=[agent["id"]])
    assert made["scopes"] == [agent["id"]]


async def test_revoking_twice_or_an_unknown_token(api: Api) -> None:
    made = await new_token(api)
    # Two revocations at once: one revokes, the other is told it was revoked already.
    first, second = await asyncio.gather(
        *(api.call("POST", f"/v1/tokens/{made['id']}/revoke") for _ in range(2))
    )
    assert sorted([first.status, second.status]) == [200, 409]
    again = await api.ok("POST", f"/v1/tokens/{made['id']}/revoke", 409)
    assert again["error"]["code"] == "token_revoked"
    for unknown in ("999999999", "0", "abc", "-1", "1e3", "99999999999999999999"):
        missing = await api.ok("POST", f"/v1/tokens/{unknown}/revoke", 404)
        assert missing["error"]["code"] == "token_not_found", unknown


async def test_a_scoped_admin_cannot_manage_tokens(api: Api, make_agent: AgentFactory) -> None:
    agent = await make_agent()
    scoped = await new_token(api, role="admin", scopes=[agent["id"]])
    for method, path in (("GET", "/v1/tokens"), ("POST", "/v1/tokens")):
        resp = await api.call(
            method,
            path,
            role=None,
            headers=bearer(scoped["token"]),
            json={"name": "x", "role": "admin"},
        )
        assert resp.status == 403, path
    resp = await api.call(
        "POST", f"/v1/tokens/{scoped['id']}/revoke", role=None, headers=bearer(scoped["token"])
    )
    assert resp.status == 403


# --- the command line ------------------------------------------------------------------------


async def _cli(database_url: str, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "admin",
        "token",
        *args,
        env={**os.environ, "DATABASE_URL": database_url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_the_cli_creates_lists_and_revokes(
    api: Api, database_url: str, make_agent: AgentFactory
) -> None:
    agent = await make_agent()
    code, out, err = await _cli(
        database_url,
        "create",
        "--name",
        "bot",
        "--role",
        "runtime",
        "--expires-in",
        "12h",
        "--scope",
        agent["id"],
    )
    assert code == 0, err
    secret = out.strip()
    assert await whoami(api, secret) == 200
    code, out, err = await _cli(database_url, "list")
    assert code == 0, err
    header, *rows = out.strip().splitlines()
    assert header.split("\t")[:4] == ["id", "name", "role", "scopes"]
    bot = next(r.split("\t") for r in rows if r.split("\t")[1] == "bot")
    assert bot[2:4] == ["runtime", agent["id"]] and bot[5] != "-" and bot[7] == "-"
    assert secret not in out
    code, out, err = await _cli(database_url, "revoke", bot[0])
    assert code == 0 and out.split("\t")[7].strip() != "-", (out, err)
    assert await whoami(api, secret) == 401
    code, _, err = await _cli(database_url, "revoke", bot[0])
    assert code == 1 and "was revoked at" in err
    code, _, err = await _cli(database_url, "revoke", "999999")
    assert code == 1 and "no token 999999" in err


@pytest.mark.parametrize("expires_in", ["0", "-1", "soon", "1w", "99999d", ""])
async def test_the_cli_refuses_a_bad_expiry(database_url: str, expires_in: str) -> None:
    code, _, err = await _cli(
        database_url, "create", "--name", "x", "--role", "viewer", "--expires-in", expires_in
    )
    assert code == 2 and "--expires-in" in err


async def test_the_cli_refuses_an_unknown_scope(database_url: str, pool: asyncpg.Pool) -> None:
    code, _, err = await _cli(
        database_url, "create", "--name", "x", "--role", "viewer", "--scope", "agt_nope"
    )
    assert code == 1 and "no agent agt_nope" in err
    assert await pool.fetchval("SELECT count(*) FROM api_tokens WHERE name = 'x'") == 0

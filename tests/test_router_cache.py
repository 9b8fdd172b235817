"""The layered cache and the change feed: shared invalidation, single flight, resync after a
lost feed, and sticky A/B assignments that survive weight changes."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from router.keys import FEED, RESOLVER, SNAPSHOTS
from store import codecs
from store.channels import Variant
from store.draw import draw_point, pick
from store.feed import APPLICATION_NAME
from store.settings import Settings
from tests.call_rows import lose_agent
from tests.conftest import AgentFactory, Api, variant
from tests.polling import eventually
from tests.router_fixtures import (
    CALLER,
    CHANNEL,
    DRAW_SALT,
    RoutedChannel,
    RouterClient,
    RouterFactory,
    Webhooks,
    WebhooksTo,
    list_calls,
    metric,
    pin,
    postgres_loads,
)

FEED_BACKEND = """
SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND datname = current_database()
"""
TERMINATE_FEED = """
SELECT pg_terminate_backend(pid) FROM pg_stat_activity
WHERE application_name = $1 AND datname = current_database()
"""


async def test_two_routers_see_a_pin_change_through_the_feed(
    api: Api, make_pinned_agent: AgentFactory, start_router: RouterFactory
) -> None:
    agent = await make_pinned_agent(versions=2, pinned=1)
    routers = [await start_router(), await start_router()]
    for r in routers:  # warm both caches
        assert (await r.app[RESOLVER].routing(CHANNEL)) is not None

    await pin(api, {"agent_id": agent["id"], "version": 2})

    async def both_on_v2() -> bool:
        routings = [await r.app[RESOLVER].routing(CHANNEL) for r in routers]
        return all(x is not None and x.variants[0].version == 2 for x in routings)

    await eventually(both_on_v2)


async def test_cache_hits_read_no_database(
    make_pinned_agent: AgentFactory, start_router: RouterFactory, webhooks_to: WebhooksTo
) -> None:
    await make_pinned_agent(versions=1, pinned=1)
    # Started after the pin, so the pin's own notification cannot land after the first call
    # and invalidate what it cached; the warm-up has the routing and the version already.
    router = await start_router()
    webhooks = webhooks_to(router)
    for n in range(5):
        await webhooks.twilio_call(f"CA-hot-{n}")
    assert (postgres_loads(router, "routing"), postgres_loads(router, "version")) == (0.0, 0.0)


async def test_concurrent_misses_cause_one_load(
    make_pinned_agent: AgentFactory, start_router: RouterFactory
) -> None:
    # Started first: a channel that exists at start-up is preloaded, never missed.
    router = await start_router()
    await make_pinned_agent(versions=1, pinned=1)
    resolver = router.app[RESOLVER]
    routings = await asyncio.gather(*(resolver.routing(CHANNEL) for _ in range(50)))
    assert all(r == routings[0] for r in routings)
    assert postgres_loads(router, "routing") == 1


async def test_undecodable_redis_entry_is_a_miss(
    make_pinned_agent: AgentFactory,
    webhooks: Webhooks,
    router: RouterClient,
    redis_client: aioredis.Redis,
) -> None:
    agent = await make_pinned_agent(versions=1, pinned=1)
    version_key = router.app[SNAPSHOTS].key(codecs.VERSION, f"{agent['id']}:1")
    await redis_client.set(version_key, b"\xc1garbage")

    answer = await webhooks.twilio_call("CA-garbage")

    assert answer["version"] == "1"
    labels = {"kind": "version", "tier": "redis", "result": "decode_error"}
    assert metric(router, "agentver_cache_lookups_total", labels) == 1


def test_the_feed_listens_through_database_url_unless_given_its_own() -> None:
    direct, pooled = "postgresql://db:5432/agentver", "postgresql://pgbouncer:6432/agentver"
    assert Settings.from_env({"DATABASE_URL": pooled}).feed_url == pooled
    env = {"DATABASE_URL": pooled, "AGENTVER_CHANGE_FEED_URL": direct}
    assert Settings.from_env(env).feed_url == direct


async def test_lost_feed_drops_mutable_entries_and_resyncs(
    api: Api,
    make_pinned_agent: AgentFactory,
    router: RouterClient,
    pool: asyncpg.Pool,
    redis_client: aioredis.Redis,
) -> None:
    agent = await make_pinned_agent(versions=1, pinned=1)
    snapshots, resolver = router.app[SNAPSHOTS], router.app[RESOLVER]

    async def cached() -> bool:
        # Repeated: the pin's own notification may still drop the first load.
        await resolver.routing(CHANNEL)
        return snapshots.mutable_l1_size() == 1

    await eventually(cached)
    # A mutable entry a worker may have written before an outage nobody saw.
    stale_key = snapshots.key(codecs.ROUTING, "+15550002222")
    await redis_client.set(stale_key, codecs.encode_routing(None))

    await pool.execute(TERMINATE_FEED, APPLICATION_NAME)

    async def dropped() -> bool:
        return snapshots.mutable_l1_size() == 0

    await eventually(dropped)

    async def resynced() -> bool:
        return router.app[FEED].connected.is_set() and snapshots.trusted

    await eventually(resynced)
    assert await redis_client.exists(stale_key) == 0
    # And the feed works again: a re-pin reaches this worker.
    await resolver.routing(CHANNEL)
    await pin(api, {"agent_id": agent["id"], "version": None})

    async def on_draft() -> bool:
        routing = await resolver.routing(CHANNEL)
        return routing is not None and routing.variants[0].version is None

    await eventually(on_draft)


async def test_a_lost_feed_makes_the_writer_look_up_the_agents_it_knew(
    make_pinned_agent: AgentFactory, router: RouterClient, webhooks: Webhooks, pool: asyncpg.Pool
) -> None:
    agent = await make_pinned_agent(versions=1, pinned=1)
    await webhooks.twilio_call("CA-known")
    await lose_agent(pool, agent["id"])
    await webhooks.twilio_call("CA-trusted")  # its agent and config blob known: not looked up
    feed = await pool.fetchval(FEED_BACKEND, APPLICATION_NAME)

    await pool.execute(TERMINATE_FEED, APPLICATION_NAME)

    async def listening_again() -> bool:
        backend = await pool.fetchval(FEED_BACKEND, APPLICATION_NAME)
        return backend not in (None, feed) and router.app[FEED].connected.is_set()

    await eventually(listening_again)
    params = {"CallSid": "CA-refused", "From": CALLER, "To": CHANNEL, "CallStatus": "ringing"}
    answer = await (await webhooks.twilio("/webhooks/twilio/voice", params)).text()
    assert "<Stream" not in answer  # the fallback: the record names an agent that is gone
    recorded = await pool.fetch("SELECT provider_call_id FROM calls ORDER BY started_at")
    assert [r["provider_call_id"] for r in recorded] == ["CA-known", "CA-trusted"]


# Callers new to the channel, and the variant each draws with DRAW_SALT at a 10 / b 90 (a while
# u < 0.1); u worked out by hand (tests/router_fixtures.py).
NEWCOMERS_AT_10_90 = {
    "+16465550000": "b",  # u 0.496597
    "+16465550001": "a",  # u 0.009182
    "+16465550002": "b",  # u 0.929246
    "+16465550003": "b",  # u 0.889850
    "+16465550004": "b",  # u 0.271815
    "+16465550005": "a",  # u 0.086245
    "+16465550006": "a",  # u 0.067039
    "+16465550007": "b",  # u 0.850131
    "+16465550008": "b",  # u 0.470480
    "+16465550009": "b",  # u 0.337803
}


async def test_same_caller_keeps_their_variant_after_a_weight_change(
    make_agent: AgentFactory, webhooks: Webhooks, channel: RoutedChannel
) -> None:
    a, b = await make_agent(versions=1), await make_agent(versions=1)

    def ab(weight_a: int, weight_b: int) -> dict[str, Any]:
        return {"variants": [variant(a, "a", 1, weight_a), variant(b, "b", 1, weight_b)]}

    async def call_all(round_: str, callers: list[str]) -> dict[str, str]:
        return {
            c: (await webhooks.twilio_call(f"CA-{round_}-{c}", caller=c))["agent_id"]
            for c in callers
        }

    routing = await channel.pin_with_draw_salt(ab(50, 50))
    assert routing["sticky"] == "caller"
    callers = [f"+1212555{n:04d}" for n in range(40)]
    first = await call_all("1", callers)
    assert set(first.values()) == {a["id"], b["id"]}
    assert await call_all("2", callers) == first

    await channel.pin(ab(10, 90))  # the feed delivered the new weights
    assert await call_all("3", callers) == first
    # New callers follow the new weights (the channel keeps its salt across changes).
    agent_of = {"a": a["id"], "b": b["id"]}
    assert await call_all("new", list(NEWCOMERS_AT_10_90)) == {
        c: agent_of[label] for c, label in NEWCOMERS_AT_10_90.items()
    }

    await channel.pin(ab(0, 100))  # a loses all weight: redrawn to b...
    assert set((await call_all("4", callers)).values()) == {b["id"]}
    await channel.pin(ab(50, 50))  # ...and b is what they keep from then on
    assert set((await call_all("5", callers)).values()) == {b["id"]}


# Callers and the variant each draws with DRAW_SALT at control 80 / draft 20 (control while
# u < 0.8); u worked out by hand (tests/router_fixtures.py).
CALLERS_AT_80_20 = {
    "+17185550000": "control",  # u 0.346444
    "+17185550001": "control",  # u 0.340064
    "+17185550002": "control",  # u 0.101582
    "+17185550003": "control",  # u 0.351533
    "+17185550004": "control",  # u 0.116936
    "+17185550005": "control",  # u 0.609546
    "+17185550006": "control",  # u 0.259713
    "+17185550007": "control",  # u 0.021245
    "+17185550008": "draft",  # u 0.835303
    "+17185550009": "control",  # u 0.034891
    "+17185550010": "control",  # u 0.297986
    "+17185550011": "control",  # u 0.517831
    "+17185550012": "draft",  # u 0.851113
    "+17185550013": "control",  # u 0.692283
    "+17185550014": "draft",  # u 0.950343
    "+17185550015": "control",  # u 0.328939
    "+17185550016": "control",  # u 0.547328
    "+17185550017": "draft",  # u 0.866283
}


async def test_split_of_real_calls_follows_the_pure_draw(
    api: Api, make_agent: AgentFactory, webhooks: Webhooks, channel: RoutedChannel
) -> None:
    agent = await make_agent(versions=1)
    variants = [variant(agent, "control", 1, 80), variant(agent, "draft", None, 20)]
    await channel.pin_with_draw_salt({"variants": variants})
    pure = [Variant(v["label"], v["agent_id"], v["version"], v["weight"]) for v in variants]
    callers = [f"+1718555{n:04d}" for n in range(1200)]
    # Over many distinct callers the pure draw splits 80/20 (sd 1.2 points at n = 1200)...
    split = Counter(pick(pure, draw_point(DRAW_SALT, c)).label for c in callers)
    assert abs(split["control"] / len(callers) - 0.8) < 0.05
    # ...and real webhook calls land exactly where the hand-worked draw says.
    for c, label in CALLERS_AT_80_20.items():
        answer = await webhooks.generic_call(f"g-{c}", caller=c)
        assert answer["version"] == ("draft" if label == "draft" else "1"), c
    calls = {c["from"]: c["variant"] for c in await list_calls(api)}
    assert calls == CALLERS_AT_80_20


# Provider call ids and the variant each draws with DRAW_SALT at v1 50 / draft 50 (v1 while
# u < 0.5); u worked out by hand (tests/router_fixtures.py).
CALL_IDS_AT_50_50 = {
    "g-call-0": "draft",  # u 0.521882
    "g-call-1": "draft",  # u 0.680097
    "g-call-2": "draft",  # u 0.809053
    "g-call-3": "draft",  # u 0.632024
    "g-call-4": "v1",  # u 0.167193
    "g-call-5": "draft",  # u 0.759724
    "g-call-6": "draft",  # u 0.606478
    "g-call-7": "v1",  # u 0.391739
    "g-call-8": "v1",  # u 0.413140
    "g-call-9": "draft",  # u 0.575160
}


async def test_sticky_call_draws_per_provider_call_id(
    make_agent: AgentFactory, webhooks: Webhooks, channel: RoutedChannel
) -> None:
    agent = await make_agent(versions=1)
    variants = [variant(agent, "v1", 1, 50), variant(agent, "draft", None, 50)]
    await channel.pin_with_draw_salt({"variants": variants, "sticky": "call"})
    for call_id, label in CALL_IDS_AT_50_50.items():
        answer = await webhooks.generic_call(call_id)
        assert answer["version"] == ("draft" if label == "draft" else "1"), call_id


async def test_resolve_dry_run_explains_and_records_nothing(
    api: Api,
    make_agent: AgentFactory,
    webhooks: Webhooks,
    router: RouterClient,
    channel: RoutedChannel,
) -> None:
    agent = await make_agent(versions=1)
    body = {"variants": [variant(agent, "a", 1, 50), variant(agent, "b", None, 50)]}
    await channel.pin_with_draw_salt(body)
    auth = api.bearer("runtime")
    url = "/v1/resolve?to=%2B1%20415%20555%200100&from=%2B12125550123"

    fresh = await (await router.get(url, headers=auth)).json()
    assert await list_calls(api) == []
    assert fresh["rule"] == "draw" and fresh["channel"] == CHANNEL
    # By hand: sha256("hand-checked-salt:+12125550123") starts 0d9114ba58192868, u 0.052995.
    assert fresh["u"] == 0x0D9114BA58192868 / 2**64
    assert fresh["variant"] == fresh["drawn"] == "a"

    await webhooks.twilio_call("CA-remember")
    body["variants"][0 if fresh["variant"] == "b" else 1]["weight"] = 100
    body["variants"][1 if fresh["variant"] == "b" else 0]["weight"] = 1
    await channel.pin(body)
    remembered = await (await router.get(url, headers=auth)).json()
    assert (remembered["rule"], remembered["variant"]) == ("remembered", fresh["variant"])

    unknown = await (await router.get("/v1/resolve?to=%2B15550009999", headers=auth)).json()
    assert unknown == {
        "to": "+15550009999",
        "from": "",
        "rule": "fallback",
        "reason": "unknown_number",
    }
    assert (await router.get("/v1/resolve", headers=auth)).status == 400
    assert (await router.get(url)).status == 401

"""The two baselines the router is measured against, run by the same benchmark on the same
machine: `python -m loadtests.baselines ceiling|naive` (port in AGENTVER_ROUTER_PORT).

- ceiling: a bare aiohttp app that reads the webhook and answers a constant TwiML (and, for the
  runtime lookup, a constant JSON body the size of a real one). Nothing this stack serves can be
  faster.
- naive: the router a team writes first. Every call verifies the signature, reads the channel's
  routing and the snapshot from Postgres, draws the variant and inserts the call record in its
  own transaction (one commit per call), then answers TwiML.

Both run on the same event loop as the router (uvloop when installed), so ratios compare the
designs, not the loops.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from urllib.parse import parse_qsl
from xml.sax.saxutils import quoteattr

import asyncpg
from aiohttp import web

from loadtests.procstat import new_loop
from router.signatures import verify_twilio
from store.channels import Variant
from store.draw import draw_point, pick

POOL = web.AppKey("pool", asyncpg.Pool)
STREAM_URL = "wss://media.bench.example/stream"
CEILING_TWIML = (
    '<?xml version="1.0" encoding="UTF-8"?><Response><Connect>'
    f'<Stream url="{STREAM_URL}"><Parameter name="call_id" value="call_0" />'
    '<Parameter name="agent_id" value="agt_0" /><Parameter name="version" value="1" />'
    f'<Parameter name="config_hash" value="{"0" * 64}" /></Stream></Connect></Response>'
)

NAIVE_ROUTING = """
SELECT c.salt, c.revision, v.label, v.agent_id, v.version, v.weight
FROM channels c JOIN channel_variants v ON v.number = c.number
WHERE c.number = $1 ORDER BY v.position
"""
NAIVE_VERSION = "SELECT config_hash FROM versions WHERE agent_id = $1 AND version = $2"
NAIVE_DRAFT = "SELECT revision, config_hash FROM drafts WHERE agent_id = $1"
# The call's key first, as the router's statement does (migration 0011).
NAIVE_INSERT = """
WITH key AS (
    INSERT INTO call_keys (provider, provider_call_id, call_id, started_at)
    VALUES ('twilio', $2, $1, $11)
)
INSERT INTO calls (call_id, provider, provider_call_id, channel, from_number, agent_id, version,
                   draft_revision, config_hash, variant, routing_revision, started_at)
VALUES ($1, 'twilio', $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
"""


async def ceiling_voice(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(text=CEILING_TWIML, content_type="application/xml")


def ceiling_app(config_body_bytes: int) -> web.Application:
    body = b'{"config": "' + b"x" * max(0, config_body_bytes - 14) + b'"}'

    async def config(_request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_post("/webhooks/twilio/voice", ceiling_voice)
    app.router.add_get("/v1/calls/{call_id}/config", config)
    return app


def _twiml(call_id: str, agent_id: str, version: int | None, config_hash: str) -> str:
    params = {
        "call_id": call_id,
        "agent_id": agent_id,
        "version": "draft" if version is None else str(version),
        "config_hash": config_hash,
    }
    inner = "".join(
        f"<Parameter name={quoteattr(k)} value={quoteattr(v)} />" for k, v in params.items()
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?><Response><Connect>'
        f"<Stream url={quoteattr(STREAM_URL)}>{inner}</Stream></Connect></Response>"
    )


async def naive_voice(request: web.Request) -> web.Response:
    raw = await request.read()
    pairs = parse_qsl(raw.decode(), keep_blank_values=True)
    url = os.environ["AGENTVER_PUBLIC_BASE_URL"] + request.raw_path
    token = os.environ["TWILIO_AUTH_TOKEN"]
    if verify_twilio(token, url, pairs, request.headers.get("X-Twilio-Signature")) is not None:
        raise web.HTTPForbidden()
    params = dict(pairs)
    to, caller, sid = params["To"], params["From"], params["CallSid"]
    async with request.app[POOL].acquire() as conn:
        rows = await conn.fetch(NAIVE_ROUTING, to)
        if not rows:
            return web.Response(text="<Response><Hangup/></Response>", content_type="text/xml")
        variants = [Variant(r["label"], r["agent_id"], r["version"], r["weight"]) for r in rows]
        chosen = pick(variants, draw_point(rows[0]["salt"], caller))
        revision, digest = None, None
        if chosen.version is None:
            snap = await conn.fetchrow(NAIVE_DRAFT, chosen.agent_id)
            revision, digest = snap["revision"], snap["config_hash"]
        else:
            digest = await conn.fetchval(NAIVE_VERSION, chosen.agent_id, chosen.version)
        call_id = "call_" + secrets.token_hex(12)
        await conn.execute(
            NAIVE_INSERT,
            call_id,
            sid,
            to,
            caller,
            chosen.agent_id,
            chosen.version,
            revision,
            digest,
            chosen.label,
            rows[0]["revision"],
            datetime.now(UTC),
        )
    twiml = _twiml(call_id, chosen.agent_id, chosen.version, digest)
    return web.Response(text=twiml, content_type="application/xml")


async def _pool(app: web.Application) -> AsyncIterator[None]:
    # The same pool bounds as the router (store/db.py).
    app[POOL] = pool = await asyncpg.create_pool(
        os.environ["DATABASE_URL"], min_size=2, max_size=10
    )
    yield
    await pool.close()


def naive_app() -> web.Application:
    app = web.Application()
    app.cleanup_ctx.append(_pool)
    app.router.add_post("/webhooks/twilio/voice", naive_voice)
    return app


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in ("ceiling", "naive"):
        print("usage: python -m loadtests.baselines ceiling|naive", file=sys.stderr)
        return 2
    port = int(os.environ["AGENTVER_ROUTER_PORT"])
    if argv[0] == "ceiling":
        app = ceiling_app(int(os.environ.get("BENCH_CONFIG_BODY_BYTES", "4096")))
    else:
        app = naive_app()
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, loop=new_loop())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

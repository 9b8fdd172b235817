"""Demo data for `python -m admin seed`: an agent with two published versions, a number pinned
to the second, and an admin token to explore them with. Idempotent: what exists is kept."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from store import agents, channels, tokens
from store.diff import merge_patch

DEMO_AGENT_NAME = "Demo receptionist"
DEMO_NUMBER = "+14155550100"
DEMO_TOKEN_NAME = "demo-admin"
SEED_ACTOR = "seed"
DEMO_LABEL = "default"
DEMO_WEIGHT = 100

DEMO_CONFIG: dict[str, Any] = {
    "name": DEMO_AGENT_NAME,
    "system_prompt": (
        "You are the receptionist of a small dental clinic. Greet callers, answer questions "
        "about opening hours (Monday to Friday, 9am to 5pm) and take appointment requests."
    ),
    "welcome_message": "Hello, you have reached the clinic. How can I help?",
    "llm": {"provider": "openai", "model": "gpt-4o-mini", "temperature": 0.4},
    "voice": {"tts_provider": "elevenlabs", "tts_voice": "rachel"},
    "call_analysis": {
        "prompt": "Summarise the call.",
        "fields": [{"name": "appointment_requested", "type": "boolean"}],
    },
}
# Version 2 is version 1 with a warmer greeting and a booking tool: a diff worth looking at.
VERSION_2_PATCH: dict[str, Any] = {
    "welcome_message": "Hi! Thanks for calling the clinic, this is Ava. What can I do for you?",
    "tools": [
        {
            "name": "book_appointment",
            "type": "webhook",
            "description": "Request an appointment slot.",
            "parameters": {"date": {"type": "string"}, "reason": {"type": "string"}},
        }
    ],
}
# (version name, description, merge patch applied to the draft before publishing)
DEMO_VERSIONS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("Launch", "First version on the phone line.", {}),
    ("Warmer greeting", "Friendlier welcome; can book appointments.", VERSION_2_PATCH),
)


@dataclass(frozen=True)
class SeedResult:
    agent_id: str
    created: bool  # False when the demo agent already existed and was left alone
    token: str


def _patched(patch: dict[str, Any]) -> Callable[[dict[str, Any]], Any]:
    return lambda config: merge_patch(config, patch)


async def _build_demo(pool: asyncpg.Pool) -> str:
    """Create the demo agent, publish its versions and pin the demo number to the last one."""
    agent = await agents.create_agent(pool, DEMO_CONFIG, SEED_ACTOR)
    for name, description, patch in DEMO_VERSIONS:
        if patch:
            await agents.update_draft(pool, agent.id, _patched(patch), SEED_ACTOR)
        version = await agents.publish(pool, agent.id, name, description, SEED_ACTOR)
    pin = channels.Variant(DEMO_LABEL, agent.id, version.version, DEMO_WEIGHT)
    await channels.set_channel(pool, DEMO_NUMBER, (pin,), "caller", SEED_ACTOR)
    return agent.id


async def seed(pool: asyncpg.Pool) -> SeedResult:
    """Load the demo data unless the demo agent exists; always mint a fresh demo-admin token."""
    existing = await agents.find_agent_named(pool, DEMO_AGENT_NAME)
    agent_id = existing.id if existing else await _build_demo(pool)
    token = await tokens.create_token(pool, DEMO_TOKEN_NAME, "admin")
    return SeedResult(agent_id=agent_id, created=existing is None, token=token)


def report(result: SeedResult, admin_url: str) -> str:
    """What `python -m admin seed` prints: the token (shown once) and a curl to try it."""
    state = (
        f"created, versions 1 and 2 published, {DEMO_NUMBER} pinned to version 2"
        if result.created
        else "already there, left as it is"
    )
    return "\n".join(
        [
            f"{DEMO_AGENT_NAME} ({result.agent_id}): {state}",
            f"Admin token {DEMO_TOKEN_NAME!r} (shown once): {result.token}",
            "Try:",
            f"  curl -H 'Authorization: Bearer {result.token}' "
            f"{admin_url}/v1/agents/{result.agent_id}/versions",
        ]
    )

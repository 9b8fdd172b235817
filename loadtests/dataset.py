"""The seeded data set: agents with published versions and drafts, and N channels mixing pins,
drafts and A/B tests. Written in bulk with SQL (generate_series), in replica mode so the change
feed triggers stay quiet (no router is listening yet) and seeding takes seconds.

Agent a (0 ≤ a < AGENTS) is `agt_` + a in hex, with VERSIONS published versions and a draft,
each with a config blob of its own of about CONFIG_BYTES. Channel i (workload.channel_number):
- i % 20 < 14: pinned to version 1 + (i // AGENTS) % VERSIONS of agent i % AGENTS (70%);
- i % 20 in 14..16: serves that agent's draft (15%);
- i % 20 in 17..19: an A/B test, 50/50 between two of its versions, sticky by caller (15%).
"""

from __future__ import annotations

import asyncpg

# 2,000 agents x 5 versions: 10,000 published snapshots plus 2,000 drafts, all in use by the
# 100,000-channel set (the memory target's "10,000 cached snapshots").
AGENTS = 2_000
VERSIONS = 5
# Bytes of system prompt per config: a realistic production prompt (a few KB).
PROMPT_BYTES = 3_000

# Every document (version 0 is the draft) once, with its hash, in a temporary table the inserts
# below read.
STAGE_CONFIGS = """
CREATE TEMPORARY TABLE bench_configs ON COMMIT DROP AS
SELECT a, v, encode(sha256(convert_to(doc::text, 'UTF8')), 'hex') AS hash, doc
FROM (SELECT a, v, jsonb_build_object(
           'name', 'Bench agent ' || a,
           'system_prompt',
               'v' || v || ' ' || repeat('You are a helpful, concise phone agent. ', $2),
           'welcome_message', 'Hello, thanks for calling. How can I help?',
           'llm', jsonb_build_object('provider', 'openai', 'model', 'gpt-4o-mini',
                                     'temperature', 0.3, 'max_tokens', 512),
           'voice', jsonb_build_object('tts_provider', 'elevenlabs', 'tts_voice', 'rachel',
                                       'stt_provider', 'deepgram', 'language', 'en-US'),
           'turn_taking', jsonb_build_object('silence_timeout_ms', 800,
                                             'inactivity_timeout_ms', 30000),
           'background_sound', jsonb_build_object('enabled', false, 'sound', null, 'volume', 0.5),
           'knowledge_bases', jsonb_build_array(),
           'tools', jsonb_build_array(jsonb_build_object(
               'name', 'transfer', 'type', 'transfer', 'description', 'Transfer to a human',
               'parameters', jsonb_build_object('number', '+14155550100'))),
           'call_analysis', jsonb_build_object('prompt', 'Summarise the call.',
                                               'fields', jsonb_build_array()),
           'workflow', null) AS doc
      FROM generate_series(0, $1 - 1) a, generate_series(0, $3) v) d
"""
SEED_CONFIGS = "INSERT INTO config_blobs (hash, config) SELECT hash, doc FROM bench_configs"
SEED_AGENTS = """
INSERT INTO agents (id, created_by, last_version)
SELECT 'agt_' || lpad(to_hex(a), 16, '0'), 'bench', $2 FROM generate_series(0, $1 - 1) a
"""
SEED_DRAFTS = """
INSERT INTO drafts (agent_id, revision, config_hash, updated_by)
SELECT 'agt_' || lpad(to_hex(a), 16, '0'), 1, hash, 'bench' FROM bench_configs WHERE v = 0
"""
SEED_VERSIONS = """
INSERT INTO versions (agent_id, version, name, author, config_hash)
SELECT 'agt_' || lpad(to_hex(a), 16, '0'), v, 'v' || v, 'bench', hash
FROM bench_configs WHERE v > 0
"""
SEED_CHANNELS = """
INSERT INTO channels (number, salt, sticky, updated_by)
SELECT '+1555' || lpad(i::text, 7, '0'), substr(md5(i::text), 1, 16), 'caller', 'bench'
FROM generate_series($1::integer, $2 - 1) i
"""
SEED_VARIANTS = """
INSERT INTO channel_variants (number, position, label, agent_id, version, weight)
SELECT '+1555' || lpad(i::text, 7, '0'), p, CASE WHEN i % 20 >= 17 THEN chr(97 + p) ELSE
       'default' END, 'agt_' || lpad(to_hex(i % $3), 16, '0'),
       CASE WHEN i % 20 BETWEEN 14 AND 16 THEN NULL
            ELSE 1 + ((i / $3) + p) % $4 END,
       CASE WHEN i % 20 >= 17 THEN 50 ELSE 100 END
FROM generate_series($1::integer, $2 - 1) i, generate_series(0, 1) p
WHERE p = 0 OR i % 20 >= 17
"""


async def seed_agents(conn: asyncpg.Connection) -> None:
    """Agents, their drafts and versions, and every config blob they point at."""
    repeat = PROMPT_BYTES // 40
    async with conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")
        await conn.execute(STAGE_CONFIGS, AGENTS, repeat, VERSIONS)
        await conn.execute(SEED_CONFIGS)
        await conn.execute(SEED_AGENTS, AGENTS, VERSIONS)
        await conn.execute(SEED_DRAFTS)
        await conn.execute(SEED_VERSIONS)


async def seed_channels(conn: asyncpg.Connection, first: int, end: int) -> None:
    """Channels first..end-1 with their variants."""
    async with conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")
        await conn.execute(SEED_CHANNELS, first, end)
        await conn.execute(SEED_VARIANTS, first, end, AGENTS, VERSIONS)

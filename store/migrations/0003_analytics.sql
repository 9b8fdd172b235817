-- Analytics: covering indexes for the per-version and per-variant aggregates, and guardrail
-- rules per channel.

-- Per-version analytics filter on agent and time and aggregate the outcome columns: with them
-- included, the aggregate is an index-only scan of the requested time range.
CREATE INDEX calls_agent_started_outcomes ON calls (agent_id, started_at)
    INCLUDE (version, draft_revision, channel, status, duration_s, sentiment, automated);

-- The same for a channel's A/B results and its guardrails. It replaces the plain
-- (channel, started_at) index, whose queries it serves equally, so inserts maintain one index.
DROP INDEX IF EXISTS calls_channel_started;
CREATE INDEX calls_channel_started_outcomes ON calls (channel, started_at)
    INCLUDE (variant, agent_id, version, status, duration_s, sentiment, automated);

-- Guardrail rules of a channel's A/B test, validated by the store before they are written.
CREATE TABLE channel_guardrails (
    number     text PRIMARY KEY REFERENCES channels (number) ON DELETE CASCADE,
    rules      jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    updated_by text NOT NULL
);

-- Analytics: covering indexes for the per-version and per-variant aggregates, and guardrail
-- rules per channel.

-- Per-version analytics group an agent's calls by version and aggregate the outcome columns.
-- Keyed like the index it replaces (so call listings by agent and version keep their plans)
-- and carrying the outcomes, the aggregate is one index-only scan that arrives grouped: no
-- heap reads, no sort.
DROP INDEX IF EXISTS calls_agent_version_started;
CREATE INDEX calls_agent_version_started_outcomes ON calls (agent_id, version, started_at)
    INCLUDE (draft_revision, channel, status, duration_s, sentiment, automated);

-- The same for a channel's A/B results (grouped by variant arm) and for its guardrails, which
-- read each current arm's calls after every analysis posted on the channel.
CREATE INDEX calls_channel_variant_outcomes ON calls (channel, variant, agent_id, version, started_at)
    INCLUDE (status, duration_s, sentiment, automated);

-- Guardrail rules of a channel's A/B test, validated by the store before they are written.
CREATE TABLE channel_guardrails (
    number     text PRIMARY KEY REFERENCES channels (number) ON DELETE CASCADE,
    rules      jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    updated_by text NOT NULL
);

-- Analytics: a covering index for the per-variant aggregates, and guardrail rules per channel.

-- A channel's A/B results (grouped by variant arm) and its guardrails, which read each current
-- arm's calls after every analysis posted on the channel, as one index-only scan.
CREATE INDEX calls_channel_variant_outcomes ON calls (channel, variant, agent_id, version, started_at)
    INCLUDE (status, duration_s, sentiment, automated);

-- Guardrail rules of a channel's A/B test, validated by the store before they are written.
CREATE TABLE channel_guardrails (
    number     text PRIMARY KEY REFERENCES channels (number) ON DELETE CASCADE,
    rules      jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    updated_by text NOT NULL
);

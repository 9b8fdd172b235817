-- Router: call endings that arrive before the call itself, and change-feed timestamps.

-- Telnyx (and, rarely, Twilio) may deliver a hangup before the event that starts the call. The
-- ending waits here and is applied when the call record is written.
CREATE TABLE call_endings (
    provider         text NOT NULL,
    provider_call_id text NOT NULL,
    status           text NOT NULL,
    ended_at         timestamptz NOT NULL,
    duration_s       double precision CHECK (duration_s >= 0),
    received_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, provider_call_id)
);

-- The same announcements as 0001, with the commit-side clock ('at', seconds since the epoch) so
-- routers can measure how far behind the change feed runs.
CREATE OR REPLACE FUNCTION announce_draft_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('agentver_changes', json_build_object(
        'kind', 'draft', 'agent_id', NEW.agent_id, 'revision', NEW.revision,
        'at', extract(epoch FROM clock_timestamp()))::text);
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION announce_channel_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changed channels;
BEGIN
    IF TG_OP = 'DELETE' THEN
        changed := OLD;
    ELSE
        changed := NEW;
    END IF;
    PERFORM pg_notify('agentver_changes', json_build_object(
        'kind', 'channel', 'number', changed.number, 'revision', changed.revision,
        'at', extract(epoch FROM clock_timestamp()))::text);
    RETURN NULL;
END;
$$;

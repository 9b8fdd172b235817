-- Router: call endings that arrive before the call itself.

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

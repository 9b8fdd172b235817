-- Progressive rollouts: a channel's traffic moved onto a target version step by step, gated by
-- guardrails, advanced by the admin processes' scheduler (store/rollouts.py).

CREATE TABLE rollouts (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    number           text NOT NULL REFERENCES channels (number) ON DELETE CASCADE,
    -- The target, served under its own label beside the starting variants.
    label            text NOT NULL,
    agent_id         text NOT NULL REFERENCES agents (id),
    version          integer,  -- NULL: the agent's draft
    -- Percent of the traffic at each step, strictly increasing, the last 100.
    steps            integer[] NOT NULL CHECK (cardinality(steps) >= 1),
    hold_s           integer NOT NULL CHECK (hold_s >= 0),
    min_calls        integer NOT NULL CHECK (min_calls >= 0),
    rules            jsonb NOT NULL,
    -- The routing before the rollout: where an abort or a rollback goes back to.
    start_variants   jsonb NOT NULL,
    start_sticky     text NOT NULL,
    state            text NOT NULL
                     CHECK (state IN ('running', 'paused', 'completed', 'rolled_back', 'aborted')),
    step             integer NOT NULL CHECK (step >= 0),  -- index into steps of the live step
    step_started_at  timestamptz NOT NULL,
    -- The channel revision the rollout last wrote: any other revision is someone else's change.
    channel_revision integer NOT NULL,
    reason           text,  -- why the rollout last paused or ended
    created_at       timestamptz NOT NULL,
    created_by       text NOT NULL,
    ended_at         timestamptz,
    FOREIGN KEY (agent_id, version) REFERENCES versions (agent_id, version)
);

-- At most one rollout in progress per channel.
CREATE UNIQUE INDEX rollouts_one_active ON rollouts (number) WHERE state IN ('running', 'paused');
-- The scheduler's scan for running rollouts.
CREATE INDEX rollouts_running ON rollouts (id) WHERE state = 'running';
CREATE INDEX rollouts_by_channel ON rollouts (number, id DESC);

-- What happened to a rollout, in order: each step, pause, resume, rollback, abort, promotion,
-- with who did it, why, and the figures it was decided on.
CREATE TABLE rollout_events (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rollout_id bigint NOT NULL REFERENCES rollouts (id) ON DELETE CASCADE,
    at         timestamptz NOT NULL,
    actor      text NOT NULL,
    kind       text NOT NULL,
    step       integer NOT NULL,
    share      integer NOT NULL,
    reason     text,
    figures    jsonb
);

CREATE INDEX rollout_events_by_rollout ON rollout_events (rollout_id, id);

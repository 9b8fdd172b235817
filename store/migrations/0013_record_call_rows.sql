-- The record statement's input as two arrays of rows (the calls, and the variants each may be
-- served from) instead of fifteen arrays of one column each. asyncpg checks every element of
-- an array parameter against the collections ABCs before encoding it, and Postgres decodes
-- each array parameter on its own: the fifteen arrays cost the router 40-90 µs a batch more
-- than two arrays of rows holding the same values (one to fifteen calls), and Postgres about
-- 25 µs more at one or two calls a batch (loadtests/README.md). Types only: nothing stores
-- them.
CREATE TYPE record_call_input AS (
    call_id          text,
    provider         text,
    provider_call_id text,
    channel          text,
    from_number      text,
    routing_revision integer,
    started_at       timestamptz,
    drawn            text,
    remember         boolean
);

-- `n` is the ordinal (from 1) of the call in the batch that may be served this variant.
CREATE TYPE record_call_candidate AS (
    n              bigint,
    label          text,
    agent_id       text,
    version        integer,
    draft_revision integer,
    config_hash    text
);

-- agentver schema: agents with one draft and immutable numbered versions, content-addressed
-- config blobs, channels with weighted variants, call records, hashed API tokens, audit log.

-- A configuration is stored once, keyed by the SHA-256 of its canonical JSON.
CREATE TABLE config_blobs (
    hash       text PRIMARY KEY CHECK (hash ~ '^[0-9a-f]{64}$'),
    config     jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE agents (
    id           text PRIMARY KEY,
    created_at   timestamptz NOT NULL DEFAULT now(),
    created_by   text NOT NULL,
    -- Counter row for gapless per-agent version numbers: publish takes this row's lock.
    last_version integer NOT NULL DEFAULT 0 CHECK (last_version >= 0)
);

CREATE TABLE drafts (
    agent_id    text PRIMARY KEY REFERENCES agents (id) ON DELETE CASCADE,
    revision    integer NOT NULL CHECK (revision >= 1),
    config_hash text NOT NULL REFERENCES config_blobs (hash),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    updated_by  text NOT NULL
);

CREATE TABLE versions (
    agent_id     text NOT NULL REFERENCES agents (id),
    version      integer NOT NULL CHECK (version >= 1),
    name         text NOT NULL,
    description  text NOT NULL DEFAULT '',
    author       text NOT NULL,
    published_at timestamptz NOT NULL DEFAULT now(),
    config_hash  text NOT NULL REFERENCES config_blobs (hash),
    PRIMARY KEY (agent_id, version)
);

-- Published versions are immutable: the database itself refuses to change or remove them.
CREATE FUNCTION versions_are_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'published versions are immutable (% refused)', TG_OP
        USING ERRCODE = 'integrity_constraint_violation';
END;
$$;

CREATE TRIGGER versions_no_update_delete
    BEFORE UPDATE OR DELETE ON versions
    FOR EACH ROW EXECUTE FUNCTION versions_are_immutable();

CREATE TRIGGER versions_no_truncate
    BEFORE TRUNCATE ON versions
    FOR EACH STATEMENT EXECUTE FUNCTION versions_are_immutable();

-- Config blobs are referenced by versions and served calls forever; they never change either.
CREATE TRIGGER config_blobs_no_update_delete
    BEFORE UPDATE OR DELETE ON config_blobs
    FOR EACH ROW EXECUTE FUNCTION versions_are_immutable();

CREATE TABLE channels (
    number     text PRIMARY KEY CHECK (number ~ '^\+[1-9][0-9]{1,14}$'),
    -- Per-channel salt for the variant draw, so two channels split the same callers differently.
    salt       text NOT NULL,
    sticky     text NOT NULL DEFAULT 'caller' CHECK (sticky IN ('caller', 'call')),
    revision   integer NOT NULL DEFAULT 1 CHECK (revision >= 1),
    updated_at timestamptz NOT NULL DEFAULT now(),
    updated_by text NOT NULL
);

CREATE TABLE channel_variants (
    number   text NOT NULL REFERENCES channels (number) ON DELETE CASCADE,
    position integer NOT NULL CHECK (position >= 0),
    label    text NOT NULL,
    agent_id text NOT NULL REFERENCES agents (id),
    -- NULL serves the draft; otherwise the pinned version must exist.
    version  integer,
    weight   integer NOT NULL CHECK (weight >= 0),
    PRIMARY KEY (number, position),
    UNIQUE (number, label),
    FOREIGN KEY (agent_id, version) REFERENCES versions (agent_id, version)
);

-- Sticky-by-caller memory: the variant each caller was last served on a channel.
CREATE TABLE caller_assignments (
    number     text NOT NULL REFERENCES channels (number) ON DELETE CASCADE,
    caller     text NOT NULL,
    label      text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (number, caller)
);

CREATE TABLE calls (
    call_id          text PRIMARY KEY,
    provider         text NOT NULL,
    provider_call_id text NOT NULL,
    channel          text NOT NULL,
    from_number      text NOT NULL,
    agent_id         text NOT NULL REFERENCES agents (id),
    version          integer,
    draft_revision   integer,
    config_hash      text NOT NULL REFERENCES config_blobs (hash),
    variant          text NOT NULL,
    routing_revision integer NOT NULL,
    status           text NOT NULL DEFAULT 'initiated',
    started_at       timestamptz NOT NULL,
    ended_at         timestamptz,
    duration_s       double precision CHECK (duration_s >= 0),
    sentiment        text CHECK (sentiment IN ('positive', 'neutral', 'negative')),
    automated        boolean,
    analysis         jsonb,
    -- A provider retry of the same call must never create a second record.
    UNIQUE (provider, provider_call_id),
    CHECK ((version IS NULL) = (draft_revision IS NOT NULL))
);

-- Call listings by agent and version, and the per-version analytics: carrying the outcome
-- columns, the aggregate is one index-only scan that arrives grouped (no heap reads, no sort).
CREATE INDEX calls_agent_version_started_outcomes ON calls (agent_id, version, started_at)
    INCLUDE (draft_revision, channel, status, duration_s, sentiment, automated);
CREATE INDEX calls_channel_started ON calls (channel, started_at);
CREATE INDEX calls_started ON calls (started_at, call_id);

CREATE TABLE api_tokens (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       text NOT NULL,
    role       text NOT NULL CHECK (role IN ('runtime', 'viewer', 'editor', 'publisher', 'admin')),
    -- SHA-256 of the token: the secret itself is shown once and never stored.
    token_hash text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);

CREATE TABLE audit_log (
    id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at       timestamptz NOT NULL DEFAULT now(),
    actor    text NOT NULL,
    action   text NOT NULL,
    agent_id text,
    channel  text,
    before   jsonb,
    after    jsonb
);

CREATE INDEX audit_log_at ON audit_log (at DESC, id DESC);

-- Change feed: every change that affects routing is announced inside its own transaction, so a
-- committed change is never left unannounced and an aborted one is never announced. 'at' is the
-- commit-side clock (seconds since the epoch), so routers can measure how far behind they run.
CREATE FUNCTION announce_draft_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('agentver_changes', json_build_object(
        'kind', 'draft', 'agent_id', NEW.agent_id, 'revision', NEW.revision,
        'at', extract(epoch FROM clock_timestamp()))::text);
    RETURN NULL;
END;
$$;

CREATE TRIGGER drafts_announce
    AFTER INSERT OR UPDATE ON drafts
    FOR EACH ROW EXECUTE FUNCTION announce_draft_change();

CREATE FUNCTION announce_channel_change() RETURNS trigger LANGUAGE plpgsql AS $$
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

CREATE TRIGGER channels_announce
    AFTER INSERT OR UPDATE OR DELETE ON channels
    FOR EACH ROW EXECUTE FUNCTION announce_channel_change();

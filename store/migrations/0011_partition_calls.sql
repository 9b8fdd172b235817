-- Calls partitioned by month of started_at (UTC), so that retention drops whole partitions and
-- no table or index grows with years of history (docs/design.md, section 3).
--
-- A partitioned table's unique constraints must hold the partition key, but a provider retry
-- (same provider call id) arrives with its own started_at. call_keys, unpartitioned and narrow,
-- holds the uniqueness instead: the record statement inserts a call's key first (ON CONFLICT DO
-- NOTHING) and its row only if the key is new. It also maps a call id to its started_at, so a
-- lookup by call id probes call_keys, then one partition's primary key. Every row of `calls`
-- has its key; retention deletes the keys of a partition before dropping it.
--
-- The existing table is copied into the new one, every row and key, in this transaction;
-- functions typed by its rows and its own (non-internal) triggers are re-created on the new
-- table, whoever defined them, and the rollups' triggers are re-created only after the copy,
-- so the rows they already count are not counted twice.

-- Replaced by the set-based record statement of store/calls.py; its ON CONFLICT target no
-- longer exists.
DROP FUNCTION record_call(text, text, text, text, text, integer, timestamptz, text, boolean, jsonb);

ALTER TABLE calls RENAME TO calls_unpartitioned;
-- Their names are wanted for the new table's; a sequential copy needs no index.
ALTER TABLE calls_unpartitioned DROP CONSTRAINT calls_pkey,
    DROP CONSTRAINT calls_provider_provider_call_id_key;
DROP INDEX calls_agent_version_started_outcomes, calls_channel_started, calls_started,
    calls_channel_variant_outcomes;

-- The same columns, defaults, NOT NULL and CHECK constraints; keys and indexes below.
CREATE TABLE calls (LIKE calls_unpartitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
    PARTITION BY RANGE (started_at);

-- Whatever no month's partition takes (a partition not created yet, a clock far off, a spooled
-- call replayed after its month was dropped) lands here, so no insert fails for want of a
-- partition; ensure_call_partitions() moves such rows into their month.
CREATE TABLE calls_default PARTITION OF calls DEFAULT;

CREATE TABLE call_keys (
    provider         text NOT NULL,
    provider_call_id text NOT NULL,
    call_id          text NOT NULL UNIQUE,
    started_at       timestamptz NOT NULL,
    -- A provider retry of the same call must never create a second record.
    PRIMARY KEY (provider, provider_call_id)
);

-- The start of the UTC month `month` + `months`: month arithmetic in UTC whatever the
-- session's time zone, so that bounds never shift by a daylight-saving hour.
CREATE FUNCTION call_month(t timestamptz, months integer DEFAULT 0) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (date_trunc('month', t AT TIME ZONE 'UTC') + make_interval(months => months))
           AT TIME ZONE 'UTC'
$$;

-- The partition of the UTC month that starts at `lo`, created unless it exists: built apart
-- and attached, which takes SHARE UPDATE EXCLUSIVE on `calls` (CREATE TABLE … PARTITION OF
-- would take ACCESS EXCLUSIVE and stop every insert meanwhile). Rows of that month that landed
-- in the default partition move into it first, under the lock ATTACH takes on the default
-- partition anyway (taken first, so none can land there between the move and the attach).
-- Moving rows inserts into and deletes from partitions directly: the rollups' triggers on
-- `calls` do not fire, and the rollups are unchanged, as they should be. Whether it created it.
-- Locks are waited for at most 2 s (lock_timeout): inserts into `calls` would queue behind a
-- DDL lock that waits, say, behind a long export; the caller tries again later.
CREATE FUNCTION create_call_partition(lo timestamptz) RETURNS boolean
LANGUAGE plpgsql SET lock_timeout = '2s' AS $$
DECLARE
    hi timestamptz := call_month(lo, 1);
    name text := 'calls_p' || to_char(lo AT TIME ZONE 'UTC', 'YYYYMM');
BEGIN
    IF lo <> call_month(lo) THEN
        RAISE EXCEPTION 'a call partition starts a UTC month, not at %', lo;
    END IF;
    IF to_regclass(name) IS NOT NULL THEN
        RETURN false;
    END IF;
    LOCK TABLE calls IN SHARE UPDATE EXCLUSIVE MODE;
    LOCK TABLE calls_default IN ACCESS EXCLUSIVE MODE;
    EXECUTE format('CREATE TABLE %I (LIKE calls INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', name);
    -- Spares ATTACH its scan of the new table.
    EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I CHECK (started_at >= %L AND started_at < %L)',
                   name, name || '_month', lo, hi);
    EXECUTE format('WITH moved AS (DELETE FROM calls_default WHERE started_at >= $1'
                   ' AND started_at < $2 RETURNING *) INSERT INTO %I SELECT * FROM moved', name)
        USING lo, hi;
    EXECUTE format('ALTER TABLE calls ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                   name, lo, hi);
    EXECUTE format('ALTER TABLE %I DROP CONSTRAINT %I', name, name || '_month');
    RETURN true;
END;
$$;

-- Partitions for this UTC month and the `ahead` after it, and for every month that has rows in
-- the default partition (which moves them there). Returns how many it created, or null when
-- another session is maintaining the partitions. The admin service runs it periodically
-- (store/partitions.py).
CREATE FUNCTION ensure_call_partitions(ahead integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    month timestamptz;
    created integer := 0;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('agentver:call_partitions')) THEN
        RETURN NULL;
    END IF;
    FOR month IN
        SELECT call_month(now(), m) FROM generate_series(0, ahead) AS m
        UNION
        SELECT DISTINCT call_month(started_at) FROM calls_default
        ORDER BY 1
    LOOP
        IF create_call_partition(month) THEN
            created := created + 1;
        END IF;
    END LOOP;
    RETURN created;
END;
$$;

-- The monthly partitions, oldest first, with the bounds their names give.
CREATE VIEW call_partitions AS
    SELECT c.relname::text AS name,
           (to_date(substr(c.relname, 8), 'YYYYMM')::timestamp AT TIME ZONE 'UTC') AS starts,
           call_month(to_date(substr(c.relname, 8), 'YYYYMM')::timestamp AT TIME ZONE 'UTC', 1)
               AS ends
    FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = 'calls'::regclass AND c.relname ~ '^calls_p[0-9]{6}$'
    ORDER BY 2;

-- Retention, first step: the keys of the calls of the month starting at `lo`, deleted apart
-- from the partition (proportional to the month's calls, with no index on call_keys by time,
-- and without holding the lock the drop takes). How many.
CREATE FUNCTION expire_call_keys(lo timestamptz) RETURNS bigint
LANGUAGE sql AS $$
    WITH gone AS (
        DELETE FROM call_keys k USING calls c
        WHERE c.started_at >= lo AND c.started_at < call_month(lo, 1)
          AND k.provider = c.provider AND k.provider_call_id = c.provider_call_id
        RETURNING 1
    )
    SELECT count(*) FROM gone
$$;

-- Retention, second step: the month's partition dropped, rows and all; the rollups keep their
-- aggregates. Dropping a partition locks `calls` (ACCESS EXCLUSIVE: DETACH … CONCURRENTLY is
-- not allowed beside a default partition), briefly, and never waits more than 2 s for it.
-- Whether it dropped one (false: none, or another session is maintaining the partitions).
CREATE FUNCTION drop_call_partition(lo timestamptz) RETURNS boolean
LANGUAGE plpgsql SET lock_timeout = '2s' AS $$
DECLARE
    name text := 'calls_p' || to_char(lo AT TIME ZONE 'UTC', 'YYYYMM');
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('agentver:call_partitions'))
       OR to_regclass(name) IS NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('DROP TABLE %I', name);
    RETURN true;
END;
$$;

-- Every month that has calls, and the months ahead, then the rows and their keys.
SELECT create_call_partition(m)
FROM (SELECT DISTINCT call_month(started_at) AS m FROM calls_unpartitioned) months ORDER BY m;
SELECT ensure_call_partitions(3);

INSERT INTO calls SELECT * FROM calls_unpartitioned;
INSERT INTO call_keys (provider, provider_call_id, call_id, started_at)
SELECT provider, provider_call_id, call_id, started_at FROM calls_unpartitioned;

-- Built once over the copied rows, then kept per partition. The primary key serves the
-- listings by time and the lookups by call id (through call_keys).
ALTER TABLE calls ADD PRIMARY KEY (started_at, call_id),
    ADD FOREIGN KEY (agent_id) REFERENCES agents (id),
    ADD FOREIGN KEY (config_hash) REFERENCES config_blobs (hash);
-- Call listings by agent and version.
CREATE INDEX calls_agent_version_started_outcomes ON calls (agent_id, version, started_at)
    INCLUDE (draft_revision, channel, status, duration_s, sentiment, automated);
CREATE INDEX calls_channel_started ON calls (channel, started_at);
CREATE INDEX calls_channel_variant_outcomes ON calls (channel, variant, agent_id, version, started_at)
    INCLUDE (status, duration_s, sentiment, automated);

-- Functions taking or returning the old table's rows (the rollups' call_rollup_changes), and
-- the old table's own triggers (the rollups'), re-created on the new table from their current
-- definitions.
DO $$
DECLARE
    old_types oid[] := ARRAY['calls_unpartitioned'::regtype, 'calls_unpartitioned[]'::regtype]::oid[];
    f record;
    t record;
    definitions text[] := '{}';
    d text;
BEGIN
    FOR f IN
        SELECT p.oid FROM pg_proc p
        WHERE p.prorettype = ANY (old_types) OR p.proargtypes::oid[] && old_types
    LOOP
        definitions := definitions || replace(pg_get_functiondef(f.oid), 'calls_unpartitioned', 'calls');
        EXECUTE format('DROP FUNCTION %s', f.oid::regprocedure);
    END LOOP;
    FOREACH d IN ARRAY definitions LOOP
        EXECUTE d;
    END LOOP;
    FOR t IN
        SELECT oid FROM pg_trigger
        WHERE tgrelid = 'calls_unpartitioned'::regclass AND NOT tgisinternal
    LOOP
        EXECUTE regexp_replace(pg_get_triggerdef(t.oid), ' ON (public\.)?calls_unpartitioned ',
                               ' ON calls ');
    END LOOP;
END $$;

DROP TABLE calls_unpartitioned;

-- A call's insert counted into the rollups by the compaction, not by a trigger in the record's
-- transaction (docs/design.md, section 12). The insert trigger was the largest single part of
-- the record statement's cost, about a fifth of Postgres' CPU a call at the router's batch
-- sizes (loadtests/README.md, "The rollups out of the record's transaction").
--
-- Every row of `calls` carries the id of the transaction that wrote it. call_rollup_horizon
-- holds one transaction id: a call written by a transaction before it is in the rollups (or in
-- the deltas), one at or after it is pending. The compaction moves the horizon up to the oldest
-- transaction still running, folding the calls it passes; readers add the pending calls'
-- aggregate to the rollups and deltas, all in one snapshot, so a result stays exact at every
-- commit. Transaction ids are not given out in commit order, and that is why a horizon of
-- transaction ids and not of times or a sequence: every transaction below the oldest one still
-- running has ended, so no call can later appear below the horizon.
--
-- An update of a pending call writes no delta (the compaction counts the call as it then is);
-- one of a folded call writes its change as before. The update trigger reads the horizon FOR
-- SHARE and the compaction moves it FOR UPDATE, so the two never interleave: an update decides
-- with the horizon the compaction leaves, and the compaction counts pending calls as updates
-- committed before it left them.

-- Rows written before this migration were counted by the insert trigger: transaction 0.
ALTER TABLE calls ADD COLUMN recorded_xid xid8 NOT NULL DEFAULT '0';
ALTER TABLE calls ALTER COLUMN recorded_xid SET DEFAULT pg_current_xact_id();
-- The compaction's and the readers' range of pending calls (a few seconds' worth).
CREATE INDEX calls_recorded_xid ON calls (recorded_xid);

-- Its one row is never deleted: every function reading it raises if it is missing.
CREATE TABLE call_rollup_horizon (
    xid xid8 NOT NULL
);
CREATE UNIQUE INDEX call_rollup_horizon_one_row ON call_rollup_horizon ((true));
-- Above the rows written before, below every transaction from now on: a transaction that
-- started earlier and writes a call only after this one commits is pending, not lost.
INSERT INTO call_rollup_horizon VALUES ('1');

DROP TRIGGER calls_rollups_insert ON calls;
DROP FUNCTION call_rollups_on_insert();

CREATE OR REPLACE FUNCTION call_rollups_on_update() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    horizon xid8;
    added calls[];
    removed calls[];
BEGIN
    -- Held until commit: a compaction moving the horizon waits for this update, or this update
    -- for it (and, at REPEATABLE READ, fails to serialize rather than decide on a stale one).
    SELECT xid INTO STRICT horizon FROM call_rollup_horizon FOR SHARE;
    added := ARRAY(SELECT n::calls FROM new_calls n WHERE n.recorded_xid < horizon);
    removed := ARRAY(SELECT o::calls FROM old_calls o WHERE o.recorded_xid < horizon);
    INSERT INTO call_rollup_deltas SELECT * FROM call_rollup_changes(added, removed);
    RETURN NULL;
END;
$$;

-- The pending calls' aggregate, as call_rollup_changes counts an insert, in the calling query's
-- snapshot (STABLE): of one agent, one channel or both (NULL: any). A read aggregates only the
-- pending calls it reads, found through the horizon's index: a report of one channel, run after
-- every analysis posted on it, costs the calls of that channel, not every call recorded since
-- the last compaction.
CREATE FUNCTION call_rollups_pending(of_agent text, of_channel text)
RETURNS SETOF call_rollup_deltas LANGUAGE plpgsql STABLE AS $$
DECLARE
    horizon xid8;
    pending calls[];
BEGIN
    SELECT xid INTO STRICT horizon FROM call_rollup_horizon;
    pending := ARRAY(SELECT c FROM calls c
                     WHERE c.recorded_xid >= horizon
                       AND (of_agent IS NULL OR c.agent_id = of_agent)
                       AND (of_channel IS NULL OR c.channel = of_channel));
    RETURN QUERY SELECT * FROM call_rollup_changes(pending, '{}');
END;
$$;

-- What is folded: the compacted rollups and the deltas not compacted yet. Readers add
-- call_rollups_pending for what they read (store/rollups.py `of`).
CREATE VIEW call_rollups_folded AS
    SELECT * FROM call_rollups UNION ALL SELECT * FROM call_rollup_deltas;

-- Everything, pending calls included: for reads of the whole.
CREATE OR REPLACE VIEW call_rollups_all AS
    SELECT * FROM call_rollups_folded
    UNION ALL SELECT * FROM call_rollups_pending(NULL, NULL);

-- Folds every committed delta, and every call between the horizon and the oldest transaction
-- still running, into call_rollups in one statement, and moves the horizon there. One
-- compaction at a time, as before (a caller that finds the lock taken returns 0). Returns the
-- number of deltas and calls folded.
CREATE OR REPLACE FUNCTION compact_call_rollups() RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    since xid8;
    horizon xid8;
    pending calls[];
    folded bigint;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('agentver:call_rollups')) THEN
        RETURN 0;
    END IF;
    -- Waits for the updates in flight to commit, and holds off new ones until this commits.
    SELECT xid INTO STRICT since FROM call_rollup_horizon FOR UPDATE;
    -- A snapshot taken after the lock: every transaction below its oldest running one has
    -- ended, so each pending call below it is visible to the next statement, as last updated.
    horizon := pg_snapshot_xmin(pg_current_snapshot());
    pending := ARRAY(SELECT c FROM calls c
                     WHERE c.recorded_xid >= since AND c.recorded_xid < horizon);
    WITH taken AS (DELETE FROM call_rollup_deltas RETURNING *),
    counted AS (SELECT count(*) + cardinality(pending) AS n FROM taken),
    folding AS (SELECT * FROM taken UNION ALL SELECT * FROM call_rollup_changes(pending, '{}')),
    merged AS (
        INSERT INTO call_rollups
        SELECT agent_id, version, draft_revision, channel, variant, hour,
               sum(calls), sum(completed), sum(durations), sum(duration_sum),
               sum(duration_sumsq), sum(positive), sum(neutral), sum(negative), sum(analysed),
               sum(automated), sum(duration_histogram)
        FROM folding
        GROUP BY agent_id, hour, version, draft_revision, channel, variant
        ORDER BY agent_id, hour, version, draft_revision, channel, variant
        ON CONFLICT (agent_id, hour, version, draft_revision, channel, variant) DO UPDATE
        SET calls = call_rollups.calls + EXCLUDED.calls,
            completed = call_rollups.completed + EXCLUDED.completed,
            durations = call_rollups.durations + EXCLUDED.durations,
            duration_sum = call_rollups.duration_sum + EXCLUDED.duration_sum,
            duration_sumsq = call_rollups.duration_sumsq + EXCLUDED.duration_sumsq,
            positive = call_rollups.positive + EXCLUDED.positive,
            neutral = call_rollups.neutral + EXCLUDED.neutral,
            negative = call_rollups.negative + EXCLUDED.negative,
            analysed = call_rollups.analysed + EXCLUDED.analysed,
            automated = call_rollups.automated + EXCLUDED.automated,
            duration_histogram = call_rollups.duration_histogram + EXCLUDED.duration_histogram
        RETURNING 1
    )
    SELECT n INTO folded FROM counted, (SELECT count(*) FROM merged) m;
    UPDATE call_rollup_horizon SET xid = horizon;
    RETURN folded;
END;
$$;

-- Whether the UTC month starting at `lo` holds calls the rollups do not count yet (a spooled
-- call replayed into it just now). Retention keeps such a month, keys and all: the aggregates
-- outlive the rows only once they hold them.
CREATE FUNCTION call_month_pending(lo timestamptz) RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM calls
                   WHERE started_at >= lo AND started_at < call_month(lo, 1)
                     AND recorded_xid >= (SELECT xid FROM call_rollup_horizon))
$$;

-- Retention's drop leaves a month with pending calls. `calls` is locked first, as the drop
-- locks it anyway, so that no such call arrives between the check and the drop, and inserts,
-- which lock `calls` before the partition, meet the same order.
CREATE OR REPLACE FUNCTION drop_call_partition(lo timestamptz) RETURNS boolean
LANGUAGE plpgsql SET lock_timeout = '2s' AS $$
DECLARE
    name text := 'calls_p' || to_char(lo AT TIME ZONE 'UTC', 'YYYYMM');
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('agentver:call_partitions'))
       OR to_regclass(name) IS NULL THEN
        RETURN false;
    END IF;
    LOCK TABLE calls IN ACCESS EXCLUSIVE MODE;
    IF call_month_pending(lo) THEN
        RETURN false;
    END IF;
    EXECUTE format('DROP TABLE %I', name);
    RETURN true;
END;
$$;

-- A month's partition created while pending calls of that month wait in the default partition
-- moves them (0011). A compaction planning its read of the pending calls meanwhile takes the
-- partitions as they were before the attach (Postgres reads a table's partitions without a
-- snapshot) and its snapshot as after the move: the calls would be seen in neither place, and
-- the horizon would pass them unfolded. The creation holds the compaction's lock (waiting at
-- most lock_timeout for one running), so a compaction either precedes it or skips its turn;
-- a read planned meanwhile may miss the moved calls, that once.
CREATE OR REPLACE FUNCTION create_call_partition(lo timestamptz) RETURNS boolean
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
    PERFORM pg_advisory_xact_lock(hashtext('agentver:call_rollups'));
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

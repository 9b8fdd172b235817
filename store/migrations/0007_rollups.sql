-- Rollups: per (agent, version or draft revision, channel, variant, UTC hour) aggregates of the
-- calls, so analytics read a number of rows that grows with hours and groups, not with calls
-- (docs/design.md, section 12).
--
-- Every change to `calls` appends its contribution to call_rollup_deltas in the same
-- transaction (statement-level triggers over transition tables: one INSERT per statement, never
-- an upsert, so concurrent batches never wait on each other's rows). compact_call_rollups()
-- folds committed deltas into call_rollups; readers sum both, so a result is exact whether or
-- not compaction has run. Deleting calls (retention) subtracts nothing: the aggregates outlive
-- the rows.

-- A duration's histogram bucket: 0 holds [0, 1) s; bucket i >= 1 holds [g^(i-1), g^i) s with
-- g = 1.04 / 0.96, so its representative 2 g^i / (g + 1) is within 4% of every value in it;
-- the last bucket (143, from g^142 s, about 24 h) also holds everything longer.
-- store/rollups.py reads the buckets back with the same constants.
CREATE FUNCTION rollup_duration_bucket(duration_s double precision) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN duration_s < 1 THEN 0
                ELSE least(143, floor(ln(duration_s) / ln(1.04 / 0.96))::integer + 1) END
$$;

-- A histogram is packed into one numeric, ten decimal digits per bucket (bucket i counts
-- 10^(10 i)), so that sum() merges histograms exactly, as fast as it adds numbers; a bucket
-- holds up to 10^10 - 1 calls in any sum. Deltas may be negative per bucket; every sum that
-- includes a group's first contribution is a valid histogram again.
CREATE FUNCTION rollup_duration_weight(duration_s double precision) RETURNS numeric
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN duration_s IS NULL THEN 0
                ELSE 10::numeric ^ (10 * rollup_duration_bucket(duration_s)) END
$$;

CREATE TABLE call_rollups (
    agent_id           text NOT NULL,
    version            integer,
    draft_revision     integer,
    channel            text NOT NULL,
    variant            text NOT NULL,
    hour               timestamptz NOT NULL,
    calls              bigint NOT NULL,
    completed          bigint NOT NULL,
    durations          bigint NOT NULL,
    duration_sum       numeric NOT NULL,
    duration_sumsq     numeric NOT NULL,
    positive           bigint NOT NULL,
    neutral            bigint NOT NULL,
    negative           bigint NOT NULL,
    analysed           bigint NOT NULL,
    automated          bigint NOT NULL,
    duration_histogram numeric NOT NULL
);
-- The key, and the per-agent reads (versions report, time series) by hour range.
CREATE UNIQUE INDEX call_rollups_key ON call_rollups
    (agent_id, hour, version, draft_revision, channel, variant) NULLS NOT DISTINCT;
-- A/B reports and guardrails read a channel's rows.
CREATE INDEX call_rollups_channel ON call_rollups (channel, hour);
-- The backfill rebuilds an hour at a time.
CREATE INDEX call_rollups_hour ON call_rollups (hour);

-- Same columns; append-only between compactions.
CREATE TABLE call_rollup_deltas (LIKE call_rollups);
CREATE INDEX call_rollup_deltas_agent ON call_rollup_deltas (agent_id, hour);
CREATE INDEX call_rollup_deltas_channel ON call_rollup_deltas (channel, hour);

-- What analytics read: the compacted rollups and the deltas not folded yet, summed by group.
CREATE VIEW call_rollups_all AS
    SELECT * FROM call_rollups UNION ALL SELECT * FROM call_rollup_deltas;

-- What rows contribute to the rollups, per group: `added` counted in, `removed` counted out
-- (an UPDATE removes the old rows and adds the new ones). Groups whose net change is nothing
-- (a status moving from ringing to in-progress) are left out.
CREATE FUNCTION call_rollup_changes(added calls[], removed calls[])
RETURNS SETOF call_rollup_deltas LANGUAGE sql STABLE AS $$
    SELECT d.* FROM (
        SELECT c.agent_id, c.version, c.draft_revision, c.channel, c.variant,
               date_trunc('hour', c.started_at, 'UTC') AS hour,
               sum(c.sign) AS calls,
               sum(CASE WHEN c.status = 'completed' THEN c.sign ELSE 0 END) AS completed,
               sum(CASE WHEN c.duration_s IS NOT NULL THEN c.sign ELSE 0 END) AS durations,
               coalesce(sum(c.sign * c.duration_s::numeric), 0) AS duration_sum,
               coalesce(sum(c.sign * c.duration_s::numeric * c.duration_s::numeric), 0)
                   AS duration_sumsq,
               sum(CASE WHEN c.sentiment = 'positive' THEN c.sign ELSE 0 END) AS positive,
               sum(CASE WHEN c.sentiment = 'neutral' THEN c.sign ELSE 0 END) AS neutral,
               sum(CASE WHEN c.sentiment = 'negative' THEN c.sign ELSE 0 END) AS negative,
               sum(CASE WHEN c.automated IS NOT NULL THEN c.sign ELSE 0 END) AS analysed,
               sum(CASE WHEN c.automated THEN c.sign ELSE 0 END) AS automated,
               sum(c.sign * rollup_duration_weight(c.duration_s)) AS duration_histogram
        FROM (SELECT 1 AS sign, a.* FROM unnest(added) a
              UNION ALL
              SELECT -1 AS sign, r.* FROM unnest(removed) r) c
        GROUP BY 1, 2, 3, 4, 5, 6
    ) d
    WHERE (d.calls, d.completed, d.durations, d.duration_sum, d.duration_sumsq, d.positive,
           d.neutral, d.negative, d.analysed, d.automated, d.duration_histogram)
          <> (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
$$;

CREATE FUNCTION call_rollups_on_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO call_rollup_deltas
    SELECT * FROM call_rollup_changes(ARRAY(SELECT n::calls FROM new_calls n), '{}');
    RETURN NULL;
END;
$$;

CREATE FUNCTION call_rollups_on_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO call_rollup_deltas
    SELECT * FROM call_rollup_changes(ARRAY(SELECT n::calls FROM new_calls n),
                                      ARRAY(SELECT o::calls FROM old_calls o));
    RETURN NULL;
END;
$$;

-- Statement-level with transition tables: allowed on a partitioned root, where they see the
-- rows of every partition the statement touched.
CREATE TRIGGER calls_rollups_insert AFTER INSERT ON calls
    REFERENCING NEW TABLE AS new_calls
    FOR EACH STATEMENT EXECUTE FUNCTION call_rollups_on_insert();
-- Postgres allows no column list with transition tables: an update that changes nothing the
-- rollups count (a status moving to in-progress) leaves no delta (call_rollup_changes).
CREATE TRIGGER calls_rollups_update AFTER UPDATE ON calls
    REFERENCING OLD TABLE AS old_calls NEW TABLE AS new_calls
    FOR EACH STATEMENT EXECUTE FUNCTION call_rollups_on_update();

-- Folds every committed delta into call_rollups in one statement (the deltas it deletes are the
-- ones it adds). One compaction at a time: a caller that finds the lock taken returns 0 and
-- leaves the deltas for the next run. The rows are upserted in key order, so that a backfill
-- and a compaction never wait on each other crosswise. Returns the number of deltas folded.
CREATE FUNCTION compact_call_rollups() RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    folded bigint;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('agentver:call_rollups')) THEN
        RETURN 0;
    END IF;
    WITH taken AS (DELETE FROM call_rollup_deltas RETURNING *),
    counted AS (SELECT count(*) AS n FROM taken),
    merged AS (
        INSERT INTO call_rollups
        SELECT agent_id, version, draft_revision, channel, variant, hour,
               sum(calls), sum(completed), sum(durations), sum(duration_sum),
               sum(duration_sumsq), sum(positive), sum(neutral), sum(negative), sum(analysed),
               sum(automated), sum(duration_histogram)
        FROM taken
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
    RETURN folded;
END;
$$;

-- The rollup triggers without a planning per statement. call_rollup_changes is a SQL function
-- that Postgres inlines into the calling query, and the plan of the trigger's INSERT is then
-- cached for the session, but only when no argument is a sub-select: with the transition table
-- read by ARRAY(SELECT …) in the call, the function was planned again at every statement that
-- wrote calls, once for each record batch (docs/design.md section 12; loadtests/README.md has
-- what it cost). The same rows, read into variables first.

CREATE OR REPLACE FUNCTION call_rollups_on_insert() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    added calls[];
BEGIN
    added := ARRAY(SELECT n::calls FROM new_calls n);
    INSERT INTO call_rollup_deltas SELECT * FROM call_rollup_changes(added, '{}');
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION call_rollups_on_update() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    added calls[];
    removed calls[];
BEGIN
    added := ARRAY(SELECT n::calls FROM new_calls n);
    removed := ARRAY(SELECT o::calls FROM old_calls o);
    INSERT INTO call_rollup_deltas SELECT * FROM call_rollup_changes(added, removed);
    RETURN NULL;
END;
$$;

-- The foreign keys from calls to agents and config_blobs, checked by the record statement
-- instead (store/calls.py RECORD_CALLS): one index probe a call into each table, where each key
-- ran a query of its own per row and locked the row it found (FOR KEY SHARE: a WAL record and a
-- dirtied page per batch and agent, a multixact when two writers or a publish share the agent).
-- The lock kept the row from going away before commit; neither can: config blobs refuse UPDATE
-- and DELETE (0001), and agents are archived, never deleted (0009), which the database now
-- enforces too (loadtests/README.md has what the keys and the probes cost).
ALTER TABLE calls DROP CONSTRAINT calls_agent_id_fkey1,
    DROP CONSTRAINT calls_config_hash_fkey1;

-- What the record statement raises for a call naming an agent or config blob that does not
-- exist: the foreign key's error, so callers tell it apart as they did.
CREATE FUNCTION call_names_nothing(kind text, key text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    RAISE foreign_key_violation
        USING MESSAGE = format('a call names %s %s, which does not exist', kind, key);
END;
$$;

CREATE FUNCTION agents_are_never_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'agents are archived, never deleted: their calls name them (% refused)', TG_OP
        USING ERRCODE = 'restrict_violation';
END;
$$;

CREATE TRIGGER agents_no_delete
    BEFORE DELETE ON agents
    FOR EACH ROW EXECUTE FUNCTION agents_are_never_deleted();

-- Served A/B analytics from calls (0001) before the rollups (0007) did; no query leads with
-- (channel, variant) now: the calls of a channel are found by calls_channel_started.
DROP INDEX calls_channel_variant_outcomes;

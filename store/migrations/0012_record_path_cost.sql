-- The rollup triggers without a planning per statement. call_rollup_changes is a SQL function
-- that Postgres inlines into the calling query, and the plan of the trigger's INSERT is then
-- cached for the session, but only when no argument is a sub-select: with the transition table
-- read by ARRAY(SELECT …) in the call, the function was planned again at every statement that
-- wrote calls, about 1 ms for each record batch (half the Postgres CPU of a batch of 15 calls,
-- docs/design.md section 12). The same rows, read into variables first.

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

-- The caller assignments' foreign key to channels, replaced by triggers on channels. Every call
-- to a channel sticky by caller (the default) writes its caller's assignment in the record
-- statement (store/calls.py RECORD_CALLS), and for each such row the key ran a query of its
-- own and locked the channel's row until commit (FOR KEY SHARE: a WAL record a call). With it
-- the record statement cost Postgres 5-9% more CPU a call, at 5 and at 15 calls a batch, every
-- call sticky as in the bench (loadtests/README.md, "The caller assignments' key").
--
-- What the key did over a channel's life, the triggers do:
-- - a channel deleted takes its callers' assignments with it (the key's ON DELETE CASCADE);
-- - a channel created starts with none. The key also refused an assignment for a channel that
--   no longer existed: a call recorded while its channel was being deleted, or replayed from
--   the spool after it was, failed to record. Now such a call is recorded, and its caller's
--   assignment, left without a channel, is read by nothing (routing reads assignments only for
--   a channel it found) until a channel is created on the number, which clears it.
ALTER TABLE caller_assignments DROP CONSTRAINT caller_assignments_number_fkey;

CREATE FUNCTION forget_channel_callers() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        DELETE FROM caller_assignments WHERE number = OLD.number;
    ELSE
        DELETE FROM caller_assignments WHERE number = NEW.number;
    END IF;
    RETURN NULL;
END;
$$;

-- AFTER INSERT fires only for rows inserted: a channel upsert that updates fires neither.
CREATE TRIGGER channels_forget_callers
    AFTER INSERT OR DELETE ON channels
    FOR EACH ROW EXECUTE FUNCTION forget_channel_callers();

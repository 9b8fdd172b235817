-- Archived agents: hidden from the agent list by default and refused as a channel's target;
-- their versions and calls stay. NULL while the agent is live.
ALTER TABLE agents
    ADD COLUMN archived_at timestamptz,
    ADD COLUMN archived_by text,
    ADD CONSTRAINT agents_archived_by_with_archived_at
        CHECK ((archived_at IS NULL) = (archived_by IS NULL));

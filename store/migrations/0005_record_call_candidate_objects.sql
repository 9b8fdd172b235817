-- record_call() (migration 0004) with each candidate a JSON object
-- {"label", "agent_id", "version", "draft_revision", "config_hash"} instead of a positional
-- array: the shape the router's spool writes too. Same signature, same rules.
--
-- A router started before this migration still sends arrays until a rolling restart replaces
-- it, so a candidate is read in either shape (->> with a key is null on an array, and ->> with
-- an index null on an object); without that, its calls would fail to record mid-deployment.
CREATE OR REPLACE FUNCTION record_call(
    p_call_id text,
    p_provider text,
    p_provider_call_id text,
    p_channel text,
    p_from_number text,
    p_routing_revision integer,
    p_started_at timestamptz,
    p_drawn text,
    p_remember boolean,
    p_candidates jsonb
) RETURNS calls LANGUAGE plpgsql AS $$
DECLARE
    chosen text := p_drawn;
    recorded calls;
BEGIN
    -- With p_remember, the caller's remembered variant is kept while it is still among the
    -- candidates (the live variants), else the fresh draw becomes the remembered one.
    -- store/draw.py keep_or_redraw states the same rule for the dry run; tests/sticky_cases.py
    -- runs one table of cases through both.
    IF p_remember THEN
        INSERT INTO caller_assignments AS a (number, caller, label)
        VALUES (p_channel, p_from_number, p_drawn)
        ON CONFLICT (number, caller) DO UPDATE
        SET label = CASE
                WHEN a.label IN (SELECT coalesce(c ->> 'label', c ->> 0)
                                 FROM jsonb_array_elements(p_candidates) c)
                THEN a.label ELSE EXCLUDED.label END,
            updated_at = now()
        RETURNING label INTO chosen;
    END IF;

    -- An ending that arrived before the call is applied on the way in; a provider retry (same
    -- provider call id) inserts nothing and gets the existing row.
    INSERT INTO calls AS k (call_id, provider, provider_call_id, channel, from_number, agent_id,
                            version, draft_revision, config_hash, variant, routing_revision,
                            started_at, status, ended_at, duration_s)
    SELECT p_call_id, p_provider, p_provider_call_id, p_channel, p_from_number,
           coalesce(c ->> 'agent_id', c ->> 1),
           coalesce(c ->> 'version', c ->> 2)::integer,
           coalesce(c ->> 'draft_revision', c ->> 3)::integer,
           coalesce(c ->> 'config_hash', c ->> 4),
           chosen, p_routing_revision,
           p_started_at, coalesce(e.status, 'initiated'), e.ended_at,
           coalesce(e.duration_s,
                    CASE WHEN e.ended_at IS NOT NULL
                         THEN greatest(0, extract(epoch FROM e.ended_at - p_started_at)) END)
    FROM jsonb_array_elements(p_candidates) c
    LEFT JOIN call_endings e ON e.provider = p_provider AND e.provider_call_id = p_provider_call_id
    WHERE coalesce(c ->> 'label', c ->> 0) = chosen
    ON CONFLICT (provider, provider_call_id) DO NOTHING
    RETURNING k.* INTO recorded;
    IF FOUND THEN
        RETURN recorded;
    END IF;

    SELECT * INTO recorded FROM calls
    WHERE provider = p_provider AND provider_call_id = p_provider_call_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'call % matched no candidate variant', p_provider_call_id
            USING ERRCODE = 'no_data_found';
    END IF;
    RETURN recorded;
END;
$$;
